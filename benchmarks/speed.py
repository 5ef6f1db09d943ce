"""Training (or forward-only) throughput, peak memory and MFU of presets, side by side in one run.

    python benchmarks/speed.py --presets transformer,titans,hope,hope-no-selfmod --size 125m \\
        --seq-lens 4096,16384 --impls auto,chunked --out runs/speed
    python benchmarks/speed.py --presets transformer,titans,hope,hope-no-cms,hope-no-selfmod,hope-no-surprise \\
        --size study-small --seq-lens 512 --batches 8 --vocab-size 32768 --out runs/speed-study

Training step = forward + backward + AdamW, bf16 autocast, vocabulary 32000. For each preset and
sequence length the batch is the largest of --batches that fits (out-of-memory steps down to the
next). The transformer is timed eager and under torch.compile (and with the step in CUDA graphs when an
--impls entry asks for "+graphs"); the memory presets once per --impls entry ("auto" on CUDA is the
Triton path where it runs, see `hope.ops.titans`; "auto+graphs" the same step replayed from CUDA graphs). MFU counts 6·N
FLOPs a token for training (2·N forward-only), N the non-embedding parameters, plus the attention
matmuls for attention blocks, against the device's dense bf16 peak (--peak-tflops); that undercounts
the memory presets' work (their memories' products are not parameters), so --flops takes
`benchmarks/flops.py` counts and adds a column of MFU on the counted FLOPs. Timings are
medians of synchronised steps after warm-up. Writes results.json and results.md into --out (and with
--profile, one more step's kernel and host-op tables per row).
Not a test: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time
from functools import partial

import torch

import hope
from hope.atomic import write_text_atomic


def _flops_per_token(model, cfg, seq_len: int, train: bool) -> float:
    n = model.num_parameters() - model.embed.weight.numel()
    attention = 0
    if cfg.block in ("transformer", "hope_attention"):
        attention = 2 * 2 * cfg.n_layers * seq_len * cfg.d_model // 2  # QKᵀ and AV, causal half
    return (6 if train else 2) * n + (3 if train else 1) * attention


def model_config(
    preset: str, size: str, impl: str, vocab_size: int, overrides: dict | None = None
) -> hope.ModelConfig:
    """`preset` at a size preset, or at one of the "Dissecting HOPE" study's sizes (`study-small`,
    `study-scaled`: `hope.bench.dissect.study_config`, its widths and CMS periods 8 and 32)."""
    overrides = {"impl": impl, **(overrides or {})}
    if size.startswith("study-"):
        from hope.bench.dissect import SIZES, study_config

        if size[6:] not in SIZES:
            raise SystemExit(f"--size {size}: the study's sizes are {', '.join('study-' + s for s in SIZES)}")
        return study_config(preset, size[6:], vocab_size, overrides)
    return hope.ModelConfig.preset(preset, size=size, vocab_size=vocab_size, **overrides)


def parse_impl(spec: str) -> tuple[str, bool, dict]:
    """An --impls entry, `<impl>[+graphs][:key=value...]`: the layers' impl, whether the step is graphed,
    and model config overrides (e.g. `auto:titans.boundary_every=4`)."""
    from hope.cli.args import parse_value

    path, *options = spec.split(":")
    overrides = {}
    for option in options:
        key, eq, value = option.partition("=")
        if not eq:
            raise SystemExit(f"--impls {spec!r}: options are key=value, got {option!r}")
        overrides[key] = parse_value(value)
    return path.removesuffix("+graphs"), path.endswith("+graphs"), overrides


def time_steps(preset, size, seq_len, batch, impl, compile_model, args) -> dict:
    """`impl` with a "+graphs" suffix: the step's forward and backward replayed from CUDA graphs
    (`hope.train.graphs`)."""
    from hope.train.graphs import GraphedLoss
    from hope.train.step import next_token_loss

    base, graphs, overrides = parse_impl(impl)
    cfg = model_config(preset, size, base, args.vocab_size, overrides)
    torch.manual_seed(0)
    model = hope.build_model(cfg).to(args.device)
    step_model = torch.compile(model) if compile_model else model
    loss_fn = (
        GraphedLoss(step_model, "bf16") if graphs else partial(next_token_loss, step_model, precision="bf16")
    )
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=args.device == "cuda")
    ids = torch.randint(0, args.vocab_size, (batch, seq_len + 1), device=args.device)
    times, losses = [], []
    torch.cuda.reset_peak_memory_stats()
    for i in range(args.warmup + args.steps):
        torch.cuda.synchronize()
        start = time.perf_counter()
        if args.forward_only:
            with torch.no_grad():
                loss = next_token_loss(step_model, ids[:, :-1], ids[:, 1:], "bf16")
        else:
            loss = loss_fn(ids[:, :-1], ids[:, 1:])
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        losses.append(float(loss.detach()))
        elapsed = time.perf_counter() - start
        if i >= args.warmup:
            times.append(elapsed)
        print(f"[{time.strftime('%H:%M:%S')}] {preset} B={batch} T={seq_len} step {i}: {elapsed:.2f} s",
              file=sys.stderr, flush=True)  # fmt: skip
        if args.profile and i == args.warmup + args.steps - 1:
            profile_step(loss_fn, opt, ids, f"{preset}-{'compiled' if compile_model else impl}", args)
    sec = statistics.median(times)
    tokens_per_s = batch * seq_len / sec
    flops = _flops_per_token(model, cfg, seq_len, not args.forward_only) * tokens_per_s
    return {
        "preset": preset,
        "impl": "compiled" if compile_model else impl,
        "params": model.num_parameters(),
        "seq_len": seq_len,
        "batch": batch,
        "sec_per_step": sec,
        "tokens_per_s": tokens_per_s,
        "mfu": flops / (args.peak_tflops * 1e12),
        "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30,
        "first_loss": losses[0],
        "last_loss": losses[-1],
    }


def profile_step(loss_fn, opt, ids, name: str, args) -> None:
    """One more training step under the profiler: kernels a step, GPU-busy ms, and the top kernels and
    host ops into --out/profile_<preset>-<impl>.txt."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        loss_fn(ids[:, :-1], ids[:, 1:]).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    busy_ms = sum(e.device_time for e in kernels) / 1e3
    with open(os.path.join(args.out, f"profile_{name}.txt"), "w") as f:
        f.write(f"{len(kernels)} kernels, {busy_ms:.1f} GPU-ms busy in one step of {tuple(ids.shape)}\n\n")
        f.write(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=25))
        f.write("\n\n")
        f.write(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


def largest_batch_that_fits(preset, seq_len, impl, compile_model, args) -> dict:
    for batch in args.batches:
        try:
            row = time_steps(preset, args.size, seq_len, batch, impl, compile_model, args)
        except torch.OutOfMemoryError:
            row = None
        torch.cuda.empty_cache()
        if row is not None:
            return row
    impl_name = "compiled" if compile_model else impl
    return {
        "preset": preset,
        "impl": impl_name,
        "seq_len": seq_len,
        "error": f"out of memory at batch {batch}",
    }


def counted_flops(paths: str) -> dict[tuple[str, int], float]:
    """FLOPs a training-step token by (preset, size, T, vocabulary) from `benchmarks/flops.py` results."""
    counts = {}
    for path in filter(None, paths.split(",")):
        with open(path) as f:
            result = json.load(f)
        for row in result["rows"]:
            key = (row["preset"], result["size"], result["seq_len"], result["vocab_size"])
            counts[key] = row["total"] * 1e6
    return counts


def add_counted_mfu(row: dict, counts: dict, size: str, vocab_size: int, peak_tflops: float) -> dict:
    """`row` with its MFU on the counted FLOPs, where `counts` has its preset at its size, T and vocabulary."""
    flops = counts.get((row["preset"], size, row["seq_len"], vocab_size))
    if flops is not None and "tokens_per_s" in row:
        row = {
            **row,
            "flops_per_token": flops,
            "mfu_counted": row["tokens_per_s"] * flops / (peak_tflops * 1e12),
        }
    return row


def write_table(result: dict, path: str) -> str:
    rows = result["rows"]
    mode = "forward only (no grad)" if result["forward_only"] else "fwd+bwd+AdamW"
    lines = [
        (
            f"Device: {result['device']}, torch {result['torch']}, {result['date']}; size {result['size']}, "
            f"{mode}, bf16 autocast, median of {result['steps']} steps after {result['warmup']} warm-up"
            f"; Titans chunk backward: {result.get('titans_backward', 'autograd')}"
            f"; inductor options: {result.get('inductor') or 'defaults'}."
        ),
        "",
        "| T | preset | impl | params | batch | tokens/s | × compiled transformer | MFU (6N) | MFU (counted) | peak GiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['seq_len']} | {r['preset']} | {r['impl']} | | | {r['error']} | | | | |")
            continue
        base = [
            x["tokens_per_s"]
            for x in rows
            if x["preset"] == "transformer"
            and x["impl"] == "compiled"
            and x["seq_len"] == r["seq_len"]
            and "tokens_per_s" in x
        ]
        ratio = f"{r['tokens_per_s'] / base[0]:.3f}" if base else "–"
        lines.append(
            f"| {r['seq_len']} | {r['preset']} | {r['impl']} | {r['params'] / 1e6:.1f}M | {r['batch']} | "
            f"{r['tokens_per_s']:,.0f} | {ratio} | {r['mfu']:.1%} | "
            f"{format(r['mfu_counted'], '.1%') if 'mfu_counted' in r else '–'} | {r['peak_mem_gib']:.1f} |"
        )
    text = "\n".join(lines) + "\n"
    write_text_atomic(path, text)
    return text


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", default="transformer,titans,hope,hope-no-selfmod")
    p.add_argument(
        "--size", default="125m", help="a size preset, or study-small / study-scaled (bench-suite dissect's)"
    )
    p.add_argument("--seq-lens", default="4096", help="comma-separated sequence lengths")
    p.add_argument("--batches", default="8,4,2,1", help="batch sizes to try, largest first")
    p.add_argument(
        "--impls",
        default="auto",
        help="impls for the memory presets, e.g. auto,chunked; a +graphs suffix (auto+graphs): the step replayed"
        " from CUDA graphs, and the transformer timed so too; :key=value suffixes override the model config"
        " (auto:titans.boundary_every=4)",
    )
    p.add_argument("--forward-only", action="store_true", help="time the no-grad forward (prefill)")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--vocab-size", type=int, default=32000)
    p.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak (H100/H200 SXM)")
    p.add_argument(
        "--flops",
        default="",
        help="benchmarks/flops.py results.json files (comma-separated): an MFU column on their counts, for"
        " the presets and T they counted (training steps only)",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="profile one more step of each row (profile_<preset>-<impl>.txt)",
    )
    p.add_argument(
        "--titans-backward",
        choices=("autograd", "vjp", "triton"),
        default=None,
        help="how the Triton path takes a chunk back: its recompute differentiated (autograd, vjp) or the "
        "backward kernels (triton) (default: hope.ops.titans.fused.KERNEL.backward)",
    )
    p.add_argument(
        "--inductor",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an inductor option for the layers' compiled pieces, over the defaults in "
        "hope.ops.compiling.INDUCTOR, e.g. combo_kernels=false; repeatable",
    )
    p.add_argument("--out", default="runs/speed")
    args = p.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks/speed.py measures a GPU; no CUDA device is visible")
    args.device = "cuda"
    # TF32 for the float32 products: the Titans layers run outside autocast (their recurrence is
    # float32); with "highest" they take IEEE products, several times slower (2026-12-01: 16 s a step)
    torch.set_float32_matmul_precision("high")
    from hope.ops.titans import fused

    args.titans_backward = args.titans_backward or fused.KERNEL.backward
    fused.KERNEL.backward = args.titans_backward
    from hope.ops.compiling import INDUCTOR

    for option in args.inductor:
        key, _, value = option.partition("=")
        INDUCTOR[key] = {"true": True, "false": False}.get(
            value.lower(), int(value) if value.isdigit() else value
        )
    args.batches = [int(b) for b in args.batches.split(",")]
    counts = counted_flops(args.flops)
    os.makedirs(args.out, exist_ok=True)
    result = {
        "device": torch.cuda.get_device_name(),
        "date": datetime.date.today().isoformat(),
        "torch": torch.__version__,
        "size": args.size,
        "forward_only": args.forward_only,
        "steps": args.steps,
        "warmup": args.warmup,
        "titans_backward": args.titans_backward,
        "inductor": dict(INDUCTOR),
        "command": " ".join(["python benchmarks/speed.py", *sys.argv[1:]]),
        "rows": [],
    }
    for seq_len in (int(t) for t in args.seq_lens.split(",")):
        for preset in args.presets.split(","):
            runs = (
                [("auto", False), ("auto", True)] + [("auto+graphs", False)] * ("+graphs" in args.impls)
                if preset == "transformer"
                else [(impl, False) for impl in args.impls.split(",")]
            )
            for impl, compiled in runs:
                row = largest_batch_that_fits(preset, seq_len, impl, compiled, args)
                if not args.forward_only:
                    row = add_counted_mfu(row, counts, args.size, args.vocab_size, args.peak_tflops)
                result["rows"].append(row)
                print(json.dumps(row), flush=True)
                # after every row, atomically: a call cut off at its time limit keeps the rows it finished
                write_text_atomic(os.path.join(args.out, "results.json"), json.dumps(result, indent=2))
    print(write_table(result, os.path.join(args.out, "results.md")))


if __name__ == "__main__":
    main()
