"""The commands that read a trained run or a fresh preset: ``generate``, ``eval lm`` and ``retention``."""

import argparse
import json
import sys

from hope.cli.args import (
    add_shared,
    int_list,
    non_negative_float,
    non_negative_int,
    positive_int,
    probability,
)


def add_parsers(sub, parsers: dict[str, argparse.ArgumentParser]):
    """Adds ``generate``, ``eval`` (with its ``lm`` suite) and ``retention`` to ``parsers``; returns the
    ``eval`` subparsers, for the benchmark suites."""
    g = sub.add_parser(
        "generate",
        help="stream text from a trained run",
        description="Stream text from a run's newest checkpoint: the prompt is read once, then "
        "each token is fed back with the model's state.",
    )
    add_shared(g, "run")
    g.add_argument("--prompt", required=True, help="text to continue")
    g.add_argument("--max-tokens", type=positive_int, default=300, help="tokens to generate (default: 300)")
    g.add_argument("--temperature", type=non_negative_float, default=0.8, help="0 is greedy (default: 0.8)")
    g.add_argument("--top-k", type=positive_int, default=None, help="sample from the k most likely tokens")
    g.add_argument("--top-p", type=probability, default=None, help="nucleus sampling mass (e.g. 0.95)")
    g.add_argument("--seed", type=non_negative_int, default=0, help="sampling seed (default: 0)")
    add_shared(g, "device")
    parsers["generate"] = g

    e = sub.add_parser("eval", help="evaluate a trained run", description="Evaluate a trained run.")
    esub = e.add_subparsers(dest="suite", metavar="SUITE", required=True)
    lm = esub.add_parser(
        "lm",
        help="loss, perplexity, bits per byte and tokens/s on a text or token file",
        description="Language-model evaluation of a run's newest checkpoint on local data "
        "(the whole file, non-overlapping windows): loss, perplexity, bits per byte, tokens/s.",
    )
    add_shared(lm, "run")
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
    lm.add_argument(
        "--piece",
        type=positive_int,
        default=None,
        help="stream each window in pieces of this many tokens, state carried (memory bounded by the piece)",
    )
    add_shared(lm, "precision", "device")
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
        type=int_list(0),
        default=[0, 256, 1024, 4096, 16384, 65536],
        help="distractor lengths N, comma-separated (default: 0,256,1024,4096,16384,65536)",
    )
    r.add_argument("--pairs", type=positive_int, default=16, help="key=value pairs written (default: 16)")
    r.add_argument(
        "--piece", type=positive_int, default=1024, help="tokens per streamed call (default: 1024)"
    )
    r.add_argument("--seed", type=non_negative_int, default=0, help="pairs and fresh-model seed (default: 0)")
    add_shared(r, "device")
    r.add_argument("--out", default="runs/retention", help="output directory (default: runs/retention)")
    parsers["retention"] = r
    return esub


def command(parsers: dict[str, argparse.ArgumentParser], args: argparse.Namespace) -> int:
    if args.command == "generate":
        return _cmd_generate(parsers["generate"], args)
    if args.command == "retention":
        return _cmd_retention(parsers["retention"], args)
    return _cmd_eval_lm(parsers["eval lm"], args)


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
        args.piece,
    )
    result = {"run": str(args.run), "step": step, "data": args.data, "seq_len": seq_len, **result}
    print(json.dumps(result))
    print(
        f"loss {result['loss']:.4f}  perplexity {result['ppl']:.2f}  bits/byte {result['bpb']:.4f}  "
        f"{result['tokens']:,} tokens at {result['tok_per_s']:,.0f} tok/s",
        file=sys.stderr,
    )
    return 0


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
