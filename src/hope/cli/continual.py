"""``hope bench-suite continual``: the options it adds to the ``bench-suite`` parser, and the command
(:mod:`hope.bench.continual` does the work)."""

from __future__ import annotations

import argparse
import sys

from hope.bench.continual import SCENARIOS, SUITE, ContinualConfig, run_continual
from hope.cli.args import dotted_options, positive_int

_ELSEWHERE = {"lengths": "--lengths", "train_length": "--train-length", "max_minutes": "--max-minutes"}
"""``bench-suite`` options that have no meaning for a continual run (its stages fix what is trained on)."""


def add_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "continual",
        f"bench-suite {SUITE} trains each model on the tasks one after another (--steps per stage) and "
        f"evaluates every task after every stage; --tasks picks the scenarios ({', '.join(SCENARIOS)}).",
    )
    group.add_argument(
        "--n-tasks",
        type=positive_int,
        default=None,
        help="class-incremental tasks, learned in order (default: 5; at least 2)",
    )
    group.add_argument(
        "--n-train", type=positive_int, default=None, help="training examples per task (default: 256)"
    )
    group.add_argument(
        "--save-stages",
        action="store_true",
        help="save every stage's model under OUT/stages/<scenario>/<preset>-seed<k>/",
    )


def refuse_outside(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The continual options name no field of the other suites: refuse them there rather than ignore them."""
    for dest, flag in {
        "n_tasks": "--n-tasks",
        "n_train": "--n-train",
        "save_stages": "--save-stages",
    }.items():
        if getattr(args, dest):
            parser.error(f"{flag} applies only to bench-suite {SUITE}, not to {args.suite}")


def command(parser: argparse.ArgumentParser, args: argparse.Namespace, extra: list[str]) -> int:
    """Runs ``hope bench-suite continual`` from parsed ``bench-suite`` arguments; model fields for every
    preset come as dotted options in ``extra`` (``--model.impl chunked``), as for the other suites."""
    overrides = dotted_options(parser, extra)
    for dest, flag in _ELSEWHERE.items():
        if getattr(args, dest) is not None:
            parser.error(f"{flag} does not apply to bench-suite {SUITE}")
    if args.jobs != 1:
        parser.error(f"--jobs does not apply to bench-suite {SUITE} (its models train one after another)")
    if args.resume:
        parser.error(f"--resume does not apply to bench-suite {SUITE}")
    if args.cuda_graphs:
        parser.error(f"--cuda-graphs does not apply to bench-suite {SUITE}")
    if args.partial_dir is not None:
        parser.error(f"--partial-dir does not apply to bench-suite {SUITE}")
    given = {"n_tasks": args.n_tasks, "n_train": args.n_train}
    try:
        cfg = ContinualConfig(
            presets=args.presets,
            scenarios=args.tasks,
            steps=args.steps,
            seeds=args.seeds,
            size=args.size,
            batch_size=args.batch_size,
            n_test=args.n_test,
            lr=args.lr,
            precision=args.precision,
            device=args.device,
            piece=args.piece,
            match=args.match,
            out=args.out,
            save_stages=args.save_stages,
            overrides=overrides,
            **{k: v for k, v in given.items() if v is not None},
        )
    except ValueError as e:
        parser.error(str(e))
    try:
        run_continual(cfg)
    except (ValueError, FileExistsError) as e:
        print(f"hope bench-suite: error: {e}", file=sys.stderr)
        return 1
    return 0
