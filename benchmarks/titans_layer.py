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
import datetime
import json
import os
import time
from functools import partial

import torch

from hope.config import ModelConfig
from hope.layers.self_ref_titans import SelfReferentialTitans


def _time(fn, repeats: int) -> float:
    fn()  # warm-up: compilation
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def _relative_error(layer, x, impl: str) -> tuple[float, float]:
    torch.set_float32_matmul_precision("highest")
    with torch.no_grad():
        y_ref, s_ref = layer(x, None, impl="chunked")
        y, s = layer(x, None, impl=impl)
    torch.set_float32_matmul_precision("high")
    err_y = float((y - y_ref).abs().max() / y_ref.abs().max())
    err_w = max(float((a - b).abs().max() / b.abs().max()) for a, b in zip(s["weights"], s_ref["weights"]))
    return err_y, err_w


def _forward(layer, x, impl):
    with torch.no_grad():
        layer(x, None, impl=impl)


def _forward_backward(layer, x, impl):
    y, _ = layer(x, None, impl=impl)
    y.square().mean().backward()


def measure(layer, x, impl: str, args) -> dict:
    try:
        row = {
            "forward_ms": 1e3 * _time(partial(_forward, layer, x, impl), args.repeats),
            "fwd_bwd_ms": 1e3 * _time(partial(_forward_backward, layer, x.clone().requires_grad_(), impl), 1),
        }
        if impl != "chunked":
            row["rel_err_y"], row["rel_err_weights"] = _relative_error(layer, x[:, : args.check_len], impl)
    except (ValueError, torch.OutOfMemoryError) as err:
        row = {"error": str(err).splitlines()[0]}
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", default="hope,hope-no-selfmod,titans")
    p.add_argument("--size", default="125m")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=4096)
    p.add_argument("--check-len", type=int, default=1024)
    p.add_argument("--impls", default="triton,chunked")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default="runs/titans_layer")
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
            row = {"preset": preset, "impl": impl, **measure(layer, x, impl, args)}
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
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(result, f, indent=2)
    lines = [
        (
            f"{result['device']}, torch {result['torch']}, {result['date']}: one layer at {args.size}, "
            f"B = {args.batch_size}, T = {args.seq_len}, float32 with TF32 products."
        ),
        "",
        "| preset | impl | forward ms | fwd+bwd ms | rel. error y / weights vs chunked |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['preset']} | {r['impl']} | {r['error']} | | |")
            continue
        err = f"{r['rel_err_y']:.1e} / {r['rel_err_weights']:.1e}" if "rel_err_y" in r else "–"
        lines.append(
            f"| {r['preset']} | {r['impl']} | {r['forward_ms']:.1f} | {r['fwd_bwd_ms']:.1f} | {err} |"
        )
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
