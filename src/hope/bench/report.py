"""What ``hope bench-suite`` writes: results as JSON, mean ± std over seeds, Markdown tables and plots."""

from __future__ import annotations

import io
import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path

from hope.atomic import write_bytes_atomic


def to_json(data: dict) -> str:
    # NaN (e.g. accuracy on an empty class) is not JSON; null is.
    def clean(x):
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, list):
            return [clean(v) for v in x]
        return x

    return json.dumps(clean(data), indent=2) + "\n"


def _beyond_training(run: dict) -> list[dict]:
    """The test points strictly beyond the training length."""
    if run["train_length"] is None:
        return []
    return [r for r in run["results"] if (r["min_length"] or r["length"]) > run["train_length"]]


def _ood(run: dict, metric: str) -> float | None:
    """Mean metric over the test points strictly beyond the training length (None if there are none,
    or if some were beyond an attention model's context: a mean over the others would not compare)."""
    beyond = _beyond_training(run)
    if not beyond or any(r.get("beyond_context") for r in beyond):
        return None
    return sum(r[metric] for r in beyond) / len(beyond)


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarise(runs: Sequence[dict], metric: str) -> list[dict]:
    """Mean and standard deviation over seeds per preset x task x test point (plus ``label="beyond
    training"`` where some test points are longer than the training data). A point past an attention
    model's context has ``mean`` and ``std`` None and ``beyond_context`` set to that context."""
    groups: dict[tuple, list[dict]] = {}
    for run in runs:
        groups.setdefault((run["task"], run["train_length"], run["preset"]), []).append(run)
    out = []
    for (task, train_length, preset), members in groups.items():
        common = {
            "task": task,
            "train_length": train_length,
            "preset": preset,
            "n_seeds": len(members),
            "params": members[0]["params"],
        }
        for k, point in enumerate(members[0]["results"]):
            values = [m["results"][k][metric] for m in members]
            mean, std = (None, None) if None in values else _mean_std(values)
            out.append(
                {
                    **common,
                    "label": point["label"],
                    "min_length": point["min_length"],
                    "length": point["length"],
                    "mean": mean,
                    "std": std,
                    "chance": point["chance"],
                    "beyond_context": point.get("beyond_context"),
                }
            )
        beyond = [v for v in (_ood(m, metric) for m in members) if v is not None]
        blocked = [r["beyond_context"] for r in _beyond_training(members[0]) if r.get("beyond_context")]
        if blocked:
            out.append(
                {
                    **common,
                    "label": "beyond training",
                    "min_length": None,
                    "length": None,
                    "mean": None,
                    "std": None,
                    "chance": None,
                    "beyond_context": blocked[0],
                }
            )
        elif beyond:
            mean, std = _mean_std(beyond)
            out.append(
                {
                    **common,
                    "label": "beyond training",
                    "min_length": None,
                    "length": None,
                    "mean": mean,
                    "std": std,
                    "chance": None,
                }
            )
    return out


def results_markdown(results: dict) -> str:
    """One table per task (and MAD length): presets x test points, ``mean ± std`` over seeds."""
    cfg = results["config"]
    lines = [
        f"# bench-suite {results['suite']}: {results['metric']} (mean ± std over {cfg['seeds']} seeds)",
        "",
        (
            f"{results['date']}, {results['device']}, torch {results['torch']}, size `{cfg['size']}` "
            f"(parameters matched to `hope`: {cfg['match'] == 'hope'}), {cfg['steps']} steps of batch "
            f"{cfg['batch_size']}, lr {cfg['lr']}, {cfg['n_test']} test examples per point "
            f"(seed {cfg['test_seed']})."
        ),
    ]
    if cfg.get("context") is not None:
        lines.append(
            f"Attention models (transformer, hope-attention) are evaluated up to a context of "
            f"{cfg['context']:,} tokens; longer lengths read *beyond context* (not evaluated). Test prompts "
            f"stream through the models {cfg['piece']:,} tokens at a time, state carried, no gradients."
        )
    tables: dict[tuple, list[dict]] = {}
    for row in results["summary"]:
        tables.setdefault((row["task"], row["train_length"]), []).append(row)
    for (task, train_length), rows in tables.items():
        labels = list(dict.fromkeys(r["label"] for r in rows))
        trained = f"trained at length {train_length}" if train_length is not None else "default length"
        lines += [
            "",
            f"## {task} ({trained})",
            "",
            "| preset | params | " + " | ".join(labels) + " |",
            "|---|---:|" + "---:|" * len(labels),
        ]
        cells: dict[str, dict[str, str]] = {}
        for r in rows:
            # A cell from one seed (a run cut by --max-minutes) has no spread to show.
            spread = f" ± {r['std']:.3f}" if r["n_seeds"] > 1 else " (1 seed)"
            shown = "beyond context" if r.get("beyond_context") else f"{r['mean']:.3f}{spread}"
            cells.setdefault(r["preset"], {"params": f"{r['params']:,}"})[r["label"]] = shown

        for preset, by_label in cells.items():
            lines.append(
                f"| {preset} | {by_label['params']} | "
                + " | ".join(by_label.get(x, "") for x in labels)
                + " |"
            )
        chance = {r["label"]: r["chance"] for r in rows if r["chance"] is not None}
        lines.append(
            "| chance | | " + " | ".join(f"{chance[x]:.3g}" if x in chance else "" for x in labels) + " |"
        )
    if results.get("failed"):
        lines += ["", "Failed (not in the tables):", ""]
        lines += [f"- {f['preset']} seed {f['seed']} {f['task']}: `{f['error']}`" for f in results["failed"]]
    return "\n".join(lines) + "\n"


def plot_results(results: dict, out: Path) -> Path:
    """``accuracy_vs_length.png`` (a panel per task, a line per preset, ± std bars) or, when every task
    was tested at a single length (MAD's defaults), ``accuracy_by_task.png`` (grouped bars)."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    metric = results["metric"]
    # Points beyond an attention model's context have no value to draw.
    rows = [r for r in results["summary"] if r["label"] != "beyond training" and r["mean"] is not None]
    presets = list(dict.fromkeys(r["preset"] for r in rows))
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    single = all(len({r["label"] for r in rows if r["task"] == t}) == 1 for t in tasks)
    if single:
        path = out / "accuracy_by_task.png"
        fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(tasks)), 4.2), dpi=120)
        width = 0.8 / len(presets)
        for k, preset in enumerate(presets):
            mine = {r["task"]: r for r in rows if r["preset"] == preset}
            xs = [i + k * width for i, t in enumerate(tasks) if t in mine]
            ax.bar(
                xs,
                [mine[t]["mean"] for t in tasks if t in mine],
                width,
                yerr=[mine[t]["std"] for t in tasks if t in mine],
                label=preset,
                capsize=2,
            )
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(tasks))], tasks, rotation=20, ha="right")
        ax.set_ylabel(metric)
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=8)
    else:
        path = out / "accuracy_vs_length.png"
        cols = min(3, len(tasks))
        nrows = -(-len(tasks) // cols)
        fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.4 * nrows), dpi=120, squeeze=False)
        for ax, task in zip(axes.flat, tasks):
            mine = [r for r in rows if r["task"] == task]
            for preset in presets:
                pts = [r for r in mine if r["preset"] == preset]
                ax.errorbar(
                    [r["length"] for r in pts],
                    [r["mean"] for r in pts],
                    yerr=[r["std"] for r in pts],
                    marker="o",
                    markersize=3,
                    capsize=2,
                    label=preset,
                )
            by_length = {r["length"]: r["chance"] for r in mine}
            ax.plot(list(by_length), list(by_length.values()), "k:", linewidth=1, label="chance")
            if mine[0]["train_length"] is not None:
                ax.axvline(mine[0]["train_length"], color="grey", linestyle="--", linewidth=0.8)
            if results["suite"] != "formal":
                ax.set_xscale("log", base=2)
                ax.set_xticks(list(by_length), [str(x) for x in by_length])
            ax.set_title(task, fontsize=9)
            ax.set_ylim(-0.02, 1.02)
            ax.set_xlabel(
                "string length (bin upper edge)" if results["suite"] == "formal" else "context length"
            )
            ax.set_ylabel(metric)
            ax.grid(alpha=0.3)
        for ax in list(axes.flat)[len(tasks) :]:
            ax.axis("off")
        axes.flat[0].legend(fontsize=7)
    note = "" if single else " (dashed: training length)"
    fig.suptitle(f"{results['suite']}: {metric}{note}", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    write_bytes_atomic(path, buf.getvalue())
    return path
