"""The one-token Titans step kernels (`ops/titans/fused_recurrent.py`) alone, by warps per program.

    python benchmarks/step_kernel.py --preset hope --size 125m --warps 4,8,16 --out runs/step_kernel

One layer at batch 1 on `static_state` buffers; µs a step (the kernel and its few small input ops)
from CUDA events over --iters replays of a CUDA graph (after a compiling warm-up), and the largest
difference of each variant's output from the first one's.
Writes results.json. Not a test: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import json
import os

import torch

import hope
from hope.atomic import write_text_atomic
from hope.layers.self_ref_titans import SelfReferentialTitans
from hope.ops.titans import fused_recurrent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="hope")
    p.add_argument("--size", default="125m")
    p.add_argument("--warps", default="4,8,16")
    p.add_argument("--iters", type=int, default=200)
    p.add_argument("--profile", action="store_true", help="also write the eager step's kernels (profile.txt)")
    p.add_argument("--out", default="runs/step_kernel")
    args = p.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    config = hope.ModelConfig.preset(args.preset, size=args.size, impl="triton")
    torch.manual_seed(0)
    layer = SelfReferentialTitans(config).to(device)
    x = torch.randn(1, 1, config.d_model, device=device)
    rows, reference = [], None
    with torch.no_grad():
        for warps in [int(w) for w in args.warps.split(",")]:
            fused_recurrent.STEP_NUM_WARPS = warps
            state = layer.static_state(None, 1, 0, torch.float32)
            out = fused_recurrent.decode_step_fused(layer, x, state)  # compiles
            reference = out if reference is None else reference
            step = lambda: fused_recurrent.decode_step_fused(layer, x, state)  # noqa: E731
            if device == "cuda":  # replayed from a CUDA graph, so the host's launch cost is not timed
                torch.cuda.synchronize()
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    step()
                step = graph.replay
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
            for _ in range(args.iters):
                step()
            if device == "cuda":
                end.record()
                torch.cuda.synchronize()
            row = {
                "warps": warps,
                "us_per_step": start.elapsed_time(end) * 1e3 / args.iters if device == "cuda" else None,
                "max_diff_vs_first": float((out - reference).abs().max()),
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    os.makedirs(args.out, exist_ok=True)
    if args.profile and device == "cuda":
        from torch.profiler import ProfilerActivity, profile

        with torch.no_grad(), profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(20):
                fused_recurrent.decode_step_fused(layer, x, state)
            torch.cuda.synchronize()
        table = prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=20)
        with open(os.path.join(args.out, "profile.txt"), "w") as f:
            f.write(table)
        print(table)
    meta = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "torch": torch.__version__}
    result = {**meta, "preset": args.preset, "size": args.size, "rows": rows}
    write_text_atomic(os.path.join(args.out, "results.json"), json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
