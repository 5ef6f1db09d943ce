"""Training throughput (fwd+bwd+AdamW, bf16 autocast) and peak memory of presets at one size.

    python benchmarks/speed.py --presets hope,titans,transformer --size 125m --seq-len 4096 --out runs/speed

Also measures, on the same device, how far the chunked path is from the token-by-token reference
(float32, tiny model). Writes results.json and results.md into --out; timings are medians of
CUDA-event-timed steps after warm-up. Not a test: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import time

import torch
import torch.nn.functional as F

import hope


def time_training(
    preset: str,
    size: str,
    seq_len: int,
    batch: int,
    steps: int,
    warmup: int,
    device: str,
    vocab: int,
    compile_model: bool,
) -> dict:
    cfg = hope.ModelConfig.preset(preset, size=size, vocab_size=vocab)
    torch.manual_seed(0)
    model = hope.build_model(cfg).to(device)
    params = model.num_parameters()
    step_model = torch.compile(model) if compile_model else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device == "cuda")
    ids = torch.randint(0, vocab, (batch, seq_len + 1), device=device)
    times, losses = [], []
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for i in range(warmup + steps):
        start = time.perf_counter()
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=device == "cuda"):
            logits, _ = step_model(ids[:, :-1])
            loss = F.cross_entropy(logits.flatten(0, 1).float(), ids[:, 1:].flatten())
        loss.backward()
        losses.append(float(loss))
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    sec = statistics.median(times)
    return {
        "preset": preset,
        "size": size,
        "params": params,
        "seq_len": seq_len,
        "batch": batch,
        "compile": compile_model,
        "sec_per_step": sec,
        "tokens_per_s": batch * seq_len / sec,
        "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None,
        "first_loss": losses[0],
        "last_loss": losses[-1],
    }


def chunked_vs_reference(device: str) -> dict:
    """Max |chunked − reference| / max |reference| of the logits, float32, tiny HOPE, C = 8."""
    out = {}
    for preset in ("hope", "titans", "hope-no-selfmod"):
        cfgs = {
            impl: hope.ModelConfig.preset(
                preset, impl=impl, **{"titans.chunk_size": 8, "cms.chunk_sizes": (16, 64)}
            )
            for impl in ("reference", "chunked")
        }
        torch.manual_seed(0)
        ref = hope.build_model(cfgs["reference"]).to(device)
        fast = hope.build_model(cfgs["chunked"]).to(device)
        fast.load_state_dict(ref.state_dict())
        ids = torch.randint(0, 256, (2, 96), device=device)
        with torch.no_grad():
            a, b = ref(ids)[0], fast(ids)[0]
        out[preset] = float((a - b).abs().max() / a.abs().max())
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", default="hope,titans,transformer")
    p.add_argument("--size", default="125m")
    p.add_argument("--seq-len", type=int, default=4096)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--vocab-size", type=int, default=32000)
    p.add_argument("--compile", action="store_true", help="also time torch.compile'd models")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", default="runs/speed")
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    rows = []
    for preset in args.presets.split(","):
        for compiled in [False, True] if args.compile else [False]:
            try:
                row = time_training(
                    preset,
                    args.size,
                    args.seq_len,
                    args.batch_size,
                    args.steps,
                    args.warmup,
                    args.device,
                    args.vocab_size,
                    compiled,
                )
            except torch.OutOfMemoryError:
                row = {"preset": preset, "compile": compiled, "error": "out of memory"}
            rows.append(row)
            print(json.dumps(row), flush=True)
            if args.device == "cuda":
                torch.cuda.empty_cache()
    errors = chunked_vs_reference(args.device)
    result = {
        "device": device_name,
        "date": datetime.date.today().isoformat(),
        "torch": torch.__version__,
        "rows": rows,
        "chunked_vs_reference_rel_err": errors,
    }
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(result, f, indent=2)
    base = max((r.get("tokens_per_s", 0) for r in rows if r["preset"] == "transformer"), default=0)
    lines = [
        (
            f"Device: {device_name}, torch {torch.__version__}, {result['date']}; T = {args.seq_len}, "
            f"batch {args.batch_size}, bf16 autocast, fwd+bwd+AdamW, median of {args.steps} steps."
        ),
        "",
        "| preset | params | compile | tokens/s | × transformer | peak GiB | loss first → last |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['preset']} | | {r['compile']} | {r['error']} | | | |")
            continue
        ratio = f"{r['tokens_per_s'] / base:.3f}" if base else "–"
        mem = f"{r['peak_mem_gib']:.1f}" if r["peak_mem_gib"] is not None else "–"
        lines.append(
            f"| {r['preset']} | {r['params'] / 1e6:.1f}M | {r['compile']} | {r['tokens_per_s']:,.0f} | "
            f"{ratio} | {mem} | {r['first_loss']:.2f} → {r['last_loss']:.2f} |"
        )
    lines += [
        "",
        "Chunked vs reference (float32, tiny, C = 8, max relative logit error): "
        + ", ".join(f"{k} {v:.1e}" for k, v in errors.items()),
    ]
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
