"""``hope bench-suite``: per preset and seed, train a parameter-matched model on a suite's training
distribution (:data:`~hope.bench.protocols.PROTOCOLS`), test it on the test distribution, and write
``config.json``, ``results.json``, ``results.md`` and a plot. Models train one after another or, with
``jobs > 1``, in a pool of processes.

Everything is deterministic for a seed: data comes from the suites' seeded generators and the models
from ``torch.manual_seed``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import multiprocessing
import os
import shutil
import sys
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

import hope
from hope.atomic import write_text_atomic
from hope.bench.protocols import (
    ATTENTION_BLOCKS,
    BENCH_SUITES,
    PROTOCOLS,
    TEST_SEED,
    TRAIN_SEED_BASE,
    eval_examples,
    label,
    length_points,
    train_examples,
)
from hope.bench.readout import BottleneckReadout
from hope.bench.report import plot_results, results_markdown, summarise, to_json
from hope.checks import check_choice, check_int, check_number
from hope.config import PRESETS, SIZES, ModelConfig
from hope.data.tokenizer import ByteTokenizer
from hope.distributed import pick_device
from hope.eval.predict import evaluate, pad, suite_vocab, training_pair
from hope.optim import build_optimizer
from hope.suites import get_suite
from hope.suites.common import IGNORE, Example
from hope.bench.resume import Partial, check_partial, refuse_unresumed, resumable_runs, unplanned_runs
from hope.bench.resume import may_start as may_start_another
from hope.train.graphs import GraphedLoss
from hope.train.step import lr_factor, train_step


@dataclass(kw_only=True)
class RunOptions:
    """What every bench run trains and evaluates with (`BenchConfig`, the continual driver's config);
    `validate_run` checks it under the subclass's `OWNER` name."""

    OWNER: ClassVar[str] = "bench"
    seeds: int = 3
    size: str = "tiny"
    batch_size: int = 32
    n_test: int = 100
    lr: float = 1e-3
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    precision: str = "fp32"
    device: str = "auto"
    piece: int = 2048
    match: str = "hope"
    out: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)  # model fields for every preset

    def validate_run(self, presets: tuple[str, ...]) -> None:
        owner = self.OWNER
        if not presets or len(set(presets)) != len(presets):
            raise ValueError(f"{owner}.presets must be distinct names from {sorted(PRESETS)}; got {presets}")
        for preset in presets:
            check_choice(f"{owner}.presets", preset, sorted(PRESETS))
        check_choice(f"{owner}.size", self.size, SIZES)
        check_choice(f"{owner}.precision", self.precision, ["fp32", "bf16"])
        check_choice(f"{owner}.device", self.device, ["auto", "cpu", "cuda"])
        check_choice(f"{owner}.match", self.match, ["hope", "none"])
        for name in ("seeds", "batch_size", "n_test", "piece"):
            check_int(f"{owner}.{name}", getattr(self, name))
        check_number(f"{owner}.lr", self.lr, lo_open=True)
        for name in ("weight_decay", "grad_clip"):
            check_number(f"{owner}.{name}", getattr(self, name))
        ModelConfig.preset("hope", self.size, **self.overrides)  # a bad override fails here, named


@dataclass
class BenchConfig(RunOptions):
    """One ``hope bench-suite`` run; validated on creation (ValueError naming the field)."""

    suite: str
    presets: tuple[str, ...] = ("hope", "transformer", "titans")
    tasks: tuple[str, ...] | None = None  # None: every task of the suite
    steps: int = 200
    lengths: tuple[int, ...] | None = None  # None: the protocol's test lengths
    train_length: int | None = None  # None: the protocol's
    # start no model past this wall time, and pause one at a save whose next segment would end past it
    # (--resume continues it there); None: run everything
    max_minutes: float | None = None
    jobs: int = 1  # models trained at once, each in its own process
    context: int | None = None  # attention models' context; None: the protocol's default (or no limit)
    resume: bool = False  # continue the run in `out`: keep its finished models, train the rest
    cuda_graphs: bool = False  # training steps replayed from CUDA graphs, batches padded to GRAPH_WIDTH
    partial_dir: str | None = None  # a training model's checkpoint at its last save; None: out/partial

    def __post_init__(self) -> None:
        self.presets, self.tasks = tuple(self.presets), None if self.tasks is None else tuple(self.tasks)
        self.lengths = None if self.lengths is None else tuple(self.lengths)
        self.validate()

    def validate(self) -> None:
        check_choice("bench.suite", self.suite, BENCH_SUITES)
        self.validate_run(self.presets)
        for task in self.tasks or ():
            check_choice("bench.tasks", task, get_suite(self.suite).tasks)
        if self.tasks is not None and not self.tasks:
            raise ValueError("bench.tasks must not be empty")
        for name in ("steps", "jobs"):
            check_int(f"bench.{name}", getattr(self, name))
        for name in ("resume", "cuda_graphs"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"bench.{name} must be true or false, got {getattr(self, name)!r}")
        if self.cuda_graphs and self.device == "cpu":
            raise ValueError("bench.cuda_graphs needs a GPU: it cannot run with bench.device 'cpu'")
        if self.partial_dir is not None and not (isinstance(self.partial_dir, str) and self.partial_dir):
            raise ValueError(f"bench.partial_dir must be a directory path or None, got {self.partial_dir!r}")
        if self.train_length is not None:
            check_int("bench.train_length", self.train_length)
        if self.lengths is not None:
            if not self.lengths:
                raise ValueError("bench.lengths must not be empty")
            for length in self.lengths:
                check_int("bench.lengths", length)
        if self.max_minutes is not None:
            check_number("bench.max_minutes", self.max_minutes, lo_open=True)
        protocol = PROTOCOLS[self.suite]
        if self.context is not None:
            check_int("bench.context", self.context)
            if protocol.context_factor is None:
                raise ValueError(
                    f"bench.context does not apply to {self.suite}; it applies to "
                    + ", ".join(n for n, p in PROTOCOLS.items() if p.context_factor is not None)
                )
        if self.train_length is not None and protocol.train_length is None:
            raise ValueError(
                f"bench.train_length does not apply to {self.suite} (it trains at each of --lengths)"
            )

    @property
    def resolved_tasks(self) -> tuple[str, ...]:
        return self.tasks or get_suite(self.suite).tasks

    @property
    def resolved_lengths(self) -> tuple[int | None, ...]:
        return self.lengths or PROTOCOLS[self.suite].lengths

    @property
    def resolved_train_length(self) -> int | None:
        return self.train_length or PROTOCOLS[self.suite].train_length

    @property
    def resolved_context(self) -> int | None:
        """The longest test length an attention model is evaluated at (tokens; characters for the text
        suites' byte tokens): ``context``, else the protocol's ``context_factor`` x the training length,
        else None (no limit). Longer lengths are reported as beyond its context, not scored."""
        factor = PROTOCOLS[self.suite].context_factor
        if self.context is not None or factor is None:
            return self.context
        return factor * self.resolved_train_length


def model_configs(cfg: BenchConfig, vocab: int) -> dict[str, ModelConfig]:
    """Each preset at ``cfg.size``; with ``match="hope"`` resized to the ``hope`` preset's parameter count
    (the transformer by ``hope.matched_transformer``, the others by width)."""
    reference = ModelConfig.preset("hope", cfg.size, vocab_size=vocab, **cfg.overrides)
    goal = hope.count_parameters(reference)
    out = {}
    for preset in cfg.presets:
        base = ModelConfig.preset(preset, cfg.size, vocab_size=vocab, **cfg.overrides)
        if cfg.match == "none" or preset == "hope":
            out[preset] = base
        elif preset == "transformer":
            out[preset] = hope.matched_transformer(reference, **cfg.overrides)
        elif abs(hope.count_parameters(base) - goal) <= 0.05 * goal:
            out[preset] = base
        else:
            out[preset] = hope.match_width(base, goal)
    return out


def train_model(
    model,
    cfg: BenchConfig,
    task: str,
    length: int | None,
    seed: int,
    device: torch.device,
    partial: Partial | None = None,
) -> dict:
    """Trains ``model`` by :func:`fit` on fresh batches of the suite's training distribution (loss only
    where :func:`training_pair` asks something)."""
    tokenizer = ByteTokenizer()

    def batch_at(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        seed_at = TRAIN_SEED_BASE * (seed + 1) + step
        return _train_batch(cfg.suite, task, cfg.batch_size, length, seed_at, tokenizer)

    args = (cfg.steps, cfg.lr, cfg.weight_decay, cfg.grad_clip, cfg.precision, device, cfg.cuda_graphs)
    return fit(model, batch_at, *args, partial=partial)


GRAPH_WIDTH = 64
"""With ``cuda_graphs`` a training batch is padded to a multiple of this many tokens, so that the few
widths a suite's batches take are captured once each (``GraphedLoss``'s ``max_shapes``)."""


def pad_width(batch: tuple[torch.Tensor, torch.Tensor], multiple: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets) padded on the right to a multiple of ``multiple`` tokens: inputs with 0, targets
    with IGNORE. A causal model's loss and gradients are unchanged: no position before the padding
    sees it, and no padded position has a loss."""
    inputs, targets = batch
    extra = -inputs.shape[1] % multiple
    return F.pad(inputs, (0, extra), value=0), F.pad(targets, (0, extra), value=IGNORE)


def fit(
    model,
    batch_at: Callable[[int], tuple[torch.Tensor, torch.Tensor]],
    steps: int,
    lr: float,
    weight_decay: float,
    grad_clip: float,
    precision: str,
    device: torch.device,
    cuda_graphs: bool = False,
    partial: Partial | None = None,
) -> dict:
    """``steps`` steps of a fresh AdamW on ``batch_at(step)``, warming up over the first 5% of the steps
    and decaying to 10% (as ``hope train``). Returns the mean loss of the last 10 steps and the number
    of skipped steps: a non-finite step is skipped, not applied, and the run goes on. With
    ``cuda_graphs`` each step replays CUDA graphs (``hope.train.graphs``) on batches padded to a
    multiple of ``GRAPH_WIDTH`` tokens (``pad_width``). With a ``partial``, the model is saved
    ``SAVES`` times along the way and continues from a save it finds; past a save whose next segment
    would end after its deadline it returns ``{"paused_at": step}`` instead."""
    optimizer = build_optimizer("adamw", model, lr, weight_decay)
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    loss_fn = GraphedLoss(model, precision, max_shapes=4) if cuda_graphs else None
    source = (lambda step: pad_width(batch_at(step), GRAPH_WIDTH)) if cuda_graphs else batch_at
    losses, skipped, first, earlier, began = [], 0, 0, 0.0, time.perf_counter()
    record = partial.resume(model, optimizer) if partial is not None else None
    if record is not None:
        losses, skipped, first, earlier = (
            record["losses"],
            record["skipped_steps"],
            record["step"],
            record["seconds"],
        )
    every = max(1, math.ceil(steps / SAVES))
    model.train()
    for step in range(first, steps):
        factor = lr_factor(step, steps, max(1, steps // 20), 0.1)
        batch = functools.partial(source, step)
        loss, norm = train_step(
            model,
            optimizer,
            batch,
            base_lrs,
            factor,
            device,
            precision=precision,
            grad_clip=grad_clip,
            loss_fn=loss_fn,
        )
        skipped += not (math.isfinite(loss) and math.isfinite(norm))
        losses.append(loss)
        if partial is not None and (step + 1) % every == 0 and step + 1 < steps:
            seconds = earlier + time.perf_counter() - began
            progress = {"losses": losses, "skipped_steps": skipped, "seconds": seconds}
            if partial.save(step + 1, model, optimizer, progress):
                return {"paused_at": step + 1}
    tail = [x for x in losses[-10:] if math.isfinite(x)]
    return {
        "train_loss": sum(tail) / len(tail) if tail else math.nan,
        "skipped_steps": skipped,
        "earlier_seconds": earlier,  # spent training before a resume
    }


SAVES = 10
"""How often `fit` saves a model with a `Partial` along its steps."""


def _train_batch(suite, task, n, length, seed, tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    pairs = [training_pair(suite, ex, tokenizer) for ex in train_examples(suite, task, n, length, seed)]
    return pad([p[0] for p in pairs], 0), pad([p[1] for p in pairs], IGNORE)


@dataclass
class _Setting:
    """One training distribution (a task, and for MAD a length) with its test sets."""

    task: str
    train_length: int | None
    tests: list[tuple[int | None, int | None, list[Example]]]
    vocab: int

    @property
    def bottleneck(self) -> bool:
        """MAD compression: read out through :class:`BottleneckReadout`."""
        return self.tests[0][2][0].meta.get("readout") == "final-state"


def _settings(cfg: BenchConfig) -> list[_Setting]:
    """Every setting's test sets and vocabulary, built (and so validated) before any model trains."""
    protocol = PROTOCOLS[cfg.suite]
    out = []
    for task in cfg.resolved_tasks:
        if protocol.per_length:
            plan = [(length, [(None, length)]) for length in cfg.resolved_lengths]
        else:
            plan = [(cfg.resolved_train_length, length_points(cfg.suite, cfg.resolved_lengths))]
        for train_length, points in plan:
            probe = train_examples(cfg.suite, task, 1, train_length, TRAIN_SEED_BASE)
            if protocol.per_length and train_length is None:  # name MAD's default length in the results
                train_length = probe[0].meta["seq_len"]
                points = [(None, train_length)]
            tests = [
                (lo, hi, eval_examples(cfg.suite, task, cfg.n_test, lo, hi, TEST_SEED)) for lo, hi in points
            ]
            vocab = suite_vocab(probe + [ex for *_, examples in tests for ex in examples])
            out.append(_Setting(task, train_length, tests, vocab))
    return out


def run_bench(cfg: BenchConfig, log: Callable[[str], None] = lambda s: print(s, file=sys.stderr)) -> dict:
    """Trains and tests every preset x seed x setting; writes ``config.json``, then ``results.json`` after
    every model (a run cut short keeps what it finished), and finally ``results.md`` and the plot."""
    device = pick_device(cfg.device)
    if cfg.cuda_graphs and device.type != "cuda":
        raise ValueError(f"bench.cuda_graphs needs a GPU; the run would be on {device}")
    out = Path(cfg.out or f"bench/{cfg.suite}-{datetime.now():%Y%m%d-%H%M%S}")
    if (out / "results.json").exists() and not cfg.resume:
        raise FileExistsError(f"{out} already holds results; pick another --out, or --resume to continue it")
    settings = _settings(cfg)
    plan = [
        (seed, setting, preset) for seed in range(cfg.seeds) for setting in settings for preset in cfg.presets
    ]
    root = Path(cfg.partial_dir) if cfg.partial_dir else out / "partial"
    partials = [root / f"{preset}-{s.task}-{s.train_length}-seed{seed}" for seed, s, preset in plan]
    if not cfg.resume:
        refuse_unresumed(partials)
    out.mkdir(parents=True, exist_ok=True)
    configs = {s.vocab: model_configs(cfg, s.vocab) for s in settings}
    resolved = {
        **dataclasses.asdict(cfg),
        "out": str(out),
        "tasks": list(cfg.resolved_tasks),
        "lengths": list(cfg.resolved_lengths),
        "train_length": cfg.resolved_train_length,
        "context": cfg.resolved_context,
        "test_seed": TEST_SEED,
        "models": {
            str(v): {p: c.to_dict() for p, c in by_preset.items()} for v, by_preset in configs.items()
        },
    }
    # Seed-major order (`plan`): a run stopped by --max-minutes still holds every preset on the seeds
    # it finished.
    finished: dict[int, dict] = {}
    carried: list[dict] = []  # other slices' models (presets, seeds): kept in the results, not trained here
    if cfg.resume and (out / "results.json").exists():
        vocab = {(s.task, s.train_length): str(s.vocab) for s in settings}

        def key(r):
            return r["seed"], r["task"], r["train_length"], r["preset"]

        def model(r):
            return vocab.get((r["task"], r["train_length"])), r["preset"]

        kept = resumable_runs(out / "results.json", resolved, key=key, model=model)
        keys = [(seed, s.task, s.train_length, preset) for seed, s, preset in plan]
        finished = {i: kept[k] for i, k in enumerate(keys) if k in kept}
        carried, models = unplanned_runs(out / "results.json", resolved, set(keys), key=key, model=model)
        for name, by_preset in models.items():
            resolved["models"][name] = {**by_preset, **resolved["models"].get(name, {})}
        log(
            f"resuming {out}: {len(finished)} of {len(plan)} models already trained there"
            + (f", {len(carried)} more of other presets or seeds kept" if carried else "")
        )
    # after the resume check, so that a refused --resume leaves the directory's config.json as it was
    header = start_results(out, cfg.suite, device, resolved, metric=PROTOCOLS[cfg.suite].metric)
    settings_json = json.loads(to_json(resolved))
    deadline = None if cfg.max_minutes is None else time.monotonic() + 60 * cfg.max_minutes
    resumed, paused = len(finished), []
    start = time.perf_counter()

    order = {p: i for i, p in enumerate(cfg.presets)}
    setting_order = {(s.task, s.train_length): i for i, s in enumerate(settings)}

    def all_runs() -> list[dict]:
        """This call's finished models and the other slices', in the plan's order (seed-major)."""
        return sorted(
            carried + [finished[i] for i in sorted(finished)],
            key=lambda r: (
                r["seed"],
                setting_order.get((r["task"], r["train_length"]), len(setting_order)),
                order.get(r["preset"], len(order)),
            ),
        )

    def record(index: int, run: dict) -> None:
        if "paused_at" in run:
            paused.append(run)
            log(
                f"paused {run['preset']} seed {run['seed']} {run['task']} at step {run['paused_at']} of "
                f"{cfg.steps} (--max-minutes); --resume continues it from {partials[index]}"
            )
            return
        finished[index] = run
        write_text_atomic(out / "results.json", to_json({**header, "complete": False, "runs": all_runs()}))
        shutil.rmtree(partials[index], ignore_errors=True)  # its result is on disk now
        done, elapsed = len(finished), time.perf_counter() - start
        log(
            f"[{done}/{len(plan)}] {run['preset']} seed {run['seed']} {run['task']}: "
            + ", ".join(f"{r['label']} {_shown(r, header['metric'])}" for r in run["results"])
            + f" ({run['seconds']:.1f}s; ~{elapsed / (done - resumed) * (len(plan) - done) / 60:.1f} min left)"
        )

    failed: list[dict] = []

    def fail(index: int, error: BaseException) -> None:
        # One model running out of memory should not cost the others' results.
        seed, setting, preset = plan[index]
        failed.append({"preset": preset, "seed": seed, "task": setting.task, "error": repr(error)[:500]})
        log(f"FAILED {preset} seed {seed} {setting.task}: {error!r}"[:500])

    jobs = [
        (
            i,
            (
                cfg,
                setting,
                preset,
                configs[setting.vocab][preset],
                seed,
                device,
                Partial(partials[i], settings_json, deadline),
            ),
        )
        for i, (seed, setting, preset) in enumerate(plan)
        if i not in finished
    ]
    for index, args in jobs:
        check_partial(partials[index], settings_json, (str(args[1].vocab), args[2]), log)

    def may_start(_args: tuple) -> bool:
        return may_start_another(deadline, paused)

    if cfg.jobs == 1:
        for index, args in jobs:
            if not may_start(args):
                break
            try:
                run = _one_run(*args)
            except RuntimeError as error:  # e.g. CUDA out of memory
                fail(index, error)
            else:
                record(index, run)
    else:
        run_parallel(jobs, cfg.jobs, record, fail, may_start=may_start)
    if len(finished) + len(failed) < len(plan):
        log(f"stopped after {len(finished) + len(failed)}/{len(plan)} models: --max-minutes had passed")
    runs = all_runs()
    summary = summarise(runs, header["metric"])
    results = {
        **header,
        "complete": len(finished) == len(plan),  # this call's plan
        "runs": runs,
        "failed": failed,
        "summary": summary,
    }
    write_text_atomic(out / "results.json", to_json(results))
    write_text_atomic(out / "results.md", results_markdown(results))
    plot = plot_results(results, out)
    log(f"wrote {out / 'results.json'}, {out / 'results.md'}, {plot}")
    return results


def start_results(out: Path, suite: str, device: torch.device, resolved: dict, **extra) -> dict:
    """Write the resolved config.json into ``out``; return the header every suite's results.json opens with."""
    write_text_atomic(out / "config.json", json.dumps(resolved, indent=2) + "\n")
    return {
        "suite": suite,
        **extra,
        "date": datetime.now().isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "hope": hope.__version__,
        "config": resolved,
    }


def run_parallel(
    jobs: list,
    workers: int,
    record: Callable,
    fail: Callable,
    runner: Callable | None = None,
    may_start: Callable[[tuple], bool] = lambda args: True,
) -> None:
    """Runs ``runner(*args)`` (default: this suite driver's one run) for each ``(index, args)`` in
    ``workers`` spawned processes, in order, starting none that ``may_start`` refuses (it gets the
    job's ``args``); ``record`` gets each result, ``fail`` each RuntimeError. ``runner`` must
    be a module-level function (spawned processes import it). Small models leave a GPU idle between
    kernel launches, so processes sharing it train several models in little more than the time of one."""
    runner = runner or _one_run
    threads = max(1, (os.cpu_count() or 1) // workers)
    queue, running = list(jobs), {}
    with futures.ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=torch.set_num_threads,
        initargs=(threads,),
    ) as pool:
        while queue or running:
            while queue and len(running) < workers:
                index, args = queue.pop(0)
                if not may_start(args):
                    queue.clear()
                    break
                running[pool.submit(runner, *args)] = index
            if not running:
                break
            done, _ = futures.wait(running, return_when=futures.FIRST_COMPLETED)
            for future in done:
                index, error = running.pop(future), future.exception()
                if error is None:
                    record(index, future.result())
                elif isinstance(error, RuntimeError):
                    fail(index, error)
                else:
                    raise error


def _one_run(
    cfg: BenchConfig,
    setting: _Setting,
    preset: str,
    model_cfg: ModelConfig,
    seed: int,
    device,
    partial: Partial | None = None,
) -> dict:
    torch.manual_seed(seed)
    model = hope.build_model(model_cfg)
    if setting.bottleneck:
        model = BottleneckReadout(model, setting.train_length)
    model = model.to(device)
    began = time.perf_counter()
    trained = train_model(model, cfg, setting.task, setting.train_length, seed, device, partial)
    if "paused_at" in trained:
        return {"preset": preset, "seed": seed, "task": setting.task, **trained}
    earlier = trained.pop("earlier_seconds")
    context = cfg.resolved_context if model_cfg.block in ATTENTION_BLOCKS else None
    results = []
    for lo, hi, examples in setting.tests:
        if context is not None and hi is not None and hi > context:
            results.append(beyond_context(cfg.suite, lo, hi, examples, context))
            continue
        metrics = evaluate(
            model,
            cfg.suite,
            examples,
            device=device,
            batch_size=cfg.batch_size,
            piece=cfg.piece,
            precision=cfg.precision,
        )
        results.append({"min_length": lo, "length": hi, "label": label(lo, hi), **metrics})
    return {
        "preset": preset,
        "seed": seed,
        "task": setting.task,
        "train_length": setting.train_length,
        "params": model.num_parameters(),
        "d_model": model_cfg.d_model,
        "n_layers": model_cfg.n_layers,
        "seconds": earlier + time.perf_counter() - began,
        "context": context,
        **trained,
        "results": results,
    }


def beyond_context(suite: str, lo: int | None, hi: int, examples: list[Example], context: int) -> dict:
    """The result row of a test length past an attention model's ``context``: not evaluated, so the
    suite's metrics are None; ``beyond_context`` names the context, and the chance level stays."""
    module = get_suite(suite)
    return {
        "min_length": lo,
        "length": hi,
        "label": label(lo, hi),
        PROTOCOLS[suite].metric: None,
        "n": float(len(examples)),
        "chance": module.chance(examples),
        "beyond_context": context,
    }


def _shown(row: dict, metric: str) -> str:
    return "beyond context" if row.get("beyond_context") else f"{row[metric]:.3f}"
