"""The ``hope`` command: ``train`` (``hope.cli.train``); ``generate``, ``eval lm`` and ``retention``
(``hope.cli.runs``); ``eval SUITE`` and ``bench-suite`` (``hope.cli.suites``); ``export`` (``hope.hf``);
``convert`` (``hope.convert``).

Every command that builds models (``train``, ``bench-suite``) takes config fields in one syntax, a
dotted option after the subcommand: ``--titans.chunk_size 16``, ``--model.d_model 64`` (top-level
model fields), ``--cms.chunk_sizes 16,64``, and for ``train`` ``--optim.NAME VALUE`` (``hope.cli.args``).
"""

import argparse
import sys

from hope.cli import runs, suites, train
from hope.cli.args import PROG, dotted_options


def _cmd_export(parser, args) -> int:
    """`hope export`: the command lives in hope.hf (imported only here, as it needs the hf extra)."""
    try:
        from hope.hf import export
    except ImportError as e:
        parser.error(str(e))
    return export.cmd_export(parser, args)


def _cmd_convert(parser, args, extra: list[str]) -> int:
    """`hope convert`: bad input (no run, no checkpoint, not a transformer, a bad option) is one line on stderr."""
    from hope.convert import convert_run

    try:
        out, step = convert_run(args.run, args.out, dotted_options(parser, extra))
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        parser.error(str(e))
    print(
        f"converted {args.run} (step {step}) to the HOPE-Attention run {out}; continue it with "
        f"hope train --resume {out} --steps N",
        file=sys.stderr,
    )
    return 0


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Nested Learning / HOPE in PyTorch: train, sample, evaluate."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    parsers = {"train": train.add_parser(sub)}
    esub = runs.add_parsers(sub, parsers)

    x = sub.add_parser(
        "export",
        help="a run as a Hugging Face save_pretrained folder (needs the hf extra)",
        description="Write a run's newest checkpoint as a transformers save_pretrained folder: HopeConfig, "
        "safetensors weights and the tokenizer as a PreTrainedTokenizerFast (see hope.hf).",
    )
    x.add_argument("--run", required=True, help="run directory (e.g. runs/latest)")
    x.add_argument("--out", required=True, help="folder to write (must not exist or be empty)")
    parsers["export"] = x
    c = sub.add_parser(
        "convert",
        help="a trained transformer run as a HOPE-Attention run (paper §7.3)",
        description="Turn a Transformer++ run's newest checkpoint into a HOPE-Attention run: each block's "
        "MLP becomes the slowest CMS level, faster levels start as the identity (see hope.convert). "
        "cms.* fields of the result as dotted options, e.g. --cms.chunk_sizes 16,64 --cms.error none.",
    )
    c.add_argument("--run", required=True, help="transformer run directory (e.g. runs/latest)")
    c.add_argument("--out", required=True, help="run directory to write (must not exist or be empty)")
    parsers["convert"] = c
    parsers.update(suites.add_parsers(sub, esub))
    return parser, parsers


def main(argv: list[str] | None = None) -> int:
    parser, parsers = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "train":
        return train.command(parsers["train"], args, extra)
    if args.command == "bench-suite":
        return suites.bench_command(parsers["bench-suite"], args, extra)
    if args.command == "convert":
        return _cmd_convert(parsers["convert"], args, extra)
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command in ("generate", "retention") or (args.command == "eval" and args.suite == "lm"):
        return runs.command(parsers, args)
    if args.command == "export":
        return _cmd_export(parsers["export"], args)
    return suites.eval_command(parsers[f"eval {args.suite}"], args)


if __name__ == "__main__":
    sys.exit(main())
