"""Do graphed training steps of small models overlap on one GPU? K models, each a thread with its own
CUDA stream replaying its step's graphs (`hope.train.graphs`), against one alone.

    python benchmarks/overlap.py --preset hope --size study-small --jobs 1,2,4 --steps 10 --out runs/overlap

A graphed hope step at the dissection study's size is 85K kernels of a few microseconds, each too
small to fill the GPU (docs/PERFORMANCE.md). Processes on one GPU take turns (without MPS), so
`--jobs` processes cannot fill it; streams of one process can. If the aggregate tokens/s grows with
K, a thread runner for `bench-suite dissect --jobs` pays. Writes results.json and results.md into --out.
Not a test: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import threading
import time

import torch

import hope

sys.path.insert(0, os.path.dirname(__file__))
from speed import model_config  # noqa: E402

from hope.atomic import write_text_atomic
from hope.train.graphs import GraphedLoss  # noqa: E402


def run(k: int, args) -> dict:
    """K models' graphed steps on K streams at once: aggregate tokens/s and peak memory."""
    cfg = model_config(args.preset, args.size, "auto", args.vocab_size)
    models, losses, opts, ids = [], [], [], []
    for seed in range(k):
        torch.manual_seed(seed)
        model = hope.build_model(cfg).cuda()
        models.append(model)
        losses.append(GraphedLoss(model, "bf16"))
        opts.append(torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True))
        ids.append(torch.randint(0, args.vocab_size, (args.batch, args.seq_len + 1), device="cuda"))
    for loss_fn, opt, x in zip(losses, opts, ids):  # capture and warm up one at a time
        for _ in range(2):
            loss_fn(x[:, :-1], x[:, 1:]).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()

    def train(j: int) -> None:
        with torch.cuda.stream(torch.cuda.Stream()):
            for _ in range(args.steps):
                losses[j](ids[j][:, :-1], ids[j][:, 1:]).backward()
                opts[j].step()
                opts[j].zero_grad(set_to_none=True)
            torch.cuda.current_stream().synchronize()

    threads = [threading.Thread(target=train, args=(j,)) for j in range(k)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    tokens = k * args.steps * args.batch * args.seq_len
    return {
        "jobs": k,
        "wall_s": wall,
        "tokens_per_s": tokens / wall,
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="hope")
    p.add_argument("--size", default="study-small", help="a size preset, or study-small / study-scaled")
    p.add_argument("--jobs", default="1,2,4", help="comma-separated numbers of models trained at once")
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--vocab-size", type=int, default=32768)
    p.add_argument("--out", default="runs/overlap")
    args = p.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks/overlap.py measures a GPU; no CUDA device is visible")
    torch.set_float32_matmul_precision("high")
    os.makedirs(args.out, exist_ok=True)
    result = {
        "device": torch.cuda.get_device_name(),
        "date": datetime.date.today().isoformat(),
        "torch": torch.__version__,
        "command": " ".join(["python benchmarks/overlap.py", *sys.argv[1:]]),
        "rows": [],
    }
    jobs = [int(j) for j in args.jobs.split(",")]
    if jobs[0] != 1 or min(jobs) < 1:
        raise SystemExit(
            f"--jobs must start with 1 (the model alone, what the others compare with), got {args.jobs}"
        )
    for k in jobs:
        result["rows"].append(run(k, args))
        torch.cuda.empty_cache()
        print(json.dumps(result["rows"][-1]), flush=True)
        write_text_atomic(os.path.join(args.out, "results.json"), json.dumps(result, indent=2))
    alone = result["rows"][0]["tokens_per_s"]
    lines = [
        f"Device: {result['device']}, torch {result['torch']}, {result['date']}; {args.preset} at {args.size},"
        f" B = {args.batch}, T = {args.seq_len}, graphed steps, {args.steps} a model.",
        "",
        "| models at once | aggregate tokens/s | × one model alone | peak GiB |",
        "|---|---|---|---|",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['jobs']} | {row['tokens_per_s']:,.0f} | {row['tokens_per_s'] / alone:.2f} | {row['peak_gib']:.1f} |"
        )
    text = "\n".join(lines) + "\n"
    write_text_atomic(os.path.join(args.out, "results.md"), text)
    print(text)


if __name__ == "__main__":
    main()
