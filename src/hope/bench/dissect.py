"""``hope bench-suite dissect``: the "Dissecting HOPE" study (reference 003) at its own scale, one command.

The study (Kim, 2025) trains full HOPE, three ablations, Titans and a Transformer at two sizes and
measures what each mechanism does. Its setup (§3), which is this driver's default:

* sizes ``small`` (d 256, 6 layers, ~19M parameters) and ``scaled`` (d 512, 8 layers, ~73M; HOPE
  73.1M); 4 and 8 heads (head width 64: the study does not say);
* context 512 tokens, 2,000 AdamW steps at lr 3e-4, batch 8; CMS update periods p_fast = 8 and
  p_slow = 32 (``cms.chunk_sizes = (8, 32)`` for every preset with a learning CMS);
* checkpoints every 200 steps, on which it measures CMS level parameter norms and inter-level
  similarity (§4.2), self-modification drift from initialisation and meta vs fast-state divergence
  (§4.3), and the per-token surprise distribution with the gate's pass rate versus threshold (§4.4).

Where it differs, and why: the study trains on OpenWebText with GPT-2's BPE (50,257 ids); this driver
trains on the built-in corpus (``hope.data.corpus``, Shakespeare, ~1.3M tokens) with a byte-level BPE
learned on its training split (``hope.data.tokens.prepare_tokens``, as ``hope train --tokenizer``). At
these widths the tied embedding is most of a model, so the vocabulary sets the parameter count: with
32,768 ids HOPE is 19.0M (small) and 68.2M (scaled), within 10% of the study's; with 50,257 the small
HOPE would be 23.5M. 2,000 steps of 8 x 512 tokens are ~6 passes over the corpus (OpenWebText is never
repeated), so validation loss can turn up late. The presets are ours (``hope.config.PRESETS``): full
HOPE gates with a relative surprise z-score > -1 (the study's gate is absolute; its §4.4 suggests the
relative one), ``hope-no-surprise`` has no gate (the study's "threshold = 0"), ``hope-no-cms`` keeps one
frozen MLP in the CMS's place. Warm-up (5%) and cosine decay to 10%, weight decay 0.1 and clipping at
1.0 are ``hope bench-suite``'s (the study names none).

Measurements run on a copy of the model (``build_probe``: on CUDA the Titans kernels, which record
the per-token surprise too; else the ``chunked`` path) and a fixed batch of ``measure_batch``
validation windows:

* ``val``: validation loss and bits per byte over the validation split (``val_batches`` batches, all
  by default) — at every checkpoint, so the validation curve comes with the measurements;
* ``token_loss``: the per-token cross-entropy distribution and the share of tokens above each of
  ``loss_thresholds`` (the study's Fig. 3 gates on the per-token loss: thresholds 5 to 50);
* ``cms``: per layer, the cosine similarity of consecutive levels' contributions
  (:func:`hope.analysis.cms_level_similarity`), each level's parameter norm, its drift from
  initialisation and from the previous checkpoint (Fig. 1a-d);
* ``selfmod``: per Titans layer and memory (``mem``, ``k``, ``v``, ``eta``, ``alpha``; ``mem`` only
  without self-modification), ‖M_0 − M_0(init)‖ of the meta-learned initial memory and the same
  relative to its initial norm (Fig. 2a);
* ``fast_divergence``: ‖θ_fast − θ_meta‖ / ‖θ_meta‖ after the batch (:func:`hope.analysis.selfmod_drift`,
  Fig. 2b);
* ``surprise``: the per-token surprise ‖∇ℓ‖ of each Titans layer and its own gate's pass rate
  (:func:`hope.analysis.surprise_profile`), and ``gate_sweep``: the pass rate each layer's gate has with
  ``absolute`` thresholds ``abs_thresholds`` and ``relative`` z-score thresholds ``rel_thresholds``
  (one forward of the batch per threshold, the layer's own gate set to it).

Written to ``out``: ``config.json`` first; after every finished model ``results.json``
(``"complete": false`` until the end), ``results.md`` (Table 1 side by side with the study's, the final
measurements, the gate sweep) and ``curves.png`` / ``measurements.png`` (``dissect_report``); so a run
cut off keeps every model it finished. A model in training keeps a checkpoint at its last measurement
in ``partial_dir`` (``out/partial`` by default), so ``--resume`` continues it from there, also after
``max_minutes`` paused it; it is removed once the model's result is written. ``max_minutes`` also
starts no model whose preset's finished runs (median wall time) say it would not end in the time left.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

import hope
from hope.analysis import cms_level_similarity, selfmod_drift, surprise_profile
from hope.atomic import write_text_atomic
from hope.bench.dissect_report import (
    STUDY_LOSS,
    STUDY_PARAMS,
    plot_curves,
    plot_measurements,
    results_markdown,
    summarise,
)
from hope.bench.report import to_json
from hope.bench.resume import (
    Partial,
    check_partial,
    fits,
    may_start,
    refuse_unresumed,
    resumable_runs,
    unplanned_runs,
)
from hope.bench.run import RunOptions, run_parallel, start_results
from hope.checks import check_choice, check_int, check_number
from hope.config import PRESETS as MODEL_PRESETS
from hope.config import ModelConfig
from hope.data.loader import TokenLoader, check_long_enough
from hope.data.tokenizer import token_byte_lengths
from hope.data.tokens import check_sources, prepare_tokens
from hope.distributed import pick_device
from hope.eval.lm import evaluate_lm
from hope.layers.cms import ContinuumMemory
from hope.layers.self_ref_titans import SelfReferentialTitans
from hope.ops.titans.fused import unsupported_reason
from hope.optim import build_optimizer
from hope.train.graphs import GraphedLoss
from hope.train.step import lr_factor, train_step

SUITE = "dissect"
PRESETS = ("hope", "hope-no-cms", "hope-no-selfmod", "hope-no-surprise", "titans", "transformer")
"""The study's six configurations: Full HOPE, No CMS, No Self-Mod, No Surprise, Titans, Transformer."""
SIZES = {
    "small": {"d_model": 256, "n_layers": 6, "n_heads": 4},
    "scaled": {"d_model": 512, "n_layers": 8, "n_heads": 8},
}
"""The study's two sizes, on top of our ``small`` size preset (Titans chunks of 16 tokens)."""
BASE_SIZE = "small"
CMS_PERIODS = (8, 32)


@dataclass
class DissectConfig(RunOptions):
    """One dissection run; validated on creation (ValueError naming the field). The defaults are the
    study's setup (module docstring); ``size`` is ``small`` or ``scaled``."""

    OWNER: ClassVar[str] = "dissect"
    presets: tuple[str, ...] = PRESETS
    size: str = "small"
    batch_size: int = 8
    lr: float = 3e-4
    match: str = "none"  # the study compares the presets at their own sizes
    steps: int = 2000
    context: int = 512  # tokens per training sequence (and per validation window)
    measure_every: int = 200
    measure_batch: int = 4  # validation windows the measurements read
    val_batches: int | None = None  # None: the whole validation split at every checkpoint
    data: tuple[str, ...] = ("builtin",)
    tokenizer: str = "bpe:32768"
    val_fraction: float = 0.05
    jobs: int = 1
    resume: bool = False  # continue the run in `out`: keep its finished models, train the rest
    # start no model past this wall time, and pause one at a measurement whose next segment would end
    # past it (--resume continues it there); None: run everything
    max_minutes: float | None = None
    partial_dir: str | None = None  # a training model's checkpoint at its last measurement; None: out/partial
    cuda_graphs: bool = False  # training steps replayed from CUDA graphs (hope.train.graphs)
    loss_thresholds: tuple[float, ...] = (5.0, 10.0, 20.0, 50.0)
    abs_thresholds: tuple[float, ...] = (0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1.0)
    rel_thresholds: tuple[float, ...] = (-1.0, 0.0, 1.0)

    def __post_init__(self) -> None:
        for name in ("presets", "data", "loss_thresholds", "abs_thresholds", "rel_thresholds"):
            value = getattr(self, name)
            setattr(self, name, (value,) if isinstance(value, str) else tuple(value))
        self.validate()

    def validate(self) -> None:
        check_choice("dissect.size", self.size, list(SIZES))
        # RunOptions' checks, on the size preset the study's sizes are built on.
        shadow = copy.copy(self)
        shadow.size = BASE_SIZE
        shadow.validate_run(self.presets)
        for name in ("steps", "context", "measure_every", "measure_batch", "jobs"):
            check_int(f"dissect.{name}", getattr(self, name))
        for name in ("resume", "cuda_graphs"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"dissect.{name} must be true or false, got {getattr(self, name)!r}")
        if self.cuda_graphs and self.device == "cpu":
            raise ValueError("dissect.cuda_graphs needs a GPU: it cannot run with dissect.device 'cpu'")
        if self.max_minutes is not None:
            check_number("dissect.max_minutes", self.max_minutes, lo_open=True)
        if self.partial_dir is not None and not (isinstance(self.partial_dir, str) and self.partial_dir):
            raise ValueError(
                f"dissect.partial_dir must be a directory path or None, got {self.partial_dir!r}"
            )
        if self.val_batches is not None:
            check_int("dissect.val_batches", self.val_batches)
        check_sources("dissect", self.data, self.tokenizer)
        check_number("dissect.val_fraction", self.val_fraction, 0.0, 0.5, lo_open=True)
        for name in ("loss_thresholds", "abs_thresholds", "rel_thresholds"):
            values = getattr(self, name)
            if not values:
                raise ValueError(f"dissect.{name} must hold at least one threshold")
            for v in values:
                check_number(f"dissect.{name}", v, -math.inf)
        for preset in self.presets:  # a bad override fails here, named
            cfg = study_config(preset, self.size, 256, self.overrides)
            if cfg.uses_cms and cfg.cms.error != "none" and max(cfg.cms.chunk_sizes) >= self.context:
                raise ValueError(
                    f"dissect.context ({self.context}) must exceed {preset}'s longest CMS period "
                    f"{max(cfg.cms.chunk_sizes)}: a level that never steps inside a sequence is not measured"
                )


def study_config(preset: str, size: str, vocab: int, overrides: dict | None = None) -> ModelConfig:
    """``preset`` at the study's ``size``: width, depth and heads, and CMS periods (8, 32) unless the
    preset sets its own CMS (``hope-no-cms``); then ``overrides``."""
    study = {**SIZES[size], "cms.chunk_sizes": CMS_PERIODS}
    own = MODEL_PRESETS[preset]
    keys = {k: v for k, v in study.items() if k not in own}
    return ModelConfig.preset(preset, BASE_SIZE, vocab_size=vocab, **{**keys, **(overrides or {})})


def model_configs(cfg: DissectConfig, vocab: int) -> dict[str, ModelConfig]:
    """Each preset at the study's size; with ``match="hope"`` resized to HOPE's parameter count as
    ``bench-suite`` does (:func:`hope.bench.run.model_configs`): the transformer by
    ``hope.matched_transformer``, the others by width where they are more than 5% off."""
    configs = {p: study_config(p, cfg.size, vocab, cfg.overrides) for p in cfg.presets}
    if cfg.match == "none":
        return configs
    reference = study_config("hope", cfg.size, vocab, cfg.overrides)
    goal = hope.count_parameters(reference)
    for preset, base in configs.items():
        if preset == "transformer":
            configs[preset] = hope.matched_transformer(reference, **cfg.overrides)
        elif preset != "hope" and abs(hope.count_parameters(base) - goal) > 0.05 * goal:
            configs[preset] = hope.match_width(base, goal)
    return configs


# ---- measurements ---------------------------------------------------------------------------------


def _norm(tensors: Sequence[torch.Tensor]) -> float:
    return math.sqrt(sum(float(t.detach().double().pow(2).sum()) for t in tensors))


def _stats(values: torch.Tensor) -> dict[str, float]:
    values = values.double().flatten()
    out = {"mean": float(values.mean()), "std": float(values.std()), "min": float(values.min())}
    out.update({f"q{q}": float(values.quantile(q / 100)) for q in (10, 50, 90)})
    return out


@torch.no_grad()
def measure(probe, ids: torch.Tensor, init: dict, previous: dict, cfg: DissectConfig) -> dict:
    """The study's measurements of ``probe`` (a copy of the model's weights, `build_probe`) on ``ids``
    (B, context + 1). ``init`` holds the parameters at initialisation by name; ``previous`` the CMS
    levels at the last checkpoint (updated in place)."""
    probe.eval()
    x, y = ids[:, :-1], ids[:, 1:]
    logits, _ = probe(x)
    ce = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="none")
    out: dict = {
        "token_loss": {
            **_stats(ce),
            "above": {str(t): float((ce > t).double().mean()) for t in cfg.loss_thresholds},
        }
    }
    names = {id(p): n for n, p in probe.named_parameters()}
    cms = _cms_levels(probe)
    if cms:
        norms, from_init, from_prev = [], [], []
        for levels in cms:
            norms.append([_norm(ws) for ws in levels])
            from_init.append([_norm([w - init[names[id(w)]] for w in ws]) for ws in levels])
            row = []
            for ws in levels:
                keys = [names[id(w)] for w in ws]
                row.append(
                    _norm([w - previous[k] for w, k in zip(ws, keys)]) if keys[0] in previous else None
                )
            from_prev.append(row)
        previous.update(_level_weights(probe))
        out["cms"] = {
            "periods": list(_cms_memories(probe)[0].chunk_sizes),
            "similarity": cms_level_similarity(probe, x),
            "norm": norms,
            "drift_init": from_init,
            "drift_prev": from_prev,
        }
    layers = [b.mixer for b in probe.blocks if isinstance(b.mixer, SelfReferentialTitans)]
    if layers:
        selfmod = []
        for layer in layers:
            row = {}
            for i, comp in enumerate(layer.components):
                now = [w[i] for w in layer.init_weights]
                start = [init[names[id(w)]][i] for w in layer.init_weights]
                drift = _norm([a - b for a, b in zip(now, start)])
                row[comp] = {"abs": drift, "rel": drift / max(_norm(start), 1e-12)}
            selfmod.append(row)
        out["selfmod"] = selfmod
        out["fast_divergence"] = selfmod_drift(probe, x)
        out["surprise"] = surprise_profile(probe, x)
        out["gate_sweep"] = _gate_sweep(probe, layers, x, cfg)
    return out


def _cms_memories(model) -> list[ContinuumMemory]:
    return [b.ffn for b in model.blocks if isinstance(b.ffn, ContinuumMemory)]


def _cms_levels(model) -> list[list[list[torch.Tensor]]]:
    """Each CMS layer's levels, each level's slow weights (parameters of `model`)."""
    return [[m.slow_weights(i) for i in range(len(m.chunk_sizes))] for m in _cms_memories(model)]


def _level_weights(model) -> dict[str, torch.Tensor]:
    """Copies of every CMS level weight by parameter name: what the next measurement's drift is from."""
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(w)]: w.detach().clone() for levels in _cms_levels(model) for ws in levels for w in ws}


def _gate_sweep(probe, layers, x, cfg: DissectConfig) -> dict:
    """Each layer's gate pass rate with its gate set to each threshold (absolute ‖∇ℓ‖ > t, relative
    z-score > t), one forward per threshold; the probe's gate settings are restored afterwards."""
    saved = [(layer.titans.surprise.mode, layer.titans.surprise.threshold) for layer in layers]
    out = {}
    try:
        for mode, thresholds in (("absolute", cfg.abs_thresholds), ("relative", cfg.rel_thresholds)):
            rows = {}
            for t in thresholds:
                for layer in layers:
                    layer.titans.surprise.mode, layer.titans.surprise.threshold = mode, float(t)
                probe(x)
                rows[str(t)] = [float(layer.gate_pass_rate) for layer in layers]
            out[mode] = rows
    finally:
        for layer, (mode, t) in zip(layers, saved):
            layer.titans.surprise.mode, layer.titans.surprise.threshold = mode, t
    return out


# ---- one model ------------------------------------------------------------------------------------


def build_probe(model_cfg: ModelConfig, device: torch.device):
    """The measurement copy of a model: its own config (the gate sweep changes its gates); on CUDA the
    Titans kernels where they run every layer (eleven checkpoints × about 14 forwards: the chunked
    path's eager forwards were a quarter of a hope run) with the CMS uncompiled (no compile per batch
    shape), else the chunked path."""
    if device.type == "cuda":
        probe = hope.build_model(ModelConfig.from_dict({**model_cfg.to_dict(), "impl": "triton"})).to(device)
        like = torch.empty(0, device=device)
        titans = [b.mixer for b in probe.blocks if isinstance(b.mixer, SelfReferentialTitans)]
        if all(unsupported_reason(layer, like) is None for layer in titans):
            return probe
    return hope.build_model(ModelConfig.from_dict({**model_cfg.to_dict(), "impl": "chunked"})).to(device)


def run_one(
    cfg: DissectConfig,
    preset: str,
    model_cfg: ModelConfig,
    seed: int,
    device: torch.device,
    train_ids: np.ndarray,
    val_ids: np.ndarray,
    byte_lengths: np.ndarray,
    partial: Partial | None = None,
) -> dict:
    """Trains one model ``cfg.steps`` AdamW steps (warm-up 5%, cosine to 10%, as ``bench-suite``) on
    seeded windows of ``train_ids``, measuring it at step 0, every ``measure_every`` steps and at the end.

    With a ``partial`` the model is saved at every measurement (weights, optimizer, data position,
    what it measured) and starts from a save it finds, so a run cut off continues where it was. Past
    a save whose next segment would end after the partial's deadline it stops and returns
    ``{"preset", "seed", "paused_at"}`` instead of a result."""
    torch.manual_seed(seed)
    model = hope.build_model(model_cfg).to(device)
    probe = build_probe(model_cfg, device)
    init = {n: p.detach().clone() for n, p in model.named_parameters()}
    previous: dict = {}
    measure_ids = torch.from_numpy(
        np.stack(
            [
                np.asarray(val_ids[w * cfg.context : (w + 1) * cfg.context + 1], dtype=np.int64)
                for w in range(cfg.measure_batch)
            ]
        )
    ).to(device)
    optimizer = build_optimizer("adamw", model, cfg.lr, cfg.weight_decay)
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    loader = TokenLoader(train_ids, cfg.context, cfg.batch_size, seed)
    warmup = max(1, cfg.steps // 20)
    losses: list[float] = []
    checkpoints: list[dict] = []
    skipped, train_seconds, measure_seconds, spent, first = 0, 0.0, 0.0, 0.0, 0
    record = partial.resume(model, optimizer) if partial is not None else None
    if record is not None:
        loader.load_state_dict(record["loader"])
        losses, checkpoints, first = record["train_loss"], record["checkpoints"], record["step"]
        skipped, spent = record["skipped_steps"], record["seconds"]
        train_seconds, measure_seconds = record["train_seconds"], record["measure_seconds"]
        probe.load_state_dict(model.state_dict())
        previous = _level_weights(probe)  # the weights the last measurement saw
    loss_fn = GraphedLoss(model, cfg.precision) if cfg.cuda_graphs else None

    def checkpoint(step: int) -> None:
        nonlocal measure_seconds
        t0 = time.perf_counter()
        # a window no longer than a piece streams as one piece: through a Streamer, which on CUDA
        # replays it from a graph (the eager forward of a memory model waits on its launches)
        val = evaluate_lm(
            model,
            val_ids,
            cfg.context,
            cfg.batch_size,
            byte_lengths,
            device,
            cfg.val_batches,
            cfg.precision,
            min(cfg.piece, cfg.context),
        )
        t_val = time.perf_counter()
        probe.load_state_dict(model.state_dict())
        recent = [v for v in losses[-cfg.measure_every :] if math.isfinite(v)]
        measured = measure(probe, measure_ids, init, previous, cfg)
        t_end = time.perf_counter()
        checkpoints.append(
            {
                "step": step,
                "val_loss": val["loss"],
                "val_bpb": val["bpb"],
                "train_loss": statistics.fmean(recent) if recent else None,
                # where a checkpoint's time goes: the validation pass, the probe's measurements
                "seconds": {"val": t_val - t0, "measure": t_end - t_val},
                **measured,
            }
        )
        measure_seconds += t_end - t0
        # a study model trains for minutes: say how far it is (stderr, also from a --jobs process)
        elapsed = spent + time.perf_counter() - began
        print(
            f"{preset} seed {seed}: step {step}, val loss {val['loss']:.3f} ({elapsed:.0f}s)",
            file=sys.stderr,
            flush=True,
        )

    began = time.perf_counter()
    if record is None:
        checkpoint(0)
    model.train()
    for step in range(first, cfg.steps):
        t0 = time.perf_counter()
        loss, norm = train_step(
            model,
            optimizer,
            loader.next_batch,
            base_lrs,
            lr_factor(step, cfg.steps, warmup, 0.1),
            device,
            precision=cfg.precision,
            grad_clip=cfg.grad_clip,
            loss_fn=loss_fn,
        )
        train_seconds += time.perf_counter() - t0
        skipped += not (math.isfinite(loss) and math.isfinite(norm))
        losses.append(loss)
        if (step + 1) % cfg.measure_every == 0 or step + 1 == cfg.steps:
            checkpoint(step + 1)
            model.train()
            if partial is not None and step + 1 < cfg.steps:
                progress = {
                    "preset": preset,
                    "seed": seed,
                    "loader": loader.state_dict(),
                    "train_loss": losses,
                    "checkpoints": checkpoints,
                    "skipped_steps": skipped,
                    "seconds": spent + time.perf_counter() - began,
                    "train_seconds": train_seconds,
                    "measure_seconds": measure_seconds,
                }
                if partial.save(step + 1, model, optimizer, progress):
                    return {"preset": preset, "seed": seed, "paused_at": step + 1}
    final = checkpoints[-1]
    return {
        "preset": preset,
        "seed": seed,
        "params": model.num_parameters(),
        "d_model": model_cfg.d_model,
        "n_layers": model_cfg.n_layers,
        "seconds": spent + time.perf_counter() - began,
        "train_tokens_per_s": cfg.steps * cfg.batch_size * cfg.context / max(train_seconds, 1e-9),
        "measure_seconds": measure_seconds,
        "skipped_steps": skipped,
        "final_val_loss": final["val_loss"],
        "final_val_bpb": final["val_bpb"],
        "train_loss": losses,
        "checkpoints": checkpoints,
    }


def partial_checkpoints(cfg: DissectConfig, out: Path, preset: str, seed: int) -> Path:
    """The directory where `preset` at `seed` keeps its checkpoint while it trains."""
    return (Path(cfg.partial_dir) if cfg.partial_dir else out / "partial") / f"{preset}-seed{seed}"


# ---- the driver -----------------------------------------------------------------------------------


def run_dissect(cfg: DissectConfig, log: Callable[[str], None] = lambda s: print(s, file=sys.stderr)) -> dict:
    """Every preset x seed (seed-major, so a cut-off run holds every preset on the seeds it finished);
    ``results.json``, ``results.md`` and the plots are rewritten after every finished model. A model in
    training keeps a checkpoint at each measurement (``partial_checkpoints``), from which ``resume``
    continues it; ``max_minutes`` pauses it there."""
    device = pick_device(cfg.device)
    if cfg.cuda_graphs and device.type != "cuda":
        raise ValueError(f"dissect.cuda_graphs needs a GPU; the run would be on {device}")
    out = Path(cfg.out or f"bench/dissect-{cfg.size}-{datetime.now():%Y%m%d-%H%M%S}")
    if (out / "results.json").exists() and not cfg.resume:
        raise FileExistsError(f"{out} already holds results; pick another --out, or --resume to continue it")
    plan = [(seed, preset) for seed in range(cfg.seeds) for preset in cfg.presets]
    partials = [partial_checkpoints(cfg, out, preset, seed) for seed, preset in plan]
    if not cfg.resume:
        refuse_unresumed(partials)
    splits, tokenizer = prepare_tokens(list(cfg.data), cfg.tokenizer, cfg.val_fraction)
    check_long_enough(splits.train, cfg.context, "training")
    if len(splits.val) < cfg.measure_batch * cfg.context + 1:
        raise ValueError(
            f"the validation split has {len(splits.val):,} tokens, fewer than dissect.measure_batch "
            f"({cfg.measure_batch}) windows of dissect.context ({cfg.context}) + 1"
        )
    configs = model_configs(cfg, tokenizer.vocab_size)
    out.mkdir(parents=True, exist_ok=True)
    tokens = cfg.steps * cfg.batch_size * cfg.context
    resolved = {
        **dataclasses.asdict(cfg),
        "out": str(out),
        "vocab_size": tokenizer.vocab_size,
        "train_tokens": len(splits.train),
        "val_tokens": len(splits.val),
        "tokens_per_model": tokens,
        "epochs": tokens / len(splits.train),
        "study_params_hope": STUDY_PARAMS[cfg.size],
        "models": {p: c.to_dict() for p, c in configs.items()},
    }
    train_ids, val_ids = np.asarray(splits.train), np.asarray(splits.val)
    byte_lengths = token_byte_lengths(tokenizer)
    settings = json.loads(to_json(resolved))
    deadline = None if cfg.max_minutes is None else time.monotonic() + 60 * cfg.max_minutes
    jobs = [
        (
            i,
            (
                cfg,
                preset,
                configs[preset],
                seed,
                device,
                train_ids,
                val_ids,
                byte_lengths,
                Partial(partials[i], settings, deadline),
            ),
        )
        for i, (seed, preset) in enumerate(plan)
    ]
    finished: dict[int, dict] = {}
    carried: list[dict] = []  # other slices' models: kept in the results, not trained here
    if cfg.resume and (out / "results.json").exists():
        key, model = (lambda r: (r["seed"], r["preset"])), (lambda r: (r["preset"],))
        kept = resumable_runs(out / "results.json", resolved, key=key, model=model)
        finished = {i: kept[k] for i, k in enumerate(plan) if k in kept}
        jobs = [job for job in jobs if job[0] not in finished]
        carried, models = unplanned_runs(out / "results.json", resolved, set(plan), key=key, model=model)
        resolved["models"] = {**models, **resolved["models"]}
        log(
            f"resuming {out}: {len(finished)} of {len(plan)} models already trained there"
            + (f", {len(carried)} more of other presets or seeds kept" if carried else "")
        )
    # after the resume check, so that a refused --resume leaves the directory's config.json as it was
    header = {**start_results(out, SUITE, device, resolved), "study_loss": STUDY_LOSS[cfg.size]}
    for index, args in jobs:
        check_partial(partials[index], settings, (args[1],), log)
    failed: list[dict] = []
    paused: list[dict] = []
    start = time.perf_counter()

    order = {p: i for i, p in enumerate([*cfg.presets, *(p for p in PRESETS if p not in cfg.presets)])}

    def write(complete: bool) -> dict:
        runs = sorted(
            carried + [finished[i] for i in sorted(finished)],
            key=lambda r: (r["seed"], order.get(r["preset"], len(order))),
        )
        results = {
            **header,
            "complete": complete,
            "runs": runs,
            "failed": failed,
            "summary": summarise(runs, cfg.size) if runs else [],
        }
        write_text_atomic(out / "results.json", to_json(results))
        if runs:
            write_text_atomic(out / "results.md", results_markdown(results))
            plot_curves(results, out)
            plot_measurements(results, out)
        return results

    def record(index: int, run: dict) -> None:
        if "paused_at" in run:
            paused.append(run)
            log(
                f"paused {run['preset']} seed {run['seed']} at step {run['paused_at']} of {cfg.steps} "
                f"(--max-minutes); --resume continues it from {partials[index]}"
            )
            return
        finished[index] = run
        write(False)
        shutil.rmtree(partials[index], ignore_errors=True)  # its result is on disk now
        done, elapsed = len(finished) + len(failed), time.perf_counter() - start
        fresh = done - (len(plan) - len(jobs))  # this process's models, which time the rest
        log(
            f"[{done}/{len(plan)}] {run['preset']} seed {run['seed']}: val loss {run['final_val_loss']:.3f} "
            f"({run['params'] / 1e6:.1f}M params, {run['train_tokens_per_s']:,.0f} tokens/s, "
            f"{run['seconds']:.0f}s; ~{elapsed / max(fresh, 1) * (len(plan) - done) / 60:.1f} min left)"
        )

    def fail(index: int, error: BaseException) -> None:
        seed, preset = plan[index]
        failed.append({"preset": preset, "seed": seed, "error": repr(error)[:500]})
        log(f"FAILED {preset} seed {seed}: {error!r}"[:500])

    def may_start_model(args: tuple) -> bool:
        if not may_start(deadline, paused):
            return False
        preset, seed, partial = args[1], args[3], args[-1]
        took = [r["seconds"] for r in [*carried, *finished.values()] if r["preset"] == preset]
        if not fits(deadline, partial, took):
            log(
                f"not starting {preset} seed {seed}: its earlier runs took {statistics.median(took):.0f}s, "
                f"{deadline - time.monotonic():.0f}s of --max-minutes are left; the next call starts it"
            )
            return False
        return True

    if cfg.jobs == 1:
        for index, args in jobs:
            if not may_start_model(args):
                break
            try:
                run = run_one(*args)
            except RuntimeError as error:  # e.g. CUDA out of memory: the other models still run
                fail(index, error)
            else:
                record(index, run)
    else:
        run_parallel(jobs, cfg.jobs, record, fail, runner=run_one, may_start=may_start_model)
    results = write(len(finished) == len(plan))  # complete: this call's plan
    log(
        f"wrote {out / 'results.json'}, {out / 'results.md'}, {out / 'curves.png'}, {out / 'measurements.png'}"
    )
    return results
