"""``hope eval SUITE`` (zero-shot evaluation of a trained run) and ``hope bench-suite`` (train and compare
presets on a suite): their options and commands."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence

from hope.bench.protocols import BENCH_SUITES, PROTOCOLS, TEST_SEED, eval_examples, label, length_points
from hope.bench.report import to_json
from hope.bench.run import BenchConfig, run_bench
from hope.cli import continual, dissect
from hope.cli.args import add_shared, dotted_options, int_list, name_list, positive_int
from hope.config import PRESETS, SIZES
from hope.eval.predict import evaluate
from hope.suites import SUITES, get_suite


def _common_options(p: argparse.ArgumentParser, suites: Sequence[str]) -> None:
    tasks = "; ".join(f"{s}: {', '.join(get_suite(s).tasks)}" for s in suites)
    p.add_argument(
        "--tasks", type=name_list, default=None, help=f"comma-separated tasks (default: all; {tasks})"
    )
    p.add_argument(
        "--lengths",
        type=int_list(1),
        default=None,
        help="comma-separated test lengths: characters for niah/babi, letters per word for adapt, "
        "upper edges of string-length bins for formal, seq_len for mad (default: "
        + "; ".join(f"{s}: {_show(PROTOCOLS[s].lengths)}" for s in suites)
        + ")",
    )
    p.add_argument(
        "--batch-size", type=positive_int, default=32, help="examples per forward pass (default: 32)"
    )
    p.add_argument(
        "--piece",
        type=positive_int,
        default=2048,
        help="tokens per streamed piece of a long prompt (default: 2048)",
    )
    add_shared(p, "precision", "device")


def _show(lengths: Sequence[int | None]) -> str:
    return ",".join("MAD baseline" if x is None else str(x) for x in lengths)


def add_parsers(sub, eval_sub) -> dict[str, argparse.ArgumentParser]:
    """Adds ``eval SUITE`` (for every suite) under ``eval_sub`` and ``bench-suite`` under ``sub``."""
    parsers = {}
    for name in SUITES:
        p = eval_sub.add_parser(
            name,
            help=f"zero-shot {name} benchmark of a trained run",
            description=f"Zero-shot {name} evaluation of a run's newest checkpoint: prompts are streamed "
            "through the model state in pieces; answers are generated greedily, chosen among candidates or "
            "read per position, as the suite defines. Prints JSON (stdout) and a table (stderr).",
        )
        add_shared(p, "run")
        _common_options(p, [name])
        p.add_argument(
            "--n", type=positive_int, default=50, help="examples per task and length (default: 50)"
        )
        p.add_argument("--seed", type=int, default=TEST_SEED, help=f"example seed (default: {TEST_SEED})")
        parsers[f"eval {name}"] = p

    b = sub.add_parser(
        "bench-suite",
        help="train and compare presets on a benchmark suite",
        description="Per preset and seed: train a parameter-matched model on the suite's training "
        "distribution, test it on the test distribution (longer strings for formal, longer contexts for "
        "niah/babi, longer words for adapt), and write results.json, results.md (mean ± std over seeds), "
        "a plot and config.json into --out. Model fields for every preset are dotted options after SUITE, "
        "as for train: --titans.chunk_size 32 --model.impl chunked.",
    )
    suites = (*BENCH_SUITES, continual.SUITE, dissect.SUITE)
    b.add_argument("suite", choices=suites, metavar="SUITE", help=f"one of {', '.join(suites)}")
    b.add_argument(
        "--presets",
        type=name_list,
        default=("hope", "transformer", "titans"),
        help=f"comma-separated presets (default: hope,transformer,titans; any of {', '.join(PRESETS)})",
    )
    b.add_argument("--steps", type=positive_int, default=200, help="training steps per model (default: 200)")
    b.add_argument("--seeds", type=positive_int, default=3, help="seeds per preset (default: 3)")
    b.add_argument(
        "--size",
        choices=(*SIZES, *(s for s in dissect.SIZES if s not in SIZES)),
        default="tiny",
        help="model size preset (default: tiny; dissect: small or scaled, the study's sizes)",
    )
    b.add_argument(
        "--train-length",
        type=positive_int,
        default=None,
        help="training length (default: "
        + "; ".join(f"{s}: {PROTOCOLS[s].train_length}" for s in BENCH_SUITES if PROTOCOLS[s].train_length)
        + "; mad trains at each --lengths)",
    )
    b.add_argument(
        "--n-test", type=positive_int, default=100, help="test examples per task and length (default: 100)"
    )
    b.add_argument("--lr", type=float, default=1e-3, help="peak AdamW learning rate (default: 0.001)")
    b.add_argument(
        "--match",
        choices=("hope", "none"),
        default="hope",
        help="resize every preset to the hope preset's parameter count, or not (default: hope)",
    )
    b.add_argument(
        "--context",
        type=positive_int,
        default=None,
        help="babi: the longest test length (tokens) an attention preset (transformer, hope-attention) is "
        "evaluated at; longer lengths are reported as beyond its context (default: "
        + "; ".join(
            f"{s}: {PROTOCOLS[s].context_factor}x --train-length"
            for s in BENCH_SUITES
            if PROTOCOLS[s].context_factor
        )
        + "). Memory presets stream every length.",
    )
    b.add_argument("--out", default=None, help="output directory (default: bench/<suite>-<date>-<time>)")
    b.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        help="start no model past this wall time (dissect: nor one its preset's finished runs say cannot end "
        "in time), and pause one at a save whose next segment would end past it (--resume continues it); "
        "the tables cover what finished",
    )
    b.add_argument(
        "--jobs",
        type=positive_int,
        default=1,
        help="models trained at once, one process each; small models share a GPU well (default: 1)",
    )
    b.add_argument(
        "--cuda-graphs",
        action="store_true",
        help="replay each training step from CUDA graphs (hope.train.graphs; on the H200 at the dissection "
        "study's size, hope 4.3x and titans 1.6x faster); the suites pad training batches to a multiple "
        "of 64 tokens so that few shapes are captured",
    )
    b.add_argument(
        "--partial-dir",
        default=None,
        metavar="DIR",
        help="where a model in training keeps a checkpoint of its last save (dissect: each measurement; "
        "the other suites: each tenth of --steps), which --resume continues from (default: OUT/partial)",
    )
    b.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out: keep the models it finished (same settings; more --seeds or "
        "--presets, another --jobs or --max-minutes allowed) and train the rest",
    )
    _common_options(b, BENCH_SUITES)
    continual.add_options(b)
    dissect.add_options(b)
    parsers["bench-suite"] = b
    return parsers


def bench_command(parser: argparse.ArgumentParser, args: argparse.Namespace, extra: list[str]) -> int:
    """``hope bench-suite``: model fields for every preset come as dotted options (``--titans.chunk_size 32``)."""
    dissect.refuse_outside(parser, args)
    if args.suite == continual.SUITE:
        return continual.command(parser, args, extra)
    continual.refuse_outside(parser, args)
    if args.suite == dissect.SUITE:
        return dissect.command(parser, args, extra)
    args.overrides = dotted_options(parser, extra)
    # Every BenchConfig field that bench-suite has an option for, by the same name.
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(BenchConfig) if hasattr(args, f.name)}
    try:
        cfg = BenchConfig(**given)
    except ValueError as e:
        parser.error(str(e))
    try:
        results = run_bench(cfg)
    except (ValueError, FileExistsError) as e:
        print(f"hope bench-suite: error: {e}", file=sys.stderr)
        return 1
    return 1 if results["failed"] else 0


def eval_command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """``hope eval SUITE``: zero-shot evaluation of a run's newest checkpoint."""
    from hope.distributed import pick_device
    from hope.train import load_for_inference

    suite = get_suite(args.suite)
    tasks = args.tasks or suite.tasks
    try:
        for task in tasks:
            if task not in suite.tasks:
                raise ValueError(f"--tasks must be from {', '.join(suite.tasks)}; got {task!r}")
        device = pick_device(args.device)
        model, tokenizer, _, step = load_for_inference(args.run, device)
    except (ValueError, FileNotFoundError) as e:
        parser.error(str(e))
    results = []
    for task in tasks:
        for lo, hi in length_points(args.suite, args.lengths or PROTOCOLS[args.suite].lengths):
            try:
                examples = eval_examples(args.suite, task, args.n, lo, hi, args.seed)
                metrics = evaluate(
                    model,
                    args.suite,
                    examples,
                    tokenizer=tokenizer,
                    device=device,
                    batch_size=args.batch_size,
                    piece=args.piece,
                    precision=args.precision,
                )
            except ValueError as e:
                parser.error(f"{task} at length {label(lo, hi)}: {e}")
            hi = hi or examples[0].meta.get("seq_len")  # MAD's default length, named
            results.append({"task": task, "label": label(lo, hi), "min_length": lo, "length": hi, **metrics})
            shown = {k: v for k, v in metrics.items() if k != "n"}
            print(
                f"{task:>24} {label(lo, hi):>8}  " + "  ".join(f"{k} {v:.4g}" for k, v in shown.items()),
                file=sys.stderr,
            )
    print(
        to_json(
            {"run": str(args.run), "step": step, "suite": args.suite, "seed": args.seed, "results": results}
        ),
        end="",
    )
    return 0
