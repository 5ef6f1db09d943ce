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

Measurements run on a copy of the model on the ``chunked`` path (the Triton kernel records no
per-token surprise) and a fixed batch of ``measure_batch`` validation windows:

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
measurements, the gate sweep) and ``curves.png`` / ``measurements.png``; so a run cut off keeps every
model it finished.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import math
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
from hope.atomic import write_bytes_atomic, write_text_atomic
from hope.bench.report import to_json
from hope.bench.run import RunOptions, run_parallel, start_results
from hope.checks import check_choice, check_int, check_number
from hope.config import PRESETS as MODEL_PRESETS
from hope.config import ModelConfig
from hope.data.loader import TokenLoader, check_long_enough
from hope.data.tokenizer import token_byte_lengths, validate_spec
from hope.data.tokens import prepare_tokens
from hope.distributed import pick_device
from hope.eval.lm import evaluate_lm
from hope.layers.cms import ContinuumMemory
from hope.layers.self_ref_titans import SelfReferentialTitans
from hope.optim import build_optimizer
from hope.train.step import lr_factor, train_step

SUITE = "dissect"
PRESETS = ("hope", "hope-no-cms", "hope-no-selfmod", "hope-no-surprise", "titans", "transformer")
"""The study's six configurations: Full HOPE, No CMS, No Self-Mod, No Surprise, Titans, Transformer."""
LABELS = {
    "hope": "Full HOPE",
    "hope-no-cms": "No CMS",
    "hope-no-selfmod": "No Self-Mod",
    "hope-no-surprise": "No Surprise",
    "titans": "Titans",
    "transformer": "Transformer",
}
SIZES = {
    "small": {"d_model": 256, "n_layers": 6, "n_heads": 4},
    "scaled": {"d_model": 512, "n_layers": 8, "n_heads": 8},
}
"""The study's two sizes, on top of our ``small`` size preset (Titans chunks of 16 tokens)."""
BASE_SIZE = "small"
CMS_PERIODS = (8, 32)
STUDY_PARAMS = {"small": 19.0e6, "scaled": 73.1e6}
"""Full HOPE's parameter count in the study (§3: "~19M"; §4.5: 73.1M)."""
STUDY_LOSS = {
    "small": {
        "hope": 7.216,
        "hope-no-cms": 7.201,
        "hope-no-selfmod": 7.532,
        "hope-no-surprise": 7.322,
        "titans": 7.578,
        "transformer": 6.880,
    },
    "scaled": {"hope": 7.237, "hope-no-cms": 7.079, "hope-no-selfmod": 8.649, "transformer": 7.830},
}
"""The study's Table 1 (final loss; OpenWebText, GPT-2 BPE). At ``scaled`` it also reports a
parameter-matched Transformer (d 768, 81.2M): 7.936 (``--match hope`` trains ours)."""
STUDY_MATCHED_TRANSFORMER = {"scaled": 7.936}


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
        if self.val_batches is not None:
            check_int("dissect.val_batches", self.val_batches)
        if not self.data or not all(isinstance(d, str) and d for d in self.data):
            raise ValueError(
                f"dissect.data must name at least one source ('builtin' or files), got {self.data}"
            )
        try:
            validate_spec(self.tokenizer)
        except ValueError as e:
            raise ValueError(f"dissect.{e}") from None
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
    """The study's measurements of ``probe`` (the model's weights on the chunked path) on ``ids``
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
    cms = [b.ffn for b in probe.blocks if isinstance(b.ffn, ContinuumMemory)]
    if cms:
        norms, from_init, from_prev = [], [], []
        for memory in cms:
            levels = [memory.slow_weights(i) for i in range(len(memory.chunk_sizes))]
            norms.append([_norm(ws) for ws in levels])
            from_init.append([_norm([w - init[names[id(w)]] for w in ws]) for ws in levels])
            row = []
            for ws in levels:
                keys = [names[id(w)] for w in ws]
                row.append(
                    _norm([w - previous[k] for w, k in zip(ws, keys)]) if keys[0] in previous else None
                )
                previous.update({k: w.detach().clone() for k, w in zip(keys, ws)})
            from_prev.append(row)
        out["cms"] = {
            "periods": list(cms[0].chunk_sizes),
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


def run_one(
    cfg: DissectConfig,
    preset: str,
    model_cfg: ModelConfig,
    seed: int,
    device: torch.device,
    train_ids: np.ndarray,
    val_ids: np.ndarray,
    byte_lengths: np.ndarray,
) -> dict:
    """Trains one model ``cfg.steps`` AdamW steps (warm-up 5%, cosine to 10%, as ``bench-suite``) on
    seeded windows of ``train_ids``, measuring it at step 0, every ``measure_every`` steps and at the end."""
    torch.manual_seed(seed)
    model = hope.build_model(model_cfg).to(device)
    # The measurement copy: its own config (the gate sweep changes its gates), the chunked path.
    probe = hope.build_model(ModelConfig.from_dict({**model_cfg.to_dict(), "impl": "chunked"})).to(device)
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
    skipped, train_seconds = 0, 0.0

    def checkpoint(step: int) -> None:
        val = evaluate_lm(
            model,
            val_ids,
            cfg.context,
            cfg.batch_size,
            byte_lengths,
            device,
            cfg.val_batches,
            cfg.precision,
            cfg.piece,
        )
        probe.load_state_dict(model.state_dict())
        recent = [v for v in losses[-cfg.measure_every :] if math.isfinite(v)]
        checkpoints.append(
            {
                "step": step,
                "val_loss": val["loss"],
                "val_bpb": val["bpb"],
                "train_loss": statistics.fmean(recent) if recent else None,
                **measure(probe, measure_ids, init, previous, cfg),
            }
        )

    began = time.perf_counter()
    checkpoint(0)
    model.train()
    for step in range(cfg.steps):
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
        )
        train_seconds += time.perf_counter() - t0
        skipped += not (math.isfinite(loss) and math.isfinite(norm))
        losses.append(loss)
        if (step + 1) % cfg.measure_every == 0 or step + 1 == cfg.steps:
            checkpoint(step + 1)
            model.train()
    final = checkpoints[-1]
    return {
        "preset": preset,
        "seed": seed,
        "params": model.num_parameters(),
        "d_model": model_cfg.d_model,
        "n_layers": model_cfg.n_layers,
        "seconds": time.perf_counter() - began,
        "train_tokens_per_s": cfg.steps * cfg.batch_size * cfg.context / max(train_seconds, 1e-9),
        "skipped_steps": skipped,
        "final_val_loss": final["val_loss"],
        "final_val_bpb": final["val_bpb"],
        "train_loss": losses,
        "checkpoints": checkpoints,
    }


# ---- summary, tables, plots -----------------------------------------------------------------------


def _mean_std(values: Sequence[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def _layer_mean(rows) -> float | None:
    flat = [v for row in rows for v in (row if isinstance(row, list) else [row]) if v is not None]
    return statistics.fmean(flat) if flat else None


def checkpoint_summary(point: dict) -> dict:
    """One checkpoint's measurements as scalars (means over layers, and over memories where named)."""
    out = {
        "val_loss": point["val_loss"],
        "token_loss_mean": point["token_loss"]["mean"],
        "token_loss_min": point["token_loss"]["min"],
    }
    if "cms" in point:
        cms = point["cms"]
        out["cms_similarity"] = _layer_mean(cms["similarity"])
        for i in range(len(cms["periods"])):
            out[f"cms_norm_{i}"] = _layer_mean([row[i] for row in cms["norm"]])
            out[f"cms_drift_prev_{i}"] = _layer_mean([row[i] for row in cms["drift_prev"]])
    if "selfmod" in point:
        comps = list(point["selfmod"][0])
        out["selfmod_drift"] = _layer_mean([[row[c]["abs"] for c in comps] for row in point["selfmod"]])
        for c in comps:
            out[f"selfmod_drift_{c}"] = _layer_mean([row[c]["abs"] for row in point["selfmod"]])
        out["fast_divergence"] = _layer_mean([list(row.values()) for row in point["fast_divergence"]])
        out["surprise_mean"] = _layer_mean([row["mean"] for row in point["surprise"]])
        out["surprise_q50"] = _layer_mean([row["q50"] for row in point["surprise"]])
        out["pass_rate"] = _layer_mean([row["pass_rate"] for row in point["surprise"]])
        for mode, rows in point["gate_sweep"].items():
            for t, rates in rows.items():
                out[f"pass_{mode}_{t}"] = _layer_mean(rates)
    return out


def summarise(runs: Sequence[dict], size: str) -> list[dict]:
    """Per preset: final validation loss (mean ± std over seeds), Δ against full HOPE, the study's
    value and Δ, and the final checkpoint's measurements averaged over seeds."""
    groups: dict[str, list[dict]] = {}
    for run in runs:
        groups.setdefault(run["preset"], []).append(run)
    hope_loss = _mean_std([r["final_val_loss"] for r in groups["hope"]])["mean"] if "hope" in groups else None
    study = STUDY_LOSS[size]
    out = []
    for preset, members in groups.items():
        loss = _mean_std([m["final_val_loss"] for m in members])
        delta = None if hope_loss is None or preset == "hope" else loss["mean"] - hope_loss
        theirs = study.get(preset)
        their_delta = None if theirs is None or preset == "hope" else theirs - study["hope"]
        finals = [checkpoint_summary(m["checkpoints"][-1]) for m in members]
        keys = [k for k in finals[0] if all(f.get(k) is not None for f in finals)]
        out.append(
            {
                "preset": preset,
                "label": LABELS.get(preset, preset),
                "n_seeds": len(members),
                "params": members[0]["params"],
                "val_loss": loss,
                "val_bpb": _mean_std([m["final_val_bpb"] for m in members]),
                "delta": delta,
                "study_loss": theirs,
                "study_delta": their_delta,
                "same_sign": None
                if delta is None or their_delta is None
                else (delta > 0) == (their_delta > 0),
                "train_tokens_per_s": statistics.fmean(m["train_tokens_per_s"] for m in members),
                "final": {k: statistics.fmean(f[k] for f in finals) for k in keys},
            }
        )
    return out


def _f(value, digits: int = 3, signed: bool = False) -> str:
    if value is None:
        return "—"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def results_markdown(results: dict) -> str:
    cfg, rows = results["config"], results["summary"]
    size = cfg["size"]
    lines = [
        f"# bench-suite dissect ({size}): final validation loss (mean ± std over seeds) beside the study's",
        "",
        (
            f"{results['date']}, {results['device']}, torch {results['torch']}; {cfg['steps']} steps of "
            f"{cfg['batch_size']} x {cfg['context']} tokens, AdamW lr {cfg['lr']}, data {', '.join(cfg['data'])} "
            f"with {cfg['tokenizer']} (vocab {cfg['vocab_size']:,}; {cfg['train_tokens']:,} training tokens, "
            f"{cfg['epochs']:.2f} passes), measured every {cfg['measure_every']} steps. The study: OpenWebText, "
            "GPT-2 BPE (50,257), so its losses are on another scale; compare the Δ columns."
            + ("" if results["complete"] else " **Partial: the run has not finished.**")
        ),
        "",
        "| variant | preset | params | seeds | val loss | Δ vs HOPE | study loss | study Δ | same sign |",
        "|---|---|---:|---:|---:|---:|---:|---:|:-:|",
    ]
    for r in rows:
        spread = f" ± {r['val_loss']['std']:.3f}" if r["n_seeds"] > 1 else " (1 seed)"
        same = {None: "", True: "yes", False: "no"}[r["same_sign"]]
        lines.append(
            f"| {r['label']} | `{r['preset']}` | {r['params'] / 1e6:.1f}M | {r['n_seeds']} | "
            f"{r['val_loss']['mean']:.3f}{spread} | {_f(r['delta'], signed=True)} | {_f(r['study_loss'])} | "
            f"{_f(r['study_delta'], signed=True)} | {same} |"
        )
    if size in STUDY_MATCHED_TRANSFORMER:
        lines.append(
            f"| Transformer (matched, study) | | 81.2M | | | | {STUDY_MATCHED_TRANSFORMER[size]:.3f} | "
            f"{STUDY_MATCHED_TRANSFORMER[size] - STUDY_LOSS[size]['hope']:+.3f} | |"
        )
    lines += [
        "",
        "## Measurements at the last checkpoint (means over layers and seeds)",
        "",
        (
            "CMS: cosine similarity of consecutive levels' contributions (study: 0.77), level parameter norms "
            "(fast / slow; study: ~26.15 both) and their drift since the previous checkpoint. Self-modification: "
            "‖M_0 − M_0(init)‖ of the meta-learned memories (study: ≈13 large, ≈0.8–5 small), ‖θ_fast − θ_meta‖ / "
            "‖θ_meta‖ after a batch (study: ≈1.0). Surprise: mean per-token ‖∇ℓ‖ and the preset's own gate pass "
            "rate; per-token loss mean and minimum (study: 66.7, 9.3)."
        ),
        "",
        (
            "| preset | CMS sim | CMS norms | CMS drift | self-mod drift | fast/meta | surprise | pass rate | "
            "token loss (min) |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        f = r["final"]
        levels = sorted(int(k.rsplit("_", 1)[1]) for k in f if k.startswith("cms_norm_"))
        norms = " / ".join(_f(f[f"cms_norm_{i}"], 2) for i in levels) or "—"
        drift = " / ".join(_f(f.get(f"cms_drift_prev_{i}"), 2) for i in levels) or "—"
        lines.append(
            f"| {r['preset']} | {_f(f.get('cms_similarity'))} | {norms} | {drift} | "
            f"{_f(f.get('selfmod_drift'), 2)} | {_f(f.get('fast_divergence'))} | {_f(f.get('surprise_mean'), 4)} | "
            f"{_f(f.get('pass_rate'))} | {_f(f['token_loss_mean'], 2)} ({_f(f['token_loss_min'], 2)}) |"
        )
    sweep = [
        (m, t)
        for m, ts in (("absolute", cfg["abs_thresholds"]), ("relative", cfg["rel_thresholds"]))
        for t in ts
    ]
    lines += [
        "",
        "## Gate pass rate versus threshold (last checkpoint; absolute: ‖∇ℓ‖ > t, relative: z-score > t)",
        "",
        "| preset | " + " | ".join(f"{m[:3]} {t:g}" for m, t in sweep) + " |",
        "|---|" + "---:|" * len(sweep),
    ]
    for r in rows:
        if "pass_rate" not in r["final"]:
            continue
        cells = [_f(r["final"].get(f"pass_{m}_{t}")) for m, t in sweep]
        lines.append(f"| {r['preset']} | " + " | ".join(cells) + " |")
    if results.get("failed"):
        lines += ["", "Failed (not in the tables):", ""]
        lines += [f"- {f['preset']} seed {f['seed']}: `{f['error']}`" for f in results["failed"]]
    return "\n".join(lines) + "\n"


def _by_preset(runs: Sequence[dict]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for run in runs:
        groups.setdefault(run["preset"], []).append(run)
    return groups


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    write_bytes_atomic(path, buf.getvalue())
    return path


def plot_curves(results: dict, out: Path) -> Path:
    """``curves.png``: training loss (mean over seeds, smoothed over 1% of the steps) and validation
    loss at the checkpoints (± std over seeds), one line per preset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), dpi=120)
    for preset, members in _by_preset(results["runs"]).items():
        curve = np.nanmean(np.array([m["train_loss"] for m in members], dtype=float), axis=0)
        width = max(1, len(curve) // 100)
        smooth = np.convolve(curve, np.ones(width) / width, mode="valid")
        left.plot(np.arange(width, len(curve) + 1), smooth, label=preset, linewidth=1)
        steps = [p["step"] for p in members[0]["checkpoints"]]
        vals = np.array([[p["val_loss"] for p in m["checkpoints"]] for m in members], dtype=float)
        right.errorbar(
            steps, vals.mean(0), yerr=vals.std(0), marker="o", markersize=3, capsize=2, label=preset
        )
    for ax, title in ((left, "training loss"), (right, "validation loss")):
        ax.set_xlabel("step")
        ax.set_ylabel("loss (nats/token)")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    right.legend(fontsize=7)
    fig.suptitle(f"dissect ({results['config']['size']})", fontsize=10)
    fig.tight_layout()
    return _save(fig, out / "curves.png")


def plot_measurements(results: dict, out: Path) -> Path:
    """``measurements.png``: the study's measurements over training (mean over layers and seeds) and the
    gate pass rate versus absolute threshold at the last checkpoint."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("cms_similarity", "CMS inter-level cosine similarity"),
        ("cms_norm", "CMS level norms (solid fast, dashed slow)"),
        ("selfmod_drift", "self-mod drift from init ‖ΔM_0‖"),
        ("fast_divergence", "‖θ_fast − θ_meta‖ / ‖θ_meta‖"),
        ("pass_rate", "own gate pass rate"),
    ]
    fig, axes = plt.subplots(2, 3, figsize=(13, 7), dpi=120)
    cfg = results["config"]
    for colour, (preset, members) in enumerate(_by_preset(results["runs"]).items()):
        steps = [p["step"] for p in members[0]["checkpoints"]]
        points = [[checkpoint_summary(p) for p in m["checkpoints"]] for m in members]
        for ax, (key, _) in zip(axes.flat, panels):
            keys = [k for k in points[0][0] if k.startswith("cms_norm_")] if key == "cms_norm" else [key]
            for style, k in zip(("-", "--", ":"), keys):
                ys = [
                    statistics.fmean(run[i][k] for run in points) if k in points[0][i] else None
                    for i in range(len(steps))
                ]
                if any(y is not None for y in ys):
                    ax.plot(
                        steps,
                        [math.nan if y is None else y for y in ys],
                        style,
                        marker=".",
                        color=f"C{colour}",
                        label=preset,
                    )
        last = points[0][-1]
        if "pass_rate" in last:
            ts = list(cfg["abs_thresholds"])
            ys = [statistics.fmean(run[-1][f"pass_absolute_{t}"] for run in points) for t in ts]
            axes.flat[5].plot(ts, ys, marker="o", color=f"C{colour}", label=preset)
    for ax, (_, title) in zip(axes.flat, panels):
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes.flat[5].set_xscale("log")
    axes.flat[5].set_title("pass rate vs absolute threshold (last checkpoint)", fontsize=9)
    axes.flat[5].set_xlabel("threshold on ‖∇ℓ‖")
    axes.flat[5].grid(alpha=0.3)
    seen = {}
    for ax in axes.flat:
        for handle, name in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(name, handle)
    fig.legend(seen.values(), seen.keys(), loc="lower center", ncol=len(seen), fontsize=8)
    fig.suptitle(f"dissect ({cfg['size']}): the study's measurements", fontsize=10)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return _save(fig, out / "measurements.png")


# ---- the driver -----------------------------------------------------------------------------------


def run_dissect(cfg: DissectConfig, log: Callable[[str], None] = lambda s: print(s, file=sys.stderr)) -> dict:
    """Every preset x seed (seed-major, so a cut-off run holds every preset on the seeds it finished);
    ``results.json``, ``results.md`` and the plots are rewritten after every finished model."""
    device = pick_device(cfg.device)
    out = Path(cfg.out or f"bench/dissect-{cfg.size}-{datetime.now():%Y%m%d-%H%M%S}")
    if (out / "results.json").exists():
        raise FileExistsError(f"{out} already holds results; pick another --out")
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
    header = {**start_results(out, SUITE, device, resolved), "study_loss": STUDY_LOSS[cfg.size]}
    train_ids, val_ids = np.asarray(splits.train), np.asarray(splits.val)
    byte_lengths = token_byte_lengths(tokenizer)
    plan = [(seed, preset) for seed in range(cfg.seeds) for preset in cfg.presets]
    jobs = [
        (i, (cfg, preset, configs[preset], seed, device, train_ids, val_ids, byte_lengths))
        for i, (seed, preset) in enumerate(plan)
    ]
    finished: dict[int, dict] = {}
    failed: list[dict] = []
    start = time.perf_counter()

    def write(complete: bool) -> dict:
        runs = [finished[i] for i in sorted(finished)]
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
        finished[index] = run
        write(False)
        done, elapsed = len(finished) + len(failed), time.perf_counter() - start
        log(
            f"[{done}/{len(plan)}] {run['preset']} seed {run['seed']}: val loss {run['final_val_loss']:.3f} "
            f"({run['params'] / 1e6:.1f}M params, {run['train_tokens_per_s']:,.0f} tokens/s, "
            f"{run['seconds']:.0f}s; ~{elapsed / done * (len(plan) - done) / 60:.1f} min left)"
        )

    def fail(index: int, error: BaseException) -> None:
        seed, preset = plan[index]
        failed.append({"preset": preset, "seed": seed, "error": repr(error)[:500]})
        log(f"FAILED {preset} seed {seed}: {error!r}"[:500])

    if cfg.jobs == 1:
        for index, args in jobs:
            try:
                run = run_one(*args)
            except RuntimeError as error:  # e.g. CUDA out of memory: the other models still run
                fail(index, error)
            else:
                record(index, run)
    else:
        run_parallel(jobs, cfg.jobs, record, fail, runner=run_one)
    results = write(len(finished) == len(plan))
    log(
        f"wrote {out / 'results.json'}, {out / 'results.md'}, {out / 'curves.png'}, {out / 'measurements.png'}"
    )
    return results
