"""Compile the Titans kernels (and the CMS one-token read, `hope.ops.cms_step`) for a GPU target on any machine, no GPU needed (Triton's frontend, its
GPU passes, PTX and ptxas): what Triton's interpreter accepts but its compiler refuses fails here, and
each kernel's shared memory and register spills are reported against the target's limit.

    python -m hope.ops.titans.compile_for                       # the study's shapes, sm_90 (H100 / H200)
    python -m hope.ops.titans.compile_for --head-dim 16 --hidden 32 --heads 2 --num-warps 4 8

Run it with TRITON_INTERPRET unset: under the interpreter `triton.jit` makes no compilable kernels.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

HOPPER_SHARED = 232448  # bytes of shared memory a block may use on sm_90 (227 KB)

# (name, kernel, constexprs beyond the shapes, runtime int arguments, runtime float arguments)
_RUNTIME = {"T", "c", "kv_T", "kv_t0", "g_T", "g_t0", "keep_every", "n_kept", "count"}


def _configs():
    from hope.ops.titans import chunk_bwd, chunk_split

    hope = dict(SGV=True, L2=True, RULE=1, BASE=True, CLIP=1.0, READ=1)
    return [
        ("forward update (hope)", chunk_split.update_kernel, {**hope, "SHARE_INV": True}),
        ("forward gate (relative, surprise traced)", chunk_split.gate_kernel,
         dict(SGV=True, L2=True, MODE=2, WINDOW=64, SHARE_INV=True, TRACE=True)),
        ("backward memory (hope)", chunk_bwd.memory_bwd_kernel, hope),
        ("backward memory (Titans LMM: momentum, inclusive read)", chunk_bwd.memory_bwd_kernel,
         dict(SGV=False, L2=True, RULE=2, BASE=True, CLIP=0.0, READ=2, P=1)),
        ("backward memory (matrix, gd, dot)", chunk_bwd.memory_bwd_kernel,
         dict(SGV=False, L2=False, RULE=0, BASE=False, CLIP=0.0, READ=1, P=1, MLP=False)),
        ("backward generation (hope)", chunk_bwd.generate_bwd_kernel, {}),
        ("backward generation (matrix)", chunk_bwd.generate_bwd_kernel, dict(MLP=False)),
    ]  # fmt: skip


def _cms_configs(d_model: int, hidden: int):
    """The CMS read's two kernels as a bf16 decode step runs them (float32 stream, bf16 weights)."""
    from hope.ops import cms_step

    tiles = cms_step.TILES
    shapes = dict(D=d_model, F=hidden, BLOCK=tiles["block"], F64=False)
    up = {"z_ptr": "*fp32", "w_ptr": "*bf16", "h_ptr": "*bf16", "w_stride_b": "i32"}
    return [
        ("cms read: up (bf16)", cms_step.up_kernel, up, {**shapes, "ROWS": tiles["rows_up"], "ACT": 0}),
        ("cms read: down (bf16)", cms_step.down_kernel, {**up, "y_ptr": "*fp32"}, {**shapes, "ROWS": tiles["rows_down"]}),
    ]  # fmt: skip


def _ptxas_report(ptx: str, arch: str) -> dict:
    import triton

    ptxas = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "kernel.ptx")
        with open(path, "w") as f:
            f.write(ptx)
        out = subprocess.run(
            [ptxas, f"-arch={arch}", "-v", path, "-o", os.devnull], capture_output=True, text=True
        )
    text = out.stdout + out.stderr
    spill = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", text)
    regs = re.search(r"Used (\d+) registers", text)
    return {
        "registers": int(regs.group(1)) if regs else None,
        "spill_store_bytes": int(spill.group(1)) if spill else None,
        "spill_load_bytes": int(spill.group(2)) if spill else None,
    }


def _compile(name: str, fn, signature: dict, consts: dict, num_warps: int, capability: int) -> dict:
    """One kernel compiled for the target: its shared memory, registers and spills (or the error)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    row = {"kernel": name, "num_warps": num_warps}
    try:
        kernel = triton.compile(
            ASTSource(fn, {**signature, **{k: "constexpr" for k in consts}}, consts),
            target=GPUTarget("cuda", capability, 128),
            options={"num_warps": num_warps},
        )
        row["shared_bytes"] = kernel.metadata.shared
        row["fits"] = kernel.metadata.shared <= HOPPER_SHARED
        row.update(_ptxas_report(kernel.asm["ptx"], f"sm_{capability}a"))
    except Exception as err:  # noqa: BLE001 - a compiler error is the report
        row["error"] = f"{type(err).__name__}: {str(err).strip().splitlines()[-1]}"
    print(json.dumps(row), flush=True)
    return row


def compile_all(
    head_dim: int,
    hidden: int,
    chunk: int,
    heads: int,
    memories: int,
    num_warps: int,
    capability: int = 90,
    d_model: int = 768,
):
    """Compile every configuration of `_configs` at these shapes, and the CMS read at `d_model`
    (hidden 4×); a row per kernel (or the error)."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        raise SystemExit("TRITON_INTERPRET=1 makes no compilable kernels: unset it")
    shapes = dict(H=heads, P=memories, BT=chunk, D=head_dim, F=hidden, MLP=True, ACT=0, PREC="tf32")
    rows = []
    for name, fn, extra in _configs():
        consts = {**shapes, **extra}
        if not consts["MLP"]:
            consts["F"] = head_dim
        consts["SCR"] = chunk * max(chunk, head_dim, consts["F"])
        consts = {k: v for k, v in consts.items() if k in fn.arg_names}
        signature = {
            arg: "i32" if arg in _RUNTIME else "fp32" if arg in ("threshold", "eta_max") else "*fp32"
            for arg in fn.arg_names if arg not in consts
        }  # fmt: skip
        rows.append(_compile(name, fn, signature, consts, num_warps, capability))
    for name, fn, signature, consts in _cms_configs(d_model, 4 * d_model):
        rows.append(_compile(name, fn, signature, consts, num_warps, capability))
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--hidden", type=int, default=128, help="the MLP memories' hidden width")
    p.add_argument("--chunk", type=int, default=16)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--memories", type=int, default=5)
    p.add_argument("--num-warps", type=int, nargs="+", default=[4, 8])
    p.add_argument("--d-model", type=int, default=768, help="the CMS read's width (hidden 4x)")
    args = p.parse_args(argv)
    rows = []
    for warps in args.num_warps:
        rows += compile_all(
            args.head_dim, args.hidden, args.chunk, args.heads, args.memories, warps, d_model=args.d_model
        )
    return 1 if any("error" in row for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
