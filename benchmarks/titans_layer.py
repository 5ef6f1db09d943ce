"""One self-referential Titans layer at a model size's shapes: each impl's forward (no grad) and
forward + backward time, and its distance from `chunked`. The quick check of a kernel change.

    python benchmarks/titans_layer.py --presets hope,hope-no-selfmod,titans --size 125m \\
        --batch-size 8 --seq-len 4096 --impls triton,chunked --out runs/titans_layer

float32 with TF32 products (torch.set_float32_matmul_precision("high")), as under bf16 autocast,
where the layer runs in float32. The error columns compare against `chunked` in IEEE float32 on the
first --check-len tokens. Writes results.json and results.md into --out. Not a test.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import os
import re
import sys
import time
from functools import partial

import torch

from hope.atomic import write_text_atomic
from hope.config import ModelConfig
from hope.layers.self_ref_titans import SelfReferentialTitans
from hope.ops.titans import fused


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _time(fn, repeats: int) -> float:
    _log(f"warm-up {getattr(fn.func, '__name__', fn)}")
    fn()  # warm-up: compilation
    _log("timing")
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def _relative_error(layer, x, impl: str, precision: str) -> dict:
    """Max relative distance from `chunked` of the outputs, end weights and the gradients of the input
    and every parameter under a random output cotangent, both at float32 matmul `precision`
    ("highest" is IEEE: at 125m shapes ptxas then takes minutes to build the kernel)."""

    def run(path):
        layer.zero_grad(set_to_none=True)
        xg = x.clone().requires_grad_()
        y, s = layer(xg, None, impl=path)
        (y * cotangent).sum().backward()
        grads = [xg.grad] + [p.grad for p in layer.parameters() if p.grad is not None]
        return y.detach(), [w.detach() for w in s["weights"]], grads

    def distance(a, b):
        return max(float((u - v).abs().max() / v.abs().max().clamp_min(1e-30)) for u, v in zip(a, b))

    _log("error against chunked")
    torch.set_float32_matmul_precision(precision)
    cotangent = torch.randn(*x.shape, device=x.device)
    y_ref, w_ref, g_ref = run("chunked")
    y, w, g = run(impl)
    torch.set_float32_matmul_precision("high")
    layer.zero_grad(set_to_none=True)
    return {
        "rel_err_y": distance([y], [y_ref]),
        "rel_err_weights": distance(w, w_ref),
        "rel_err_grads": distance(g, g_ref),
    }


def _forward(layer, x, impl):
    with torch.no_grad():
        layer(x, None, impl=impl)


def _forward_backward(layer, x, impl):
    y, _ = layer(x, None, impl=impl)
    y.square().mean().backward()


def _file_name(impl: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", impl)


def _option(value: str):
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    return int(value) if value.isdigit() else value


@contextlib.contextmanager
def variant(layer, impl: str):
    """impl "triton-eager-bwd" is triton with `titans.cuda_graphs` off: its backward's per-chunk
    recompute launches the compiled graph's kernels instead of replaying a CUDA graph. Kernel options
    (`hope.ops.titans.fused.KERNEL`) and layer settings (`titans.*`) follow after colons, e.g.
    "triton:share_inverse=true:dots=bf16" or "triton:titans.boundary_every=4"."""
    path, *options = impl.split(":")
    saved, titans = dataclasses.replace(fused.KERNEL), dataclasses.replace(layer.titans)
    for option in options:
        name, _, value = option.partition("=")
        target, field = (
            (layer.titans, name[len("titans.") :]) if name.startswith("titans.") else (fused.KERNEL, name)
        )
        if not hasattr(target, field):
            raise SystemExit(f"unknown option {name!r} in --impls {impl!r}")
        setattr(target, field, _option(value))
    layer.titans.cuda_graphs = path != "triton-eager-bwd"
    try:
        yield path.removesuffix("-eager-bwd")
    finally:
        for field in dataclasses.fields(titans):
            setattr(layer.titans, field.name, getattr(titans, field.name))
        fused.KERNEL = saved


def measure(layer, x, impl: str, args) -> dict:
    try:
        row = {"forward_ms": 1e3 * _time(partial(_forward, layer, x, impl), args.repeats)}
        torch.cuda.reset_peak_memory_stats()
        row["fwd_bwd_ms"] = 1e3 * _time(
            partial(_forward_backward, layer, x.clone().requires_grad_(), impl), 1
        )
        row["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30  # the layer's training step
        _log(f"{row['forward_ms']:.1f} ms forward, {row['fwd_bwd_ms']:.1f} ms forward + backward")
        if impl != "chunked" and args.check_len > 0:
            row.update(_relative_error(layer, x[:, : args.check_len], impl, args.check_precision))
    except (ValueError, torch.OutOfMemoryError) as err:
        row = {"error": str(err).splitlines()[0]}
    return row


def profile(layer, x, impl: str, path: str) -> dict:
    """One forward + backward under torch.profiler: GPU-busy time against wall time, the top kernels."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    x = x.clone().requires_grad_()
    _forward_backward(layer, x, impl)  # compiled and captured before the profile
    torch.cuda.synchronize()
    start = time.perf_counter()
    with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        _forward_backward(layer, x, impl)
        torch.cuda.synchronize()
    wall = time.perf_counter() - start
    events = [e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA]
    busy = sum(e.self_device_time_total for e in events) / 1e6
    launches = sum(e.count for e in events)
    table = prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=25)
    with open(path, "w") as f:
        f.write(
            f"wall {wall * 1e3:.1f} ms (profiled), GPU busy {busy * 1e3:.1f} ms, {launches} kernels\n\n{table}\n"
        )
    return {"profiled_wall_ms": wall * 1e3, "gpu_busy_ms": busy * 1e3, "kernels": launches}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", default="hope,hope-no-selfmod,titans")
    p.add_argument("--size", default="125m")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=4096)
    p.add_argument("--check-len", type=int, default=1024, help="0 skips the error check")
    p.add_argument(
        "--check-precision",
        default="high",
        choices=("high", "highest"),
        help="float32 matmul precision of the error check (high: TF32, highest: IEEE)",
    )
    p.add_argument(
        "--impls",
        default="triton,chunked",
        help="also: triton-eager-bwd (no CUDA graphs); kernel options after colons, e.g. triton:dots=bf16",
    )
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default="runs/titans_layer")
    p.add_argument("--profile", action="store_true", help="also profile one fwd+bwd per row")
    args = p.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks/titans_layer.py measures a GPU; no CUDA device is visible")
    os.makedirs(args.out, exist_ok=True)
    torch.set_float32_matmul_precision("high")
    rows = []
    for preset in args.presets.split(","):
        cfg = ModelConfig.preset(preset, args.size)
        torch.manual_seed(0)
        layer = SelfReferentialTitans(cfg).cuda()
        x = torch.randn(args.batch_size, args.seq_len, cfg.d_model, device="cuda")
        for impl in args.impls.split(","):
            with variant(layer, impl) as path:
                row = {"preset": preset, "impl": impl, **measure(layer, x, path, args)}
                if args.profile and "error" not in row:
                    row.update(
                        profile(
                            layer, x, path, os.path.join(args.out, f"profile_{preset}_{_file_name(impl)}.txt")
                        )
                    )
            rows.append(row)
            print(json.dumps(row), flush=True)
    result = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "date": datetime.date.today().isoformat(),
        "size": args.size,
        "batch": args.batch_size,
        "seq_len": args.seq_len,
        "rows": rows,
    }
    write_text_atomic(os.path.join(args.out, "results.json"), json.dumps(result, indent=2))
    lines = [
        (
            f"{result['device']}, torch {result['torch']}, {result['date']}: one layer at {args.size}, "
            f"B = {args.batch_size}, T = {args.seq_len}, float32 with TF32 products."
        ),
        "",
        "| preset | impl | forward ms | fwd+bwd ms | peak GiB | rel. error y / weights / grads vs chunked | GPU busy / wall |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['preset']} | {r['impl']} | {r['error']} | | | | |")
            continue
        err = (
            f"{r['rel_err_y']:.1e} / {r['rel_err_weights']:.1e} / {r['rel_err_grads']:.1e}"
            if "rel_err_y" in r
            else "–"
        )
        busy = f"{r['gpu_busy_ms']:.0f} / {r['profiled_wall_ms']:.0f} ms" if "gpu_busy_ms" in r else "–"
        lines.append(
            f"| {r['preset']} | {r['impl']} | {r['forward_ms']:.1f} | {r['fwd_bwd_ms']:.1f} | {r['peak_gib']:.1f} "
            f"| {err} | {busy} |"
        )
    write_text_atomic(os.path.join(args.out, "results.md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
