"""``hope train``: one option per :class:`~hope.train.TrainConfig` field (name, help, bounds and the
``--resume`` rule read off the field), plus ``--resume`` and the dotted ``--section.field VALUE``
options (model fields; ``--optim.NAME`` for the optimizer's hyper-parameters)."""

import argparse
import dataclasses
import sys
from typing import Any

from hope.cli.args import PROG, dotted_options, non_negative_int, positive_int
from hope.train.config import TrainConfig


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "train",
        allow_abbrev=False,
        help="train a model (no arguments: HOPE at size quick on the built-in Shakespeare corpus, CPU, ~1.5 min; --minutes M sizes a run to a budget)",
        description="Train a language model. Without arguments: the HOPE preset at size quick (one block of "
        "width 64) on the built-in corpus. "
        "Override any model field with a dotted option, e.g. --titans.chunk_size 16 --model.d_model 64 "
        "--cms.chunk_sizes 16,64.",
        epilog="torchrun --nproc_per_node N -m hope train ... trains with DDP (or FSDP2 with --fsdp); "
        "--batch-size is the global batch, split over processes and --grad-accum.",
    )
    # Every option defaults to None so that we can tell what was given explicitly (matters for --resume).
    for f in _options():
        help = f.metadata["help"]
        if f.default is not None and f.default is not dataclasses.MISSING and f.type is not bool:
            help = f"{help} (default: {f.default})"
        p.add_argument("--" + f.name.replace("_", "-"), default=None, help=help, **_argparse_kind(f))
    p.add_argument(
        "--resume",
        default=None,
        metavar="RUN_DIR",
        help="continue the run in this directory from its newest checkpoint",
    )
    return p


def _options() -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(TrainConfig) if "help" in f.metadata]


def _argparse_kind(f: dataclasses.Field) -> dict[str, Any]:
    if f.type is bool:
        return {"action": "store_true"}
    if f.type == list[str]:
        return {"nargs": "+", "metavar": "PATH"}
    if "choices" in f.metadata:
        return {"choices": f.metadata["choices"]}
    if f.type in (int, int | None):
        return {"type": positive_int if f.metadata["lo"] >= 1 else non_negative_int}
    if f.type in (float, float | None):
        return {"type": float}  # bounds are TrainConfig's to check, naming the field
    return {}


def build_config(parser: argparse.ArgumentParser, args: argparse.Namespace, extra: list[str]) -> TrainConfig:
    """The run's TrainConfig: a new one from the options, or with ``--resume`` the saved one with the
    options that may change on a resume (the fields marked resumable)."""
    from hope.train import load_train_config

    given = {f.name: getattr(args, f.name) for f in _options() if getattr(args, f.name) is not None}
    overrides = dotted_options(parser, extra)
    if args.resume is not None:
        resumable = [f.name for f in _options() if f.metadata["resumable"]]
        refused = sorted(set(given) - set(resumable)) + sorted(overrides)
        if refused:
            parser.error(
                f"--resume continues a run with its saved configuration; it cannot change "
                f"{', '.join(refused)} (allowed: {', '.join(resumable)})"
            )
        cfg = load_train_config(args.resume)
        if "steps" in given or "tokens" in given:
            cfg.steps = cfg.tokens = cfg.minutes = None
        for key, value in given.items():
            setattr(cfg, key, value)
        cfg.validate()
        return cfg
    optim = {k.removeprefix("optim."): v for k, v in overrides.items() if k.startswith("optim.")}
    model = {k: v for k, v in overrides.items() if not k.startswith("optim.")}
    cfg = TrainConfig(**given, model_overrides=model, optimizer_args=optim)
    # Resolve the model now, so a bad override fails before any data is read.
    from hope.data.tokenizer import bpe_vocab_size

    cfg.model_config(bpe_vocab_size(cfg.tokenizer) or 256)
    return cfg


def command(parser: argparse.ArgumentParser, args: argparse.Namespace, extra: list[str]) -> int:
    from hope.train import TrainingDiverged, train

    try:
        cfg = build_config(parser, args, extra)
    except (ValueError, FileNotFoundError) as e:
        parser.error(str(e))
    try:
        train(cfg, resume=args.resume is not None)
    except (ValueError, FileNotFoundError, FileExistsError, TrainingDiverged) as e:
        print(f"{PROG} train: error: {e}", file=sys.stderr)
        return 1
    return 0
