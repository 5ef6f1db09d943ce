"""FLOPs a token of a training step, part by part, counted on the CPU: what a preset's step asks of
the GPU, so a measured tokens/s can be read as achieved FLOP/s and set against the device's peak.

    python benchmarks/flops.py --presets transformer,titans,hope --size 125m --seq-len 4096 \\
        --speed docs/results/speed-125m-h200-kernel-backward/results.json --out runs/flops

Each part of one block (the mixer: attention or the Titans layer; the ffn: SwiGLU or the CMS) runs
forward and backward on a (1, T, d_model) input in float32 under `torch.utils.flop_counter`, through
the readable PyTorch paths (`impl="chunked"` for the Titans layer, the level walk for the CMS); the
model's total is n_layers blocks plus the output head. The counter sees matrix products and
convolutions; we add what it misses or miscounts:
- the attention matmuls (QKᵀ and AV, the causal half; SDPA's CPU kernel is not counted), forward
  2·T·d a token and the backward twice that, as `benchmarks/speed.py`'s MFU does;
- `torch.linalg.solve_triangular` (the chunk's UT solve): n²·m for an (n, n) system with m columns;
- a depthwise convolution's backward, which the counter's formula takes as a dense one: each input
  or weight gradient costs what the forward did.
Elementwise work (norms, decays, the gate, activations) is not counted, as MFU conventions do not.
With `titans.checkpoint_chunks` (the GPU sizes' default) the backward includes the chunks' recompute;
`--no-checkpoint` counts the algorithm without it. The Triton kernels recompute too, in their own
order, so their executed FLOPs differ from these by the recompute's share.

With --speed (a `benchmarks/speed.py` results.json of the same size and T), each preset's measured
tokens/s becomes achieved TFLOP/s, its share of --peak-tflops, and the tokens/s the preset would
need to reach a given fraction of the compiled Transformer++ at the same FLOP rate.
Writes results.json and results.md into --out. Not a test.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import sys

import torch
from torch.utils.flop_counter import FlopCounterMode

import hope
from hope.atomic import write_text_atomic


def _solve_triangular_flops(a_shape, b_shape, *args, left: bool = True, out_shape=None, **kwargs) -> int:
    n = a_shape[-1]
    m = b_shape[-1] if left else b_shape[-2]
    return math.prod(b_shape[:-2]) * n * n * m


def _conv_backward_flops(grad_out_shape, x_shape, w_shape, *args, out_shape=None, **kwargs) -> int:
    # grouped (depthwise) convolutions: each requested gradient of input or weight costs the forward's
    # 2 · batch · out_length · prod(weight) multiply-adds; the counter's own formula ignores groups
    output_mask = args[-1]
    forward = 2 * grad_out_shape[0] * math.prod(grad_out_shape[2:]) * math.prod(w_shape)
    return forward * sum(bool(m) for m in output_mask[:2])


CUSTOM = {
    torch.ops.aten.linalg_solve_triangular: _solve_triangular_flops,
    torch.ops.aten.convolution_backward: _conv_backward_flops,
}


def _count(module: torch.nn.Module, x: torch.Tensor) -> tuple[int, int]:
    """Forward and backward FLOPs of ``module`` on ``x`` (its first output differentiated)."""
    x = x.clone().requires_grad_(True)
    with FlopCounterMode(display=False, custom_mapping=CUSTOM) as forward:
        out = module(x)
        out = out[0] if isinstance(out, tuple) else out
    grad = torch.randn_like(out)
    with FlopCounterMode(display=False, custom_mapping=CUSTOM) as backward:
        out.backward(grad)
    return forward.get_total_flops(), backward.get_total_flops()


def count_preset(preset: str, size: str, seq_len: int, vocab_size: int, checkpoint: bool) -> dict:
    """MFLOPs a token of each part of ``preset``'s training step at ``size`` and ``seq_len``."""
    over = {"vocab_size": vocab_size, "n_layers": 1, "impl": "chunked"}
    if preset != "transformer":
        over["titans.checkpoint_chunks"] = checkpoint
    cfg = hope.ModelConfig.preset(preset, size=size, **over)
    full = hope.ModelConfig.preset(preset, size=size, vocab_size=vocab_size)
    torch.manual_seed(0)
    model = hope.build_model(cfg)
    block = model.blocks[0]
    x = torch.randn(1, seq_len, cfg.d_model) * 0.5
    per_token = 1e6 * seq_len
    parts = {}
    for name in ("mixer", "ffn"):
        fwd, bwd = _count(getattr(block, name), x)
        parts[name] = {"forward": fwd / per_token, "backward": bwd / per_token}
    if cfg.block in ("transformer", "hope_attention"):
        attention = 2 * seq_len * cfg.d_model / 1e6  # QKᵀ and AV over the causal half
        parts["attention"] = {"forward": attention, "backward": 2 * attention}
    head = 2 * cfg.d_model * vocab_size / 1e6
    for part in parts.values():
        part["total"] = part["forward"] + part["backward"]
    block_total = sum(p["total"] for p in parts.values())
    return {
        "preset": preset,
        "block": cfg.block,
        "n_layers": full.n_layers,
        "parts_per_block": parts,
        "head": {"forward": head, "backward": 2 * head, "total": 3 * head},
        "total": full.n_layers * block_total + 3 * head,
        "params": hope.build_model(full).num_parameters(),
    }


def _measured(speed: dict, preset: str, impl: str | None, seq_len: int) -> dict | None:
    rows = [
        r
        for r in speed["rows"]
        if r["preset"] == preset
        and r["seq_len"] == seq_len
        and "tokens_per_s" in r
        and (impl is None or r["impl"] == impl)
    ]
    return max(rows, key=lambda r: r["tokens_per_s"]) if rows else None


def write_table(result: dict, path: str) -> str:
    lines = [
        f"FLOPs a token of a training step (forward + backward), counted on the CPU, {result['date']}; size "
        f"{result['size']}, T = {result['seq_len']}, vocabulary {result['vocab_size']}, chunk recompute "
        f"{'counted' if result['checkpoint'] else 'not counted'}. MFLOP a token:",
        "",
        "| preset | layers | mixer fwd / bwd | attention fwd / bwd | ffn fwd / bwd | head | model total | × transformer |",
        "|---|---:|---|---|---|---:|---:|---:|",
    ]
    base = next((r["total"] for r in result["rows"] if r["preset"] == "transformer"), None)
    for r in result["rows"]:
        p = r["parts_per_block"]

        def cell(name):
            return f"{p[name]['forward']:.1f} / {p[name]['backward']:.1f}" if name in p else "–"

        ratio = f"{r['total'] / base:.2f}" if base else "–"
        lines.append(
            f"| {r['preset']} | {r['n_layers']} | {cell('mixer')} | {cell('attention')} | {cell('ffn')} | "
            f"{r['head']['total']:.1f} | {r['total']:.1f} | {ratio} |"
        )
    if result.get("measured"):
        lines += [
            "",
            f"Measured tokens/s from `{result['speed_file']}` ({result['speed_device']}, {result['speed_date']}) "
            f"as achieved FLOP/s, against a peak of {result['peak_tflops']:g} TFLOP/s:",
            "",
            "| preset | impl | tokens/s | achieved TFLOP/s | of peak | tokens/s at peak | "
            + " | ".join(f"FLOP/s needed for {f:g}× (× the transformer's)" for f in result["fractions"])
            + " |",
            "|---|---|---:|---:|---:|---:|" + "---:|" * len(result["fractions"]),
        ]
        for m in result["measured"]:
            needs = " | ".join(
                f"{n['tflops']:.0f} TFLOP/s ({n['vs_transformer']:.2f}×)"
                if n.get("vs_transformer")
                else f"{n['tflops']:.0f}"
                for n in m["needed"]
            )
            lines.append(
                f"| {m['preset']} | {m['impl']} | {m['tokens_per_s']:,.0f} | {m['achieved_tflops']:.1f} | "
                f"{m['of_peak']:.1%} | {m['tokens_per_s_at_peak']:,.0f} | {needs} |"
            )
    text = "\n".join(lines) + "\n"
    write_text_atomic(path, text)
    return text


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", default="transformer,titans,hope")
    p.add_argument("--size", default="125m")
    p.add_argument("--seq-len", type=int, default=4096)
    p.add_argument("--vocab-size", type=int, default=32000, help="as benchmarks/speed.py")
    p.add_argument("--no-checkpoint", action="store_true", help="leave the chunks' recompute out")
    p.add_argument("--speed", default=None, help="a benchmarks/speed.py results.json to read as FLOP/s")
    p.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak (H100/H200 SXM)")
    p.add_argument("--fractions", default="0.7,1.0", help="target ratios to the compiled transformer")
    p.add_argument("--out", default="runs/flops")
    args = p.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    result = {
        "date": datetime.date.today().isoformat(),
        "torch": torch.__version__,
        "size": args.size,
        "seq_len": args.seq_len,
        "vocab_size": args.vocab_size,
        "checkpoint": not args.no_checkpoint,
        "command": " ".join(["python benchmarks/flops.py", *sys.argv[1:]]),
        "rows": [],
    }
    for preset in args.presets.split(","):
        print(f"counting {preset}", file=sys.stderr, flush=True)
        result["rows"].append(
            count_preset(preset, args.size, args.seq_len, args.vocab_size, not args.no_checkpoint)
        )
    if args.speed:
        with open(args.speed) as f:
            speed = json.load(f)
        fractions = [float(x) for x in args.fractions.split(",")]
        ref = _measured(speed, "transformer", "compiled", args.seq_len)
        totals = {r["preset"]: r["total"] for r in result["rows"]}
        # the compiled transformer's achieved FLOP/s, where both its speed and its count are at hand
        ref_tflops = (
            ref["tokens_per_s"] * totals["transformer"] * 1e6 / 1e12
            if ref and "transformer" in totals
            else None
        )
        measured = []
        for r in result["rows"]:
            impl = "compiled" if r["preset"] == "transformer" else None
            row = _measured(speed, r["preset"], impl, args.seq_len)
            if row is None:
                continue
            achieved = row["tokens_per_s"] * r["total"] * 1e6 / 1e12
            needed = []
            for frac in fractions if ref else ():
                tflops = frac * ref["tokens_per_s"] * r["total"] * 1e6 / 1e12
                ratio = tflops / ref_tflops if ref_tflops else None
                needed.append({"fraction": frac, "tflops": tflops, "vs_transformer": ratio})
            measured.append(
                {
                    "preset": r["preset"],
                    "impl": row["impl"],
                    "tokens_per_s": row["tokens_per_s"],
                    "achieved_tflops": achieved,
                    "of_peak": achieved / args.peak_tflops,
                    "tokens_per_s_at_peak": args.peak_tflops * 1e12 / (r["total"] * 1e6),
                    "needed": needed,
                }
            )
        result.update(
            measured=measured,
            fractions=fractions,
            peak_tflops=args.peak_tflops,
            speed_file=args.speed,
            speed_device=speed.get("device"),
            speed_date=speed.get("date"),
        )
    os.makedirs(args.out, exist_ok=True)
    write_text_atomic(os.path.join(args.out, "results.json"), json.dumps(result, indent=2) + "\n")
    print(write_table(result, os.path.join(args.out, "results.md")))


if __name__ == "__main__":
    main()
