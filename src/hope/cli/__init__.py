"""The ``hope`` command: ``train``, ``generate``, ``eval lm``, ``retention``, ``eval SUITE`` and ``bench-suite``
(the last two in ``hope.cli.suites``).

Model fields are overridden with dotted options after the subcommand, mapped onto
``ModelConfig.preset(name, size, **overrides)``: ``--titans.chunk_size 16``, ``--model.d_model 64``,
``--cms.chunk_sizes 16,64``.
"""

import argparse
import dataclasses
import json
import sys

from hope.argtypes import non_negative_float, non_negative_int, positive_int, probability

PROG = "hope"
# With --resume the run keeps its saved configuration; these options may still change (schedule length,
# bookkeeping, where it runs). Everything else would silently break the promise of an exact resume.
RESUMABLE = (
    "steps",
    "tokens",
    "eval_every",
    "eval_batches",
    "save_every",
    "keep_checkpoints",
    "log_every",
    "compile",
    "device",
    "sample_prompt",
    "sample_tokens",
)


def _train_parser(sub) -> argparse.ArgumentParser:
    from hope.train.config import DEFAULT_STEPS, TrainConfig

    defaults = {
        f.name: f.default for f in dataclasses.fields(TrainConfig) if f.default is not dataclasses.MISSING
    }
    p = sub.add_parser(
        "train",
        allow_abbrev=False,
        help="train a model (no arguments: tiny HOPE on the built-in Shakespeare corpus, CPU, ~5 min)",
        description="Train a language model. Without arguments: the tiny HOPE preset on the built-in corpus. "
        "Override any model field with a dotted option, e.g. --titans.chunk_size 16 --model.d_model 64 "
        "--cms.chunk_sizes 16,64.",
        epilog="torchrun --nproc_per_node N -m hope train ... trains with DDP (or FSDP2 with --fsdp); "
        "--batch-size is the global batch, split over processes and --grad-accum.",
    )

    # Every option defaults to None so that we can tell what was given explicitly (matters for --resume).
    def opt(flag, help, **kw):
        field = flag.lstrip("-").replace("-", "_")
        if defaults.get(field) is not None and "action" not in kw:
            help = f"{help} (default: {defaults[field]})"
        p.add_argument(flag, default=None, help=help, **kw)

    opt(
        "--preset",
        "architecture preset: hope, hope-no-cms, hope-no-selfmod, hope-no-surprise, hope-attention, "
        "titans, transformer",
    )
    opt("--size", "size preset: tiny, small, 125m, 350m, 760m")
    opt(
        "--data",
        "training text: builtin, .txt/.jsonl files, pre-tokenised .bin (uint16) files, or globs",
        nargs="+",
        metavar="PATH",
    )
    opt("--tokenizer", "byte, bpe:N (trained on the training text, saved in the run), or a tokenizer.json")
    opt("--val-fraction", "fraction of the data held out for validation", type=probability)
    opt("--seq-len", "tokens per training sequence", type=positive_int)
    opt("--batch-size", "global sequences per optimizer step", type=positive_int)
    opt("--grad-accum", "micro-batches accumulated per optimizer step", type=positive_int)
    opt("--steps", f"optimizer steps (default: {DEFAULT_STEPS})", type=positive_int)
    opt("--tokens", "training tokens instead of --steps (rounded up to whole steps)", type=positive_int)
    opt("--lr", "peak learning rate", type=float)
    opt("--min-lr-ratio", "final learning rate as a fraction of --lr (cosine schedule)", type=float)
    opt("--warmup-steps", "linear warm-up steps (default: 5%% of the steps)", type=non_negative_int)
    opt("--weight-decay", "decoupled weight decay on matrices", type=non_negative_float)
    opt("--grad-clip", "clip the global gradient norm to this (0: off)", type=non_negative_float)
    opt(
        "--optimizer",
        "adamw, muon, m3, dgd, delta_momentum or deep_momentum (hope.optim); their "
        "hyper-parameters as dotted options, e.g. --optim.betas 0.9,0.999,0.9 --optim.frequency 10 "
        "--optim.alpha 0.5 for m3 (defaults: hope.optim.OPTIMIZER_DEFAULTS)",
    )
    opt("--precision", "fp32 or bf16 (autocast)", choices=("fp32", "bf16"))
    opt("--compile", "torch.compile the model", action="store_true")
    opt("--fsdp", "under torchrun, shard with FSDP2 instead of DDP", action="store_true")
    opt("--device", "auto, cpu or cuda", choices=("auto", "cpu", "cuda"))
    opt("--eval-every", "validate every N steps (0: only at the end)", type=non_negative_int)
    opt("--eval-batches", "validation batches per evaluation", type=positive_int)
    opt("--save-every", "checkpoint every N steps (0: only at the end)", type=non_negative_int)
    opt("--keep-checkpoints", "how many recent checkpoints to keep", type=positive_int)
    opt("--log-every", "write metrics every N steps", type=positive_int)
    opt("--sample-prompt", "prompt for the sample printed after training")
    opt("--sample-tokens", "tokens to sample after training (0: none)", type=non_negative_int)
    opt("--out", "run directory (default: runs/<date>-<time>-<preset>, and runs/latest points to it)")
    opt("--resume", "continue the run in this directory from its newest checkpoint", metavar="RUN_DIR")
    opt("--seed", "random seed (model init, data order, sampling)", type=non_negative_int)
    return p


def _parse_override_value(text: str):
    """JSON where it parses (16, 0.5, true, [16, 64]), a comma list of those (16,64), else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    if "," in text:
        return [_parse_override_value(part) for part in text.split(",") if part]
    return text


def _model_overrides(parser: argparse.ArgumentParser, extra: list[str]) -> dict:
    overrides, i = {}, 0
    while i < len(extra):
        arg = extra[i]
        key, eq, value = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        if "." not in key:
            parser.error(
                f"unrecognized argument {arg!r} (model fields take a dotted name: --model.d_model 64, "
                "--titans.chunk_size 16)"
            )
        if not eq:
            if i + 1 >= len(extra):
                parser.error(f"{arg} needs a value")
            i += 1
            value = extra[i]
        overrides[key.removeprefix("model.")] = _parse_override_value(value)
        i += 1
    return overrides


def _split_optimizer_args(overrides: dict) -> tuple[dict, dict]:
    """`--optim.NAME VALUE` options are optimizer hyper-parameters; every other dotted option is a model field."""
    optim = {k.removeprefix("optim."): v for k, v in overrides.items() if k.startswith("optim.")}
    return {k: v for k, v in overrides.items() if not k.startswith("optim.")}, optim


def _build_train_config(parser, args, extra):
    from hope.train import TrainConfig, load_train_config

    given = {k: v for k, v in vars(args).items() if v is not None and k not in ("command", "resume")}
    overrides = _model_overrides(parser, extra)
    if args.resume is not None:
        refused = sorted(set(given) - set(RESUMABLE)) + sorted(overrides)
        if refused:
            parser.error(
                f"--resume continues a run with its saved configuration; it cannot change "
                f"{', '.join(refused)} (allowed: {', '.join(RESUMABLE)})"
            )
        cfg = load_train_config(args.resume)
        if "steps" in given or "tokens" in given:
            cfg.steps = cfg.tokens = None
        for key, value in given.items():
            setattr(cfg, key, value)
        cfg.validate()
        return cfg
    overrides, optimizer_args = _split_optimizer_args(overrides)
    cfg = TrainConfig(**given, model_overrides=overrides, optimizer_args=optimizer_args)
    # Resolve the model now, so a bad override fails before any data is read.
    from hope.data.tokenizer import bpe_vocab_size

    cfg.model_config(bpe_vocab_size(cfg.tokenizer) or 256)
    return cfg


def _cmd_train(parser, args, extra) -> int:
    from hope.train import TrainingDiverged, train

    try:
        cfg = _build_train_config(parser, args, extra)
    except (ValueError, FileNotFoundError) as e:
        parser.error(str(e))
    try:
        train(cfg, resume=args.resume is not None)
    except (ValueError, FileNotFoundError, FileExistsError, TrainingDiverged) as e:
        print(f"{PROG} train: error: {e}", file=sys.stderr)
        return 1
    return 0


def _cmd_generate(parser, args) -> int:
    import torch

    from hope.distributed import pick_device
    from hope.generate import stream
    from hope.train import load_for_inference

    try:
        device = pick_device(args.device)
        model, tokenizer, _, _ = load_for_inference(args.run, device)
    except (ValueError, FileNotFoundError) as e:
        parser.error(str(e))
    generator = torch.Generator(device=device).manual_seed(args.seed)
    sys.stdout.write(args.prompt)
    try:
        for piece in stream(
            model,
            tokenizer,
            args.prompt,
            args.max_tokens,
            args.temperature,
            args.top_k,
            args.top_p,
            device,
            generator,
        ):
            sys.stdout.write(piece)
            sys.stdout.flush()
    except ValueError as e:
        parser.error(str(e))
    sys.stdout.write("\n")
    return 0


def _cmd_eval_lm(parser, args) -> int:
    import numpy as np

    from hope.data.loader import check_long_enough
    from hope.data.tokenizer import token_byte_lengths
    from hope.data.tokens import read_text, read_token_file, resolve_sources
    from hope.distributed import pick_device
    from hope.eval.lm import evaluate_lm
    from hope.train import load_for_inference

    try:
        device = pick_device(args.device)
        model, tokenizer, cfg, step = load_for_inference(args.run, device)
        sources = resolve_sources(args.data)
        if sources[0].endswith(".bin"):
            tokens = np.concatenate([read_token_file(s, tokenizer.vocab_size) for s in sources])
        else:
            tokens = tokenizer.encode("\n\n".join(read_text(s) for s in sources))
        seq_len = args.seq_len or cfg.seq_len
        check_long_enough(tokens, seq_len, "evaluation")
    except (ValueError, FileNotFoundError) as e:
        parser.error(str(e))
    result = evaluate_lm(
        model,
        tokens,
        seq_len,
        args.batch_size,
        token_byte_lengths(tokenizer),
        device,
        args.max_batches,
        args.precision,
    )
    result = {"run": str(args.run), "step": step, "data": args.data, "seq_len": seq_len, **result}
    print(json.dumps(result))
    print(
        f"loss {result['loss']:.4f}  perplexity {result['ppl']:.2f}  bits/byte {result['bpb']:.4f}  "
        f"{result['tokens']:,} tokens at {result['tok_per_s']:,.0f} tok/s",
        file=sys.stderr,
    )
    return 0


def _int_list(text: str) -> list[int]:
    values = [non_negative_int(v) for v in text.split(",") if v]
    if not values:
        raise argparse.ArgumentTypeError(f"must be comma-separated integers >= 0, got {text!r}")
    return values


def _cmd_retention(parser, args) -> int:
    import datetime
    import time

    from hope.analysis import retention
    from hope.distributed import pick_device

    presets = [p for p in args.presets.split(",") if p]
    runs = [r for r in args.runs.split(",") if r]
    if not presets and not runs:
        parser.error("give --presets and/or --runs")
    try:
        device = pick_device(args.device)
        models = retention.load_models(runs, presets, args.size, args.seed, device)
    except (ValueError, FileNotFoundError) as e:
        parser.error(str(e))
    results = {
        "date": datetime.date.today().isoformat(),
        "device": _device_name(device),
        "args": {**vars(args), "lengths": sorted(set(args.lengths) | {0})},
        "models": {},
    }
    for label, model, tokenizer in models:
        start = time.perf_counter()
        distractor = retention.distractor_tokens(tokenizer, max(args.lengths))
        try:
            r = retention.retention_probe(
                model, tokenizer, distractor, args.lengths, args.pairs, args.piece, args.seed
            )
        except ValueError as e:  # e.g. a BPE that cannot encode two value sets to equal lengths
            parser.error(f"{label}: {e}")
        r["seconds"] = time.perf_counter() - start
        results["models"][label] = r
        cells = "  ".join(
            f"N={n}: {v:.2f}" for n, v in zip(r["lengths"], next(iter(r["retention"].values())))
        )
        print(f"{label}: {cells}  ({r['seconds']:.0f} s)", file=sys.stderr)
    retention.write_report(results, args.out)
    print(f"wrote {args.out}/results.md, results.json, retention.png, norms.png", file=sys.stderr)
    return 0


def _device_name(device) -> str:
    import platform

    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def _cmd_export(parser, args) -> int:
    """`hope export`: the command lives in hope.hf (imported only here, as it needs the hf extra)."""
    try:
        from hope.hf import export
    except ImportError as e:
        parser.error(str(e))
    return export.cmd_export(parser, args)


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Nested Learning / HOPE in PyTorch: train, sample, evaluate."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    parsers = {"train": _train_parser(sub)}

    g = sub.add_parser(
        "generate",
        help="stream text from a trained run",
        description="Stream text from a run's newest checkpoint: the prompt is read once, then "
        "each token is fed back with the model's state.",
    )
    g.add_argument("--run", required=True, help="run directory (e.g. runs/latest)")
    g.add_argument("--prompt", required=True, help="text to continue")
    g.add_argument("--max-tokens", type=positive_int, default=300, help="tokens to generate (default: 300)")
    g.add_argument("--temperature", type=non_negative_float, default=0.8, help="0 is greedy (default: 0.8)")
    g.add_argument("--top-k", type=positive_int, default=None, help="sample from the k most likely tokens")
    g.add_argument("--top-p", type=probability, default=None, help="nucleus sampling mass (e.g. 0.95)")
    g.add_argument("--seed", type=non_negative_int, default=0, help="sampling seed (default: 0)")
    g.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="(default: auto)")
    parsers["generate"] = g

    e = sub.add_parser("eval", help="evaluate a trained run", description="Evaluate a trained run.")
    esub = e.add_subparsers(dest="suite", metavar="SUITE", required=True)
    lm = esub.add_parser(
        "lm",
        help="loss, perplexity, bits per byte and tokens/s on a text or token file",
        description="Language-model evaluation of a run's newest checkpoint on local data "
        "(the whole file, non-overlapping windows): loss, perplexity, bits per byte, tokens/s.",
    )
    lm.add_argument("--run", required=True, help="run directory (e.g. runs/latest)")
    lm.add_argument(
        "--data",
        required=True,
        nargs="+",
        metavar="PATH",
        help="builtin, .txt/.jsonl or pre-tokenised .bin files, or globs",
    )
    lm.add_argument("--seq-len", type=positive_int, default=None, help="window length (default: the run's)")
    lm.add_argument(
        "--batch-size", type=positive_int, default=8, help="windows per forward pass (default: 8)"
    )
    lm.add_argument("--max-batches", type=positive_int, default=None, help="stop after this many batches")
    lm.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="(default: fp32)")
    lm.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="(default: auto)")
    parsers["eval"], parsers["eval lm"] = e, lm

    r = sub.add_parser(
        "retention",
        help="how long the in-context memories keep key=value pairs (probe, plots)",
        description="Write key=value pairs, stream N distractor tokens, read the keys back; report "
        "retention(N) and the memories' norms for trained runs and/or freshly initialised presets.",
    )
    r.add_argument("--runs", default="", help="comma-separated run directories (trained models)")
    r.add_argument("--presets", default="", help="comma-separated presets to probe freshly initialised")
    r.add_argument("--size", default="tiny", help="size of the fresh presets (default: tiny)")
    r.add_argument(
        "--lengths",
        type=_int_list,
        default=[0, 256, 1024, 4096, 16384, 65536],
        help="distractor lengths N, comma-separated (default: 0,256,1024,4096,16384,65536)",
    )
    r.add_argument("--pairs", type=positive_int, default=16, help="key=value pairs written (default: 16)")
    r.add_argument(
        "--piece", type=positive_int, default=1024, help="tokens per streamed call (default: 1024)"
    )
    r.add_argument("--seed", type=non_negative_int, default=0, help="pairs and fresh-model seed (default: 0)")
    r.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="(default: auto)")
    r.add_argument("--out", default="runs/retention", help="output directory (default: runs/retention)")
    parsers["retention"] = r

    x = sub.add_parser(
        "export",
        help="a run as a Hugging Face save_pretrained folder (needs the hf extra)",
        description="Write a run's newest checkpoint as a transformers save_pretrained folder: HopeConfig, "
        "safetensors weights and the tokenizer as a PreTrainedTokenizerFast (see hope.hf).",
    )
    x.add_argument("--run", required=True, help="run directory (e.g. runs/latest)")
    x.add_argument("--out", required=True, help="folder to write (must not exist or be empty)")
    parsers["export"] = x
    from hope.cli import suites

    parsers.update(suites.add_parsers(sub, esub))
    return parser, parsers


def main(argv: list[str] | None = None) -> int:
    parser, parsers = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "train":
        return _cmd_train(parsers["train"], args, extra)
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "generate":
        return _cmd_generate(parsers["generate"], args)
    if args.command == "retention":
        return _cmd_retention(parsers["retention"], args)
    if args.command == "eval" and args.suite == "lm":
        return _cmd_eval_lm(parsers["eval lm"], args)
    if args.command == "export":
        return _cmd_export(parsers["export"], args)
    from hope.cli import suites

    return suites.main(parsers, args)


if __name__ == "__main__":
    sys.exit(main())
