"""Triton read of a residual CMS level for one token (Eq. 70's MLP^(f_ℓ) while decoding): y = z + W_2 σ(W_1 z).

At batch 1 a level's read is two matrix-vector products over weights each sequence holds for itself
(fast weights W_1 (B, F, D), W_2 (B, D, F); a frozen level's (F, D), (D, F) are shared). cuBLAS runs
each as a GEMV of its own, with the activation and the residual add as further kernels: at 125m
that is 3.2 µs a GEMV, 72 of them a token. Here a read is two launches, each spread over enough
programs that it could stream its matrix near the memory's rate (not yet timed): `up_kernel` (h = σ(W_1 z), rows of W_1 over
programs) and `down_kernel` (y = z + W_2 h, rows of W_2 over programs, F walked in blocks).

The numbers follow autocast's: z is rounded to the weights' dtype before the product, h and W_2 h to
it after (as a bf16 matmul's output is), products accumulate in float32 (float64 for float64
weights), and the residual add is in the promoted dtype of z and the weights.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from hope.ops.titans.chunk_fwd import _act

# rows of W_1 / W_2 a program reads, the width of the blocks it walks them in, and its warps:
# at d 768, F 3072 that is 192 programs a launch (132 SMs)
TILES = {"rows_up": 16, "rows_down": 4, "block": 256, "num_warps": 4}
# Whether impl "auto" takes the kernels on CUDA (impl "triton" always does). On since they were timed
# against PyTorch's matmuls (`benchmarks/gpu_check.sh cms-read`, H200, 2026-12-03): hope-125m decodes
# at 1,162 tokens/s with them and 1,038 without, at context 4,096.
ENABLED = True
ACTIVATIONS = ("gelu", "silu")


@triton.jit
def _rows_times(w_ptr, x_ptr, rows, R: tl.constexpr, C: tl.constexpr, ROWS: tl.constexpr, BLOCK: tl.constexpr,
                F64: tl.constexpr):  # fmt: skip
    """W[rows] x for a row-major (R, C) matrix W, walked BLOCK columns at a time: x rounded to W's
    dtype, the products summed in float32 (float64)."""
    acc = tl.zeros((ROWS,), dtype=tl.float64 if F64 else tl.float32)
    for start in range(0, C, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        w = tl.load(
            w_ptr + rows[:, None] * C + cols[None, :],
            mask=(rows[:, None] < R) & (cols[None, :] < C),
            other=0.0,
        )
        x = tl.load(x_ptr + cols, mask=cols < C, other=0.0).to(w.dtype)
        acc += tl.sum(w.to(acc.dtype) * x.to(acc.dtype)[None, :], 1)
    return acc


@triton.jit
def up_kernel(
    z_ptr, w_ptr, h_ptr, w_stride_b,
    D: tl.constexpr, F: tl.constexpr, ROWS: tl.constexpr, BLOCK: tl.constexpr, F64: tl.constexpr,
    ACT: tl.constexpr,
):  # fmt: skip
    """h[b, rows] = σ(W_1[b, rows] z[b]) for one block of ROWS hidden units."""
    b = tl.program_id(0)
    rows = tl.program_id(1) * ROWS + tl.arange(0, ROWS)
    acc = _rows_times(w_ptr + b * w_stride_b, z_ptr + b * D, rows, F, D, ROWS, BLOCK, F64)
    pre = acc.to(h_ptr.dtype.element_ty).to(acc.dtype)  # a low-precision product's output is rounded
    tl.store(h_ptr + b * F + rows, _act(pre, ACT).to(h_ptr.dtype.element_ty), mask=rows < F)


@triton.jit
def down_kernel(
    z_ptr, w_ptr, h_ptr, y_ptr, w_stride_b,
    D: tl.constexpr, F: tl.constexpr, ROWS: tl.constexpr, BLOCK: tl.constexpr, F64: tl.constexpr,
):  # fmt: skip
    """y[b, rows] = z[b, rows] + W_2[b, rows] h[b] for one block of ROWS outputs."""
    b = tl.program_id(0)
    rows = tl.program_id(1) * ROWS + tl.arange(0, ROWS)
    acc = _rows_times(w_ptr + b * w_stride_b, h_ptr + b * F, rows, D, F, ROWS, BLOCK, F64)
    out = acc.to(h_ptr.dtype.element_ty).to(acc.dtype)
    z = tl.load(z_ptr + b * D + rows, mask=rows < D, other=0.0).to(acc.dtype)
    tl.store(y_ptr + b * D + rows, (z + out).to(y_ptr.dtype.element_ty), mask=rows < D)


def _batch_stride(w: torch.Tensor) -> int:
    return w.stride(0) if w.dim() == 3 else 0  # a frozen level's weights are shared by the batch


def why_not(z: torch.Tensor, w_up: torch.Tensor, w_down: torch.Tensor, activation: str) -> str | None:
    """Why `read_level` cannot run these tensors (None: it can); where Triton runs at all is
    `hope.ops.triton_reason`'s to say."""
    if activation not in ACTIVATIONS:
        return f"activation {activation!r} (the kernel has {ACTIVATIONS})"
    if z.dim() != 3 or z.shape[1] != 1:
        return f"z of shape {tuple(z.shape)}, not one token (B, 1, D)"
    b, _, d = z.shape
    f = w_up.shape[-2]
    for name, w, shape in (("w_up", w_up, (f, d)), ("w_down", w_down, (d, f))):
        if tuple(w.shape[-2:]) != shape or w.dim() not in (2, 3) or (w.dim() == 3 and w.shape[0] != b):
            return f"{name} of shape {tuple(w.shape)}, not {shape} or ({b}, *{shape})"
        if w.stride(-1) != 1 or w.stride(-2) != shape[1]:
            return f"{name} with strides {w.stride()}: its matrices must be row-major"
        if w.dtype != w_up.dtype:
            return f"w_up in {w_up.dtype} but w_down in {w.dtype}"
    if w_up.dtype not in (torch.float64, torch.float32, torch.bfloat16, torch.float16):
        return f"weights in {w_up.dtype}"
    return None


def read_level(z: torch.Tensor, w_up: torch.Tensor, w_down: torch.Tensor, activation: str) -> torch.Tensor:
    """z + W_2 σ(W_1 z) for one token z (B, 1, D), in two launches (module doc); check `why_not` first."""
    b, _, d = z.shape
    f = w_up.shape[-2]
    z = z.contiguous()
    h = z.new_empty((b, f), dtype=w_up.dtype)
    y = z.new_empty((b, 1, d), dtype=torch.promote_types(z.dtype, w_up.dtype))
    f64 = w_up.dtype == torch.float64
    up, down, block = TILES["rows_up"], TILES["rows_down"], TILES["block"]
    up_kernel[(b, triton.cdiv(f, up))](
        z, w_up, h, _batch_stride(w_up), D=d, F=f, ROWS=up, BLOCK=min(block, triton.next_power_of_2(d)),
        F64=f64, ACT=ACTIVATIONS.index(activation), num_warps=TILES["num_warps"],
    )  # fmt: skip
    down_kernel[(b, triton.cdiv(d, down))](
        z, w_down, h, y, _batch_stride(w_down), D=d, F=f, ROWS=down,
        BLOCK=min(block, triton.next_power_of_2(f)), F64=f64, num_warps=TILES["num_warps"],
    )  # fmt: skip
    return y
