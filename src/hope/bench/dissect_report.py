"""Tables and plots of ``hope bench-suite dissect`` (:mod:`hope.bench.dissect`), with the study's own
numbers (reference 003) to set beside ours."""

from __future__ import annotations

import io
import math
import statistics
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hope.atomic import write_bytes_atomic

LABELS = {
    "hope": "Full HOPE",
    "hope-no-cms": "No CMS",
    "hope-no-selfmod": "No Self-Mod",
    "hope-no-surprise": "No Surprise",
    "titans": "Titans",
    "transformer": "Transformer",
}
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
                # None where a model has no such value (one CMS level has no inter-level similarity)
                ys = [_layer_mean([run[i].get(k) for run in points]) for i in range(len(steps))]
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
    if seen:  # none while only models without a memory (the transformer) have finished
        fig.legend(seen.values(), seen.keys(), loc="lower center", ncol=len(seen), fontsize=8)
    fig.suptitle(f"dissect ({cfg['size']}): the study's measurements", fontsize=10)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return _save(fig, out / "measurements.png")
