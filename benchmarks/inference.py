"""Inference at batch 1: prefill and one-token decode tokens/s by context, and a long streaming soak.

    python benchmarks/inference.py --presets transformer,titans,hope --size 125m \\
        --contexts 4096,65536,1048576 --out runs/inference
    python benchmarks/inference.py --soak 10000000 --presets hope --size 125m --out runs/soak

Prefill: one no-grad forward over `context` tokens in pieces of --piece tokens, state carried (the
training path's forward: the Triton kernel where `impl="auto"` takes it). Decode: then --decode-steps
greedy tokens through `hope.models.decode.Decoder` (one CUDA graph per pattern of CMS level steps on
CUDA; `--compile` fuses the step first); tokens/s over the timed steps, after a warm-up that runs
through the next CMS level step so its graph is captured untimed (`captures_while_timed` counts any
pattern first met while timed). Streamed (memory presets): the same number of tokens through
`hope.models.stream.Streamer` in --piece pieces on static buffers, each pattern of CMS level steps
one CUDA graph on CUDA, timed after a full period of patterns. Attention presets skip contexts
above --attention-max (their prefill is quadratic); the row says so.

Soak: the built-in corpus as bytes, repeated, streamed through the model in pieces with test-time
learning on (through `Streamer` where the model's state has a fixed size); every --log-every tokens: tokens/s, peak memory, every memory state's norm relative to
its start, and the mean next-token loss. A random-weight model unless --checkpoint names a run's
model.safetensors.

bf16 autocast and TF32 on CUDA. Writes results.json and results.md (and soak.png) into --out.
Not a test: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

import hope
from hope.atomic import write_text_atomic
from hope.data import builtin_text
from hope.models.decode import Decoder
from hope.models.stream import Streamer


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _autocast(device: str):
    return torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else contextlib.nullcontext()


def build(preset: str, args, vocab_size: int):
    config = hope.ModelConfig.preset(preset, size=args.size, vocab_size=vocab_size)
    torch.manual_seed(0)
    model = hope.build_model(config).to(args.device).eval()
    if args.checkpoint:
        from safetensors.torch import load_model

        load_model(model, args.checkpoint)
    return model


@torch.no_grad()
def prefill(model, ids: torch.Tensor, piece: int, device: str):
    """Stream ids (B, T) in pieces; (state, logits of the last piece, seconds)."""
    _sync(device)
    start = time.perf_counter()
    state, logits = None, None
    with _autocast(device):
        for t in range(0, ids.shape[1], piece):
            logits, state = model(ids[:, t : t + piece], state)
    _sync(device)
    return state, logits, time.perf_counter() - start


def profile_step(model, state, context: int, args, path: str) -> int:
    """Kernels of the eager (un-graphed) decode step: the top ones by GPU time into `path`; kernels a step."""
    from torch.profiler import ProfilerActivity, profile

    steps = 8
    with _autocast(args.device):
        decoder = Decoder(
            model,
            state,
            1,
            context + 3 + steps,
            cuda_graph=False,
            compile=args.compile,
            dtype=torch.bfloat16 if args.device == "cuda" else None,
        )
        ids = torch.zeros(1, dtype=torch.long, device=args.device)
        for _ in range(3):
            decoder.step(ids)
        _sync(args.device)
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(steps):
                decoder.step(ids)
            _sync(args.device)
    kernels = sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)
    with open(path, "w") as f:
        f.write(f"{kernels / steps:.0f} kernels a step\n")
        f.write(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=30))
    return round(kernels / steps)


def stream_rate(model, context: int, args, profile_path: str | None = None) -> tuple[float, int]:
    """`Streamer` over `context` tokens in --piece pieces (one CUDA graph per pattern of CMS level
    steps on CUDA): (tokens/s, patterns first met while timed). Untimed periods of patterns stream
    first, until one passes with no new pattern (the surprise count saturates only after its window),
    so every graph is captured before the timed pieces. With `profile_path`, the kernels of a few
    more pieces go there."""
    with _autocast(args.device):
        streamer = Streamer(model, None, batch_size=1, piece=args.piece)
    ids = torch.randint(0, args.vocab_size, (1, max(context, streamer.period)), device=args.device)

    def stream(tokens: int) -> None:
        for t in range(0, tokens, args.piece):
            t %= ids.shape[1]
            streamer(ids[:, t : t + args.piece])

    for _ in range(8):
        captured = len(streamer.graphs or ())
        stream(streamer.period)
        if len(streamer.graphs or ()) == captured:
            break
    _sync(args.device)
    captured = len(streamer.graphs or ())
    start = time.perf_counter()
    stream(context)
    _sync(args.device)
    rate = context / (time.perf_counter() - start)
    if profile_path:
        from torch.profiler import ProfilerActivity, profile

        pieces = 4
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            stream(pieces * args.piece)
            _sync(args.device)
        kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
        busy_ms = sum(e.device_time for e in kernels) / 1e3 / pieces
        with open(profile_path, "w") as f:
            f.write(
                f"{len(kernels) / pieces:.0f} kernels and {busy_ms:.1f} GPU-ms a {args.piece}-token piece\n"
            )
            f.write(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=30))
    return rate, len(streamer.graphs or ()) - captured


def decode_rate(model, state, logits, context: int, args) -> tuple[float, int]:
    """Greedy one-token steps after the prefill: (tokens/s over the timed steps, step patterns first
    met, so captured, inside them). The warm-up runs past the smallest CMS level's next boundary, so
    its step's graph is captured before the timed steps, which then include one such step for every
    period of that level they span."""
    warmup = 3
    if model.level_steps(0):  # a CMS: warm up through the token after which a level next steps
        while not any(model.level_steps(context + warmup - 1)):
            warmup += 1
    steps = args.decode_steps
    with _autocast(args.device):
        decoder = Decoder(
            model,
            state,
            batch_size=1,
            max_len=context + warmup + steps,
            dtype=torch.bfloat16 if args.device == "cuda" else None,
            compile=args.compile,
        )
        next_id = logits[:, -1].argmax(-1)
        for i in range(warmup + steps):
            if i == warmup:
                _sync(args.device)
                captured = len(decoder.graphs or ())
                start = time.perf_counter()
            next_id = decoder.step(next_id)[:, -1].argmax(-1)  # stays on the device: no sync per step
    _sync(args.device)
    return steps / (time.perf_counter() - start), len(decoder.graphs or ()) - captured


def speed_rows(args) -> list[dict]:
    rows = []
    for preset in args.presets:
        model = build(preset, args, args.vocab_size)
        for context in args.contexts:
            row = {"preset": preset, "context": context}
            if not model.config.uses_titans and context > args.attention_max:
                row["skipped"] = f"attention beyond --attention-max {args.attention_max}"
                rows.append(row)
                continue
            if args.device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            ids = torch.randint(0, args.vocab_size, (1, context), device=args.device)
            try:
                # untimed: compiles, and recompiles once each CMS level has stepped (its fast weights
                # stop being views of the parameters), so the timed prefill is the steady state
                levels = model.config.cms.chunk_sizes if model.config.uses_cms else (0,)
                prefill(model, ids[:, : min(max(levels) + args.piece, context)], args.piece, args.device)
                state, logits, seconds = prefill(model, ids, args.piece, args.device)
                row["prefill_tok_s"] = context / seconds
                rate, captures = decode_rate(model, state, logits, context, args)
                row["decode_tok_s"], row["captures_while_timed"] = rate, captures
                if model.config.uses_titans and context % args.piece == 0:
                    profile_path = None
                    if args.profile and context == args.contexts[0]:
                        profile_path = os.path.join(args.out, f"profile_stream_{preset}.txt")
                    row["stream_tok_s"], row["stream_captures_while_timed"] = stream_rate(
                        model, context, args, profile_path
                    )
                if args.profile and context == args.contexts[0]:
                    path = os.path.join(args.out, f"profile_{preset}.txt")
                    row["kernels_per_step"] = profile_step(model, state, context, args, path)
            except torch.OutOfMemoryError as err:
                row["error"] = f"out of memory: {str(err).splitlines()[0]}"
            if args.device == "cuda":
                row["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
            _log(json.dumps(row))
            rows.append(row)
            _write(args, {"rows": rows})
    return rows


def memory_norms(state: dict) -> dict[str, float]:
    """Frobenius norm of every in-context memory (mean over batch and heads), by name."""
    norms = {}
    for b, block in enumerate(state["blocks"]):
        mixer, ffn = block["mixer"], block["ffn"]
        for j, w in enumerate(mixer.get("weights") or []):  # (B, P, H, out, in)
            for p, value in enumerate(w.float().flatten(3).norm(dim=-1).mean(dim=(0, 2)).tolist()):
                norms[f"block{b}.titans{p}.W{j + 1}"] = value
        for level, weights in enumerate((ffn or {}).get("fast") or []):
            for j, w in enumerate(weights):
                norms[f"block{b}.cms{level}.W{j + 1}"] = float(w.float().flatten(1).norm(dim=-1).mean())
    return norms


@torch.no_grad()
def soak(args) -> dict:
    preset = args.presets[0]
    model = build(preset, args, 256)
    corpus = np.frombuffer(builtin_text().encode("utf-8"), dtype=np.uint8)
    ids_all = torch.from_numpy(corpus.astype(np.int64)).to(args.device)
    streamer = None  # static buffers and CUDA graphs where the model's state has a fixed size
    if model.config.uses_titans and not model.learns_from_lm_loss:
        with _autocast(args.device):
            streamer = Streamer(model, None, batch_size=1, piece=args.piece)
    state, losses, log = None, [], []
    start = last = time.perf_counter()
    first_norms = None
    streamed, next_log = 0, args.log_every
    while streamed < args.soak:
        offset = streamed % (len(ids_all) - args.piece - 1)
        piece = ids_all[offset : offset + args.piece + 1][None]
        if streamer is not None:
            logits, state = streamer(piece[:, :-1]), streamer.tree  # the buffers, read in place
        else:
            with _autocast(args.device):
                logits, state = model(piece[:, :-1], state)
        losses.append(F.cross_entropy(logits[0].float(), piece[0, 1:]))  # on the device until logged
        if first_norms is None:
            first_norms = memory_norms(state)
        streamed += args.piece
        if streamed >= next_log or streamed >= args.soak:
            _sync(args.device)
            now = time.perf_counter()
            norms = memory_norms(state)
            ratios = [norms[k] / max(first_norms[k], 1e-30) for k in norms]
            entry = {
                "tokens": streamed,
                "tok_s": (streamed - (log[-1]["tokens"] if log else 0)) / (now - last),
                "loss": float(torch.stack(losses).mean()),
                "finite": bool(np.isfinite(list(norms.values())).all()),
                "norm_ratio_min": min(ratios, default=float("nan")),
                "norm_ratio_median": float(np.median(ratios)) if ratios else float("nan"),
                "norm_ratio_max": max(ratios, default=float("nan")),
                "norms": norms,
            }
            if args.device == "cuda":
                entry["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
                torch.cuda.reset_peak_memory_stats()
            _log({k: v for k, v in entry.items() if k != "norms"})
            log.append(entry)
            losses, last, next_log = [], now, next_log + args.log_every
            _write(args, {"soak": log})  # and the plot: a run cut off by a time limit keeps both
            plot_soak(log, os.path.join(args.out, "soak.png"))
    _log(f"soak done: {streamed:,} tokens in {time.perf_counter() - start:.0f} s")


def _write(args, partial: dict) -> None:
    """results.json after every row, so a cut-off run keeps what it measured."""
    write_text_atomic(os.path.join(args.out, "results.json"), json.dumps({**args.meta, **partial}, indent=2))


def table(meta: dict, rows: list[dict]) -> str:
    lines = [
        f"Device: {meta['device']}, torch {meta['torch']}, {meta['date']}; size {meta['size']}, batch 1.",
        "",
        "| preset | context | prefill tok/s | streamed on static buffers, tok/s | decode tok/s | peak GiB |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "prefill_tok_s" not in r:
            lines.append(f"| {r['preset']} | {r['context']:,} | {r.get('skipped') or r.get('error')} | | | |")
            continue
        peak = f"{r['peak_gib']:.2f}" if "peak_gib" in r else "–"
        streamed = f"{r['stream_tok_s']:,.0f}" if "stream_tok_s" in r else "–"
        lines.append(
            f"| {r['preset']} | {r['context']:,} | {r['prefill_tok_s']:,.0f} | {streamed}"
            f" | {r['decode_tok_s']:,.1f} | {peak} |"
        )
    return "\n".join(lines) + "\n"


def plot_soak(log: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tokens = [e["tokens"] / 1e6 for e in log]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.5))
    axes[0].plot(tokens, [e["tok_s"] for e in log])
    axes[0].set_ylabel("tokens/s")
    axes[1].plot(tokens, [e.get("peak_gib", float("nan")) for e in log])
    axes[1].set_ylabel("peak GiB")
    axes[1].set_ylim(bottom=0)  # flat is the claim: no offset axis that magnifies a byte
    axes[2].plot(tokens, [e["norm_ratio_median"] for e in log], label="median")
    axes[2].fill_between(
        tokens, [e["norm_ratio_min"] for e in log], [e["norm_ratio_max"] for e in log], alpha=0.3
    )
    axes[2].set_ylabel("memory norm / its start")
    axes[2].set_yscale("log")
    for ax in axes:
        ax.set_xlabel("streamed tokens (M)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", default="transformer,titans,hope")
    p.add_argument("--size", default="125m")
    p.add_argument("--contexts", default="4096,65536", help="comma-separated prefill lengths")
    p.add_argument("--piece", type=int, default=2048, help="prefill / soak piece length")
    p.add_argument("--decode-steps", type=int, default=512)
    p.add_argument("--attention-max", type=int, default=65536)
    p.add_argument("--compile", action="store_true", help="torch.compile the decode step")
    p.add_argument("--profile", action="store_true", help="profile the eager decode step (first context)")
    p.add_argument(
        "--cms-read",
        choices=("triton", "torch"),
        default=None,
        help="how a decode step reads the CMS levels on CUDA: hope.ops.cms_step's kernels or PyTorch's "
        "matmuls (default: hope.ops.cms_step.ENABLED)",
    )
    p.add_argument("--vocab-size", type=int, default=32000)
    p.add_argument("--soak", type=int, default=0, help="tokens to stream (0: the speed table instead)")
    p.add_argument("--log-every", type=int, default=1_000_000)
    p.add_argument(
        "--checkpoint", default=None, help="model.safetensors of a run of the same preset and size"
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", default="runs/inference")
    args = p.parse_args()
    for name in ("piece", "decode_steps", "log_every"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    args.presets = args.presets.split(",")
    args.contexts = [int(c) for c in args.contexts.split(",")]
    if args.cms_read is not None:
        from hope.ops import cms_step

        cms_step.ENABLED = args.cms_read == "triton"
    if args.device == "cuda":
        torch.set_float32_matmul_precision("high")
    os.makedirs(args.out, exist_ok=True)
    args.meta = {
        "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
        "date": datetime.date.today().isoformat(),
        "torch": torch.__version__,
        "size": args.size,
        "cms_read": args.cms_read or "default (hope.ops.cms_step.ENABLED)",
        "command": " ".join(["python benchmarks/inference.py", *sys.argv[1:]]),
    }
    if args.soak:
        soak(args)
        return
    rows = speed_rows(args)
    text = table(args.meta, rows)
    write_text_atomic(os.path.join(args.out, "results.md"), text)
    print(text)


if __name__ == "__main__":
    main()
