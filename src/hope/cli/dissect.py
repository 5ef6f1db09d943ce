"""``hope bench-suite dissect``: the options it adds to the ``bench-suite`` parser, and the command
(:mod:`hope.bench.dissect` does the work)."""

from __future__ import annotations

import argparse
import sys

from hope.bench.dissect import PRESETS, SIZES, SUITE, DissectConfig, run_dissect
from hope.cli.args import dotted_options, positive_int

_OWN = {
    "measure_every": "--measure-every",
    "measure_batch": "--measure-batch",
    "val_batches": "--val-batches",
    "data": "--data",
    "tokenizer": "--tokenizer",
}
"""The options only dissect has."""
_SHARED = {
    "presets": "presets",
    "steps": "steps",
    "seeds": "seeds",
    "batch_size": "batch_size",
    "lr": "lr",
    "match": "match",
    "jobs": "jobs",
    "precision": "precision",
    "device": "device",
    "piece": "piece",
    "out": "out",
    "train_length": "context",
    "resume": "resume",
    "max_minutes": "max_minutes",
    "cuda_graphs": "cuda_graphs",
    "partial_dir": "partial_dir",
}
"""``bench-suite`` options dissect reads (dest: DissectConfig field); left at bench-suite's default,
each takes the study's value (DissectConfig's default) instead."""
_ELSEWHERE = {
    "tasks": "--tasks does not apply to bench-suite dissect",
    "lengths": "--lengths does not apply to bench-suite dissect",
    "context": "--context does not apply to bench-suite dissect (its context is --train-length)",
}


def add_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        SUITE,
        f"bench-suite {SUITE} --size {'|'.join(SIZES)} trains the 'Dissecting HOPE' study's presets "
        f"({', '.join(PRESETS)}) at its scale on the built-in corpus and measures them every "
        "--measure-every steps. Shared options left at their bench-suite default take the study's value: "
        "all six presets, --steps 2000, --batch-size 8, --lr 3e-4, --train-length 512 (the context), "
        "--match none.",
    )
    group.add_argument(
        "--measure-every", type=positive_int, default=None, help="steps between measurements (default: 200)"
    )
    group.add_argument(
        "--measure-batch",
        type=positive_int,
        default=None,
        help="validation windows the measurements read (default: 4)",
    )
    group.add_argument(
        "--val-batches",
        type=positive_int,
        default=None,
        help="validation batches per checkpoint (default: the whole validation split)",
    )
    group.add_argument(
        "--data", nargs="+", default=None, metavar="PATH", help="training text (default: builtin)"
    )
    group.add_argument(
        "--tokenizer",
        default=None,
        help="bpe:N (learned on the training split, as hope train), byte or a tokenizer.json "
        "(default: bpe:32768)",
    )


def refuse_outside(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The dissect options name no field of the other suites: refuse them there rather than ignore them."""
    if args.suite == SUITE:
        return
    for dest, flag in _OWN.items():
        if getattr(args, dest) is not None:
            parser.error(f"{flag} applies only to bench-suite {SUITE}, not to {args.suite}")


def command(parser: argparse.ArgumentParser, args: argparse.Namespace, extra: list[str]) -> int:
    """Runs ``hope bench-suite dissect`` from parsed ``bench-suite`` arguments; model fields for every
    preset come as dotted options in ``extra``, as for the other suites."""
    overrides = dotted_options(parser, extra)
    for dest, message in _ELSEWHERE.items():
        if getattr(args, dest, None) is not None:
            parser.error(message)
    if args.n_test != parser.get_default("n_test"):
        parser.error(f"--n-test does not apply to bench-suite {SUITE} (it validates on the whole split)")
    if args.size not in SIZES:
        parser.error(f"bench-suite {SUITE} needs --size {' or --size '.join(SIZES)} (the study's sizes)")
    given = {
        field: getattr(args, dest)
        for dest, field in _SHARED.items()
        if getattr(args, dest) is not None and getattr(args, dest) != parser.get_default(dest)
    }
    given.update({dest: getattr(args, dest) for dest in _OWN if getattr(args, dest) is not None})
    try:
        cfg = DissectConfig(size=args.size, overrides=overrides, **given)
    except ValueError as e:
        parser.error(str(e))
    try:
        results = run_dissect(cfg)
    except (ValueError, FileExistsError, FileNotFoundError) as e:
        print(f"hope bench-suite: error: {e}", file=sys.stderr)
        return 1
    return 1 if results["failed"] else 0
