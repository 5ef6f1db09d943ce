"""``hope bench-suite continual``: train each preset on tasks one after another and measure forgetting.

The two scenarios of :mod:`hope.suites.continual`, each a sequence of training stages:

* ``class-incremental``: ``n_tasks`` tasks of ``classes_per_task`` new classes each; stage ``i`` trains
  on task ``i``'s training set only. The model answers with one of *all* the classes' label tokens,
  without being told the task (the class-incremental scenario of van de Ven & Tolias, 2019), so the
  labels of the task it learned last compete with those of the earlier ones. ``R[i][j]`` is the
  accuracy on task ``j``'s test set after stage ``i``.
* ``domain-lm``: stage 0 trains on domain A (English text), stage 1 on domain B (random lowercase
  letters); ``R[i][j]`` is the mean next-character loss (nats) on domain ``j`` after stage ``i``.
* ``languages``: stage 0 trains translating language L1 into the shared meaning representation,
  stage 1 language L2 (:mod:`hope.suites.languages`); ``R[i][j]`` is the share of meaning tokens
  right on language ``j``'s test sentences (new combinations of known words) after stage ``i``.

Per preset, seed and scenario one model (parameter-matched to ``hope`` as ``bench-suite`` does it,
:func:`hope.bench.run.model_configs`) is built and evaluated on every task before any training (the
baseline of FWT); then each stage trains ``steps`` AdamW steps on that stage's examples and every task
is evaluated again. Each stage has its own optimizer and warm-up + cosine schedule
(:func:`hope.bench.run.fit`, as for every bench-suite model): only the weights pass from one stage to
the next, so a stage's saved model (``save_stages``) is everything later stages and evaluations
depend on.

Each task's training set is fixed (``n_train`` examples, drawn in shuffled epochs). The data — class
prototypes, text positions, test examples — comes from seed :data:`~hope.bench.protocols.TEST_SEED` for
every model seed, so the spread over seeds is that of the initialisation and the batch order.

Written to ``out``: ``config.json`` (the full resolved configuration, every model's included) first,
``results.json`` after every model (``"complete": false`` until the end), then ``results.md`` (ACC,
BWT and FWT as mean ± std over seeds, and the mean R matrices) and ``r_matrix.png`` (a heat map per
scenario and preset). With ``save_stages``, ``stages/<scenario>/<preset>-seed<k>/`` holds
``model.json`` (the :class:`~hope.config.ModelConfig`) and ``init.safetensors``, ``stage0.safetensors``,
... (``safetensors.torch.save_model``).
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import ClassVar

import torch
from safetensors.torch import save_model

import hope
from hope.atomic import write_bytes_atomic, write_text_atomic
from hope.bench.protocols import TEST_SEED, TRAIN_SEED_BASE
from hope.bench.report import to_json
from hope.bench.run import RunOptions, fit, model_configs, start_results
from hope.checks import check_choice, check_int
from hope.config import ModelConfig
from hope.data.tokenizer import ByteTokenizer
from hope.distributed import pick_device
from hope.eval.predict import evaluate, pad, suite_vocab, training_pair
from hope.suites import continual
from hope.suites.common import IGNORE, Example

SUITE = "continual"
SCENARIOS = continual.tasks
METRICS = {"class-incremental": "accuracy", "domain-lm": "loss", "languages": "accuracy"}
"""The score in R per scenario: accuracy (higher is better; BWT < 0 is forgetting) or mean loss in nats
per character (lower is better; BWT > 0 is forgetting)."""


@dataclass
class ContinualConfig(RunOptions):
    """One continual-learning bench run; validated on creation (ValueError naming the field)."""

    OWNER: ClassVar[str] = "continual"
    presets: tuple[str, ...] = ("hope", "titans", "transformer")
    scenarios: tuple[str, ...] | None = None  # None: all of SCENARIOS
    n_tasks: int = 5  # class-incremental tasks (domain-lm always has A then B)
    classes_per_task: int = 2
    length: int = 16  # symbols per class-incremental example
    lm_length: int = 32  # characters per domain-lm segment
    steps: int = 40  # optimizer steps per stage
    n_train: int = 256  # training examples per task / domain
    save_stages: bool = False

    def __post_init__(self) -> None:
        self.presets = tuple(self.presets)
        self.scenarios = None if self.scenarios is None else tuple(self.scenarios)
        self.validate()

    def validate(self) -> None:
        self.validate_run(self.presets)
        if self.scenarios is not None and not self.scenarios:
            raise ValueError(f"continual.scenarios must name at least one of {list(SCENARIOS)}")
        for scenario in self.scenarios or ():
            check_choice("continual.scenarios", scenario, SCENARIOS)
        check_int("continual.n_tasks", self.n_tasks, 2)  # a continual run learns at least two tasks in order
        for name in ("classes_per_task", "length", "steps", "n_train"):
            check_int(f"continual.{name}", getattr(self, name))
        check_int("continual.lm_length", self.lm_length, 2)  # a next-character loss needs two characters
        check_choice("continual.save_stages", self.save_stages, [False, True])

    @property
    def resolved_scenarios(self) -> tuple[str, ...]:
        return self.scenarios or SCENARIOS


@dataclass
class Scenario:
    """A scenario's stages: ``stages[i]`` names what stage ``i`` trains on, ``train[i]`` its examples;
    ``test`` holds every task's test examples and ``keys[j]`` the metric of task ``j`` in their score."""

    name: str
    stages: list[str]
    keys: list[str]
    train: list[list[Example]]
    test: list[Example]
    vocab: int


def scenario(cfg: ContinualConfig, name: str) -> Scenario:
    """The training stages and test sets of scenario ``name`` (built before any model trains)."""
    if name == "class-incremental":
        options = {"n_tasks": cfg.n_tasks, "classes_per_task": cfg.classes_per_task}
        length, group, key = cfg.length, "task_id", "accuracy/task_{}"
    elif name == "languages":
        options, length, group, key = {}, None, "language", "accuracy/{}"
    else:
        options, length, group, key = {}, cfg.lm_length, "domain", "loss/{}"
    train = continual.generate(name, cfg.n_train, length, TEST_SEED, split="train", **options)
    test = continual.generate(name, cfg.n_test, length, TEST_SEED, split="test", **options)
    stages = list(dict.fromkeys(ex.meta[group] for ex in train))
    return Scenario(
        name=name,
        stages=[f"task {s}" if group == "task_id" else str(s) for s in stages],
        keys=[key.format(s) for s in stages],
        train=[[ex for ex in train if ex.meta[group] == s] for s in stages],
        test=test,
        vocab=suite_vocab(train + test),
    )


def train_stage(model, cfg: ContinualConfig, examples: Sequence[Example], seed: int, device) -> dict:
    """:func:`hope.bench.run.fit` (a fresh AdamW, ``cfg.steps`` steps, warm-up + cosine) on batches of
    ``examples`` drawn in shuffled epochs seeded by ``seed``; returns its final loss and skipped steps."""
    tokenizer = ByteTokenizer()
    pairs = [training_pair(SUITE, ex, tokenizer) for ex in examples]
    generator = torch.Generator().manual_seed(seed)
    order: list[int] = []

    def next_batch() -> tuple[torch.Tensor, torch.Tensor]:
        while len(order) < cfg.batch_size:
            order.extend(torch.randperm(len(pairs), generator=generator).tolist())
        batch = [pairs[order.pop(0)] for _ in range(cfg.batch_size)]
        return pad([p[0] for p in batch], 0), pad([p[1] for p in batch], IGNORE)

    return fit(
        model,
        lambda step: next_batch(),
        cfg.steps,
        cfg.lr,
        cfg.weight_decay,
        cfg.grad_clip,
        cfg.precision,
        device,
    )


def scores(model, cfg: ContinualConfig, sc: Scenario, device) -> list[float]:
    """One row of R: every task's score for ``model`` now."""
    metrics = evaluate(
        model,
        SUITE,
        sc.test,
        device=device,
        batch_size=cfg.batch_size,
        piece=cfg.piece,
        precision=cfg.precision,
    )
    return [metrics[key] for key in sc.keys]


def _save(model, model_cfg: ModelConfig, folder: Path, name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "model.json").exists():
        write_text_atomic(folder / "model.json", json.dumps(model_cfg.to_dict(), indent=2) + "\n")
    tmp = folder / f".{name}.{os.getpid()}.tmp"
    save_model(model, str(tmp))
    os.replace(tmp, folder / f"{name}.safetensors")


def run_sequence(
    cfg: ContinualConfig, sc: Scenario, preset: str, model_cfg: ModelConfig, seed: int, device, out: Path
) -> dict:
    """One model through every stage of ``sc``: the R matrix, its baseline row and ACC/BWT/FWT."""
    torch.manual_seed(seed)
    model = hope.build_model(model_cfg).to(device)
    folder = out / "stages" / sc.name / f"{preset}-seed{seed}"
    began = time.perf_counter()
    baseline = scores(model, cfg, sc, device)
    if cfg.save_stages:
        _save(model, model_cfg, folder, "init")
    R, trained = [], []
    for i, examples in enumerate(sc.train):
        trained.append(train_stage(model, cfg, examples, TRAIN_SEED_BASE * (seed + 1) + i, device))
        R.append(scores(model, cfg, sc, device))
        if cfg.save_stages:
            _save(model, model_cfg, folder, f"stage{i}")
    return {
        "scenario": sc.name,
        "preset": preset,
        "seed": seed,
        "metric": METRICS[sc.name],
        "stages": sc.stages,
        "params": model.num_parameters(),
        "d_model": model_cfg.d_model,
        "n_layers": model_cfg.n_layers,
        "seconds": time.perf_counter() - began,
        "R": R,
        "baseline": baseline,
        **continual.summary(R, baseline),
        "train_loss": [t["train_loss"] for t in trained],
        "skipped_steps": sum(t["skipped_steps"] for t in trained),
    }


def _mean_std(values: Sequence[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def summarise(runs: Sequence[dict]) -> list[dict]:
    """Per scenario and preset: ACC, BWT, FWT and every entry of R and of the baseline, mean and std over
    seeds."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for run in runs:
        groups.setdefault((run["scenario"], run["preset"]), []).append(run)
    out = []
    for (name, preset), members in groups.items():
        T = len(members[0]["stages"])
        cells = [[_mean_std([m["R"][i][j] for m in members]) for j in range(T)] for i in range(T)]
        out.append(
            {
                "scenario": name,
                "preset": preset,
                "metric": members[0]["metric"],
                "stages": members[0]["stages"],
                "n_seeds": len(members),
                "params": members[0]["params"],
                **{k: _mean_std([m[k] for m in members]) for k in ("acc", "bwt", "fwt")},
                "R_mean": [[c["mean"] for c in row] for row in cells],
                "R_std": [[c["std"] for c in row] for row in cells],
                "baseline_mean": [statistics.fmean(m["baseline"][j] for m in members) for j in range(T)],
            }
        )
    return out


def results_markdown(results: dict) -> str:
    """ACC/BWT/FWT (mean ± std over seeds) per scenario and preset, then each preset's mean R matrix."""
    cfg = results["config"]
    lines = [
        f"# bench-suite continual: ACC, BWT, FWT (mean ± std over {cfg['seeds']} seeds)",
        "",
        (
            f"{results['date']}, {results['device']}, torch {results['torch']}, size `{cfg['size']}` "
            f"(parameters matched to `hope`: {cfg['match'] == 'hope'}), {cfg['steps']} steps of batch "
            f"{cfg['batch_size']} per stage, lr {cfg['lr']}, {cfg['n_train']} training and {cfg['n_test']} "
            f"test examples per task (data seed {cfg['data_seed']})."
        ),
    ]
    for name in cfg["scenarios"]:
        rows = [r for r in results["summary"] if r["scenario"] == name]
        if not rows:
            continue
        metric = rows[0]["metric"]
        better = "higher" if metric == "accuracy" else "lower"
        forgetting = "BWT < 0" if metric == "accuracy" else "BWT > 0"
        lines += [
            "",
            f"## {name} ({metric}, {better} is better; {forgetting} is forgetting)",
            "",
            "| preset | params | seeds | ACC | BWT | FWT |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for r in rows:
            cells = " | ".join(f"{r[k]['mean']:.3f} ± {r[k]['std']:.3f}" for k in ("acc", "bwt", "fwt"))
            lines.append(f"| {r['preset']} | {r['params']:,} | {r['n_seeds']} | {cells} |")
        for r in rows:
            lines += [
                "",
                f"R for {r['preset']} (row: after training on; column: evaluated on; mean over seeds):",
                "",
                "| after \\ on | " + " | ".join(r["stages"]) + " |",
                "|---|" + "---:|" * len(r["stages"]),
                "| (untrained) | " + " | ".join(f"{v:.3f}" for v in r["baseline_mean"]) + " |",
            ]
            lines += [
                f"| {stage} | " + " | ".join(f"{v:.3f}" for v in row) + " |"
                for stage, row in zip(r["stages"], r["R_mean"])
            ]
    return "\n".join(lines) + "\n"


def plot_r_matrices(results: dict, out: Path) -> Path:
    """``r_matrix.png``: a heat map of the mean R per scenario (row) and preset (column), each cell
    annotated; losses use a reversed colour map, so brighter is better in both rows."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    names = [n for n in results["config"]["scenarios"] if any(r["scenario"] == n for r in results["summary"])]
    presets = list(dict.fromkeys(r["preset"] for r in results["summary"]))
    fig, axes = plt.subplots(
        len(names),
        len(presets),
        figsize=(3.2 * len(presets) + 1, 3.2 * len(names)),
        dpi=120,
        squeeze=False,
        layout="constrained",
    )
    for row_axes, name in zip(axes, names):
        rows = {r["preset"]: r for r in results["summary"] if r["scenario"] == name}
        metric = next(iter(rows.values()))["metric"]
        values = [v for r in rows.values() for line in r["R_mean"] for v in line]
        lo, hi = (0.0, 1.0) if metric == "accuracy" else (min(values), max(values))
        cmap = plt.get_cmap("viridis" if metric == "accuracy" else "viridis_r")
        norm = matplotlib.colors.Normalize(lo, hi)
        for column, (ax, preset) in enumerate(zip(row_axes, presets)):
            if preset not in rows:
                ax.axis("off")
                continue
            r = rows[preset]
            image = ax.imshow(r["R_mean"], cmap=cmap, norm=norm)
            for i, line in enumerate(r["R_mean"]):
                for j, v in enumerate(line):
                    dark = sum(cmap(norm(v))[:3]) < 1.5  # white on dark cells, black on bright ones
                    ax.text(
                        j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="w" if dark else "k"
                    )
            ticks = range(len(r["stages"]))
            ax.set_xticks(ticks, r["stages"], fontsize=7)
            ax.set_yticks(ticks, r["stages"], fontsize=7)
            ax.set_xlabel("evaluated on", fontsize=8)
            if column == 0:
                ax.set_ylabel(f"{name}\nafter training on", fontsize=8)
            ax.set_title(
                f"{preset}: ACC {r['acc']['mean']:.2f}, BWT {r['bwt']['mean']:+.2f}, FWT {r['fwt']['mean']:+.2f}",
                fontsize=8,
            )
        fig.colorbar(image, ax=list(row_axes), shrink=0.8, label=metric)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    path = out / "r_matrix.png"
    write_bytes_atomic(path, buf.getvalue())
    return path


def run_continual(
    cfg: ContinualConfig, log: Callable[[str], None] = lambda s: print(s, file=sys.stderr)
) -> dict:
    """Every preset x seed x scenario through its stages, in seed-major order; writes ``config.json``,
    then ``results.json`` after every model, and finally ``results.md`` and ``r_matrix.png``."""
    device = pick_device(cfg.device)
    out = Path(cfg.out or f"bench/continual-{datetime.now():%Y%m%d-%H%M%S}")
    if (out / "results.json").exists():
        raise FileExistsError(f"{out} already holds results; pick another --out")
    scenarios = [scenario(cfg, name) for name in cfg.resolved_scenarios]
    out.mkdir(parents=True, exist_ok=True)
    configs = {sc.name: model_configs(cfg, sc.vocab) for sc in scenarios}
    resolved = {
        **dataclasses.asdict(cfg),
        "out": str(out),
        "scenarios": list(cfg.resolved_scenarios),
        "data_seed": TEST_SEED,
        "stages": {sc.name: sc.stages for sc in scenarios},
        "models": {
            name: {p: c.to_dict() for p, c in by_preset.items()} for name, by_preset in configs.items()
        },
    }
    header = start_results(out, SUITE, device, resolved)
    plan = [(seed, sc, preset) for seed in range(cfg.seeds) for sc in scenarios for preset in cfg.presets]
    runs: list[dict] = []
    start = time.perf_counter()
    for seed, sc, preset in plan:
        run = run_sequence(cfg, sc, preset, configs[sc.name][preset], seed, device, out)
        runs.append(run)
        write_text_atomic(out / "results.json", to_json({**header, "complete": False, "runs": runs}))
        elapsed = time.perf_counter() - start
        log(
            f"[{len(runs)}/{len(plan)}] {preset} seed {seed} {sc.name}: ACC {run['acc']:.3f}, "
            f"BWT {run['bwt']:+.3f}, FWT {run['fwt']:+.3f} ({run['seconds']:.1f}s; "
            f"~{elapsed / len(runs) * (len(plan) - len(runs)) / 60:.1f} min left)"
        )
    results = {**header, "complete": True, "runs": runs, "summary": summarise(runs)}
    write_text_atomic(out / "results.json", to_json(results))
    write_text_atomic(out / "results.md", results_markdown(results))
    plot = plot_r_matrices(results, out)
    log(f"wrote {out / 'results.json'}, {out / 'results.md'}, {plot}")
    return results
