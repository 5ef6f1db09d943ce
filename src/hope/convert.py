"""`hope convert` (§7.3, ad-hoc level stacking): a trained Transformer++ run becomes a HOPE-Attention run.

Each block keeps its norms and attention; its SwiGLU MLP becomes the *slowest* CMS level, a `swiglu`
level (`cms.level`) initialised from the trained W_g, W_u, W_d, and the faster levels are stacked in
front of it (`sequential`, Eq. 70: y = M_K(… M_1(x))). The paper's notes say only "warm start: copy
pre-trained MLP weights"; where they are silent we chose:

- a faster level starts as the identity, W_d = 0, with W_g and W_u copied from the trained MLP (its
  hidden features are the trained ones; the in-context steps first write its read-out W_d), so the
  converted model computes exactly the Transformer's function until a level takes its first step —
  always, with `cms.error none` or `cms.lr 0`;
- the `local` error's key/value read-outs, which the Transformer has no counterpart for, start at the
  usual random fan-in scale (seeded by the run's seed);
- the run keeps the Transformer's training step and data position, so `hope train --resume OUT --steps N`
  continues on the same tokens and learning-rate schedule as `hope train --resume RUN --steps N`; every
  parameter that *is* a trained one (embedding, norms, attention, the slowest level) keeps its optimizer
  state (moments, step count), the new ones (faster levels, read-outs) start fresh — copies of W_g, W_u
  too, which inheriting the MLP's momentum would push without a gradient of their own;
- `cms.variant nested` is allowed but not function-preserving past the slowest level's first boundary:
  there it restarts from the faster level's weights (Eq. 72–73) and gives the trained MLP up.

The output is an ordinary `hope train` run directory (config.json, tokenizer, one checkpoint) that
`hope train --resume`, `hope generate`, `hope eval` and `hope export` accept. It is written under a
hidden temporary name beside `--out` and renamed into place when complete.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import torch
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)

import hope
from hope.atomic import write_text_atomic
from hope.config import ModelConfig
from hope.data.tokenizer import TOKENIZER_FILE
from hope.layers.mlp import swiglu_hidden
from hope.models.lm import LanguageModel
from hope.optim import build_optimizer
from hope.train.checkpoint import (
    OPTIMIZER,
    latest_checkpoint,
    load_weights,
    read_record,
    save_checkpoint,
)
from hope.train.loop import CONFIG, load_train_config, resolve_run_dir

PRESET = "hope-attention"
# Fixed by the conversion (the slowest level must be the trained MLP); other cms.* fields may be chosen.
FIXED_CMS = ("cms.level", "cms.expansion")
# Model fields the conversion sets (titans: used by neither model); every other one must be the Transformer's.
CHANGED = ("name", "block", "cms", "titans")


def convert_model(transformer: LanguageModel, target: ModelConfig, seed: int = 0) -> LanguageModel:
    """A HOPE-Attention `LanguageModel` of config `target` holding `transformer`'s weights (module doc)."""
    source = transformer.config
    if source.block != "transformer":
        raise ValueError(
            f"convert needs a transformer model (block 'transformer'), got block {source.block!r}"
        )
    if target.block != "hope_attention" or target.cms.level != "swiglu":
        raise ValueError(
            f"the converted model must have block 'hope_attention' and cms.level 'swiglu', got block "
            f"{target.block!r} and cms.level {target.cms.level!r}"
        )
    same = {k: v for k, v in source.to_dict().items() if k not in CHANGED}
    differs = sorted(k for k, v in same.items() if target.to_dict()[k] != v)
    if differs:
        raise ValueError(f"the converted model must keep the transformer's {', '.join(differs)}")
    with torch.random.fork_rng(devices=[]):  # the new read-outs' initialisation, leaving the caller's RNG be
        torch.manual_seed(seed)
        model = hope.build_model(target)
    state = model.state_dict()
    levels = len(target.cms.chunk_sizes)
    for name, tensor in transformer.state_dict().items():
        prefix, _, rest = name.partition(".ffn.")
        if not rest:
            state[name] = tensor  # embedding, norms, attention, LM head: the same names
            continue
        if rest == "down.weight":
            for i in range(levels):
                state[f"{prefix}.ffn.w_down.{i}"] = tensor if i == levels - 1 else torch.zeros_like(tensor)
            continue
        gate, up = tensor.chunk(2, dim=0)  # SwiGLU.gate_up: [W_g; W_u]
        for i in range(levels):
            if state[f"{prefix}.ffn.w_gate.{i}"].shape != gate.shape:
                raise ValueError(
                    f"CMS hidden width {state[f'{prefix}.ffn.w_gate.{i}'].shape[0]} differs from the "
                    f"transformer MLP's {gate.shape[0]}"
                )
            state[f"{prefix}.ffn.w_gate.{i}"], state[f"{prefix}.ffn.w_up.{i}"] = gate, up
    model.load_state_dict(state, strict=True)
    return model


def _optimizer_source(name: str, levels: int) -> tuple[str, int | None] | None:
    """The transformer parameter whose optimizer state converted parameter `name` continues (and which
    half of `gate_up`, 0: W_g, 1: W_u), or None for a new parameter (module doc)."""
    prefix, _, rest = name.partition(".ffn.")
    if not rest:
        return name, None
    kind, _, level = rest.rpartition(".")
    if level != str(levels - 1):
        return None
    sources = {
        "w_gate": (f"{prefix}.ffn.gate_up.weight", 0),
        "w_up": (f"{prefix}.ffn.gate_up.weight", 1),
        "w_down": (f"{prefix}.ffn.down.weight", None),
    }
    return sources.get(kind)


def carry_optimizer_state(source_state: dict, model: LanguageModel, optimizer) -> None:
    """Loads into `optimizer` the transformer's per-parameter state (`source_state`, as a checkpoint's
    optimizer.pt holds it) for every converted parameter that is a trained one; the rest stay fresh."""
    options = StateDictOptions(full_state_dict=True)
    state = get_optimizer_state_dict(model, optimizer, options=options)
    levels = len(model.config.cms.chunk_sizes)
    for name in state["state"]:
        found = _optimizer_source(name, levels)
        if found is None or found[0] not in source_state["state"]:
            continue
        source, half = found
        state["state"][name] = {
            key: value.chunk(2, dim=0)[half] if half is not None and value.dim() == 2 else value.clone()
            for key, value in source_state["state"][source].items()
        }
    set_optimizer_state_dict(model, optimizer, state, options=options)


def _check_out(out: Path) -> None:
    if out.exists() and not (out.is_dir() and not any(out.iterdir())):
        raise FileExistsError(f"{out} already exists and is not an empty directory; choose another --out")


def convert_run(run: str | Path, out: str | Path, cms_overrides: dict | None = None) -> tuple[Path, int]:
    """Writes the HOPE-Attention run converted from `run`'s newest checkpoint to `out`; returns (out, step).

    `cms_overrides`: `cms.*` fields of the converted model (`{"cms.chunk_sizes": (16, 64)}`), on top of
    the `hope-attention` preset at the run's size; `cms.level` and `cms.expansion` are fixed.
    """
    out, cms_overrides = Path(out), dict(cms_overrides or {})
    bad = sorted(k for k in cms_overrides if not k.startswith("cms.") or k in FIXED_CMS)
    if bad:
        raise ValueError(
            f"convert takes cms.* options only, not {', '.join(bad)} ({', '.join(FIXED_CMS)} are fixed)"
        )
    run_dir = resolve_run_dir(run)
    config = json.loads((run_dir / CONFIG).read_text())
    source = ModelConfig.from_dict(config["model"])
    if source.block != "transformer":
        raise ValueError(
            f"{run_dir} is a {source.name!r} run ({source.block} blocks); convert turns a Transformer++ "
            "run (preset 'transformer') into HOPE-Attention"
        )
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        raise FileNotFoundError(f"{run_dir} has no complete checkpoint yet")
    _check_out(out)
    train_cfg = load_train_config(run_dir)
    hidden = swiglu_hidden(source.d_model, source.mlp_mult)
    overrides = {
        **train_cfg.model_overrides,
        "cms.level": "swiglu",
        "cms.expansion": hidden / source.d_model,
        **cms_overrides,
    }
    new_cfg = dataclasses.replace(train_cfg, preset=PRESET, model_overrides=overrides, out=str(out))
    target = new_cfg.model_config(source.vocab_size)
    transformer = hope.build_model(source)
    load_weights(ckpt, transformer)
    model = convert_model(transformer, target, train_cfg.seed)

    hparams = {k: tuple(v) if isinstance(v, list) else v for k, v in new_cfg.optimizer_args.items()}
    optimizer = build_optimizer(new_cfg.optimizer, model, new_cfg.lr, new_cfg.weight_decay, **hparams)
    carry_optimizer_state(
        torch.load(ckpt / OPTIMIZER, map_location="cpu", weights_only=True), model, optimizer
    )
    record = read_record(ckpt)
    step = record["step"]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        shutil.copy(run_dir / TOKENIZER_FILE, tmp / TOKENIZER_FILE)
        meta = {
            "train": new_cfg.to_dict(),
            "model": target.to_dict(),
            "n_params": model.num_parameters(),
            "world_size": config.get("world_size", 1),
            "hope_version": hope.__version__,
            "torch_version": torch.__version__,
            "converted_from": {"run": str(run_dir), "step": step},
        }
        write_text_atomic(tmp / CONFIG, json.dumps(meta, indent=2) + "\n")
        kept = {
            "data": record["data"],
            "tokens_seen": record.get("tokens_seen", 0),
            "train_config": new_cfg.to_dict(),
            "model_config": target.to_dict(),
        }
        save_checkpoint(tmp, step, model, optimizer, kept, new_cfg.keep_checkpoints)
        os.rename(tmp, out)  # replaces an empty directory, refuses anything else
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out, step
