"""Newton–Schulz orthogonalisation (Eq. 43–44), the non-linear output of Muon (Eq. 52) and M3 (Algorithm 1).

`newton_schulz(G)` approximates the orthogonal polar factor U Vᵀ of G = U Σ Vᵀ by iterating an odd
matrix polynomial X ← a X + b (X Xᵀ) X + c (X Xᵀ)² X on X₀ = G / ‖G‖_F, which acts on every singular
value separately as σ ← a σ + b σ³ + c σ⁵.

- ``"quintic"`` (a, b, c) = (3.4445, −4.7750, 2.0315), the coefficients popularised by Muon: the slope
  a ≈ 3.4 at σ = 0 lifts small singular values fast, at the price of never converging exactly: after
  T steps every singular value with σ₀ ≥ 0.2·3.4^(1−T)·‖G‖_F (1.5e-3·‖G‖_F for T = 5) lies in
  [0.68, 1.21] and stays there; smaller ones are still on their way up (between 0 and 0.68).
- ``"cubic"`` (1.5, −0.5, 0): the classical Newton–Schulz step X ← X (3I − XᵀX)/2 of Eq. 44 (one
  gradient step on ‖XᵀX − I‖²). It converges quadratically to exactly 1 near σ = 1 but only grows small
  singular values by 1.5× per step, so it needs more steps (≈ 30 for a condition number of 1e3).

Orthogonalisation is scale invariant (NS(cG) = NS(G) for c > 0) — which is why M3's β's only matter
through the relative weights they give old and new gradients (see `hope.optim.m3`).
"""

from __future__ import annotations

import torch

NS_COEFFICIENTS: dict[str, tuple[float, float, float]] = {
    "quintic": (3.4445, -4.7750, 2.0315),
    "cubic": (1.5, -0.5, 0.0),
}


def check_ns_args(ns_steps: int, ns_coefficients: str) -> None:
    """Validate the Newton–Schulz hyper-parameters shared by Muon, M3 and the factory."""
    if not isinstance(ns_steps, int) or isinstance(ns_steps, bool) or ns_steps < 1:
        raise ValueError(f"ns_steps must be an integer >= 1, got {ns_steps!r}")
    if ns_coefficients not in NS_COEFFICIENTS:
        raise ValueError(f"ns_coefficients must be one of {sorted(NS_COEFFICIENTS)}, got {ns_coefficients!r}")


def newton_schulz(G: torch.Tensor, steps: int = 5, coefficients: str = "quintic") -> torch.Tensor:
    """Approximate polar factor of each trailing (m, n) matrix of G by `steps` Newton–Schulz steps (Eq. 44)."""
    check_ns_args(steps, coefficients)
    if G.ndim < 2:
        raise ValueError(f"G must have at least 2 dimensions (a matrix), got shape {tuple(G.shape)}")
    a, b, c = NS_COEFFICIENTS[coefficients]
    # bf16/fp16 momenta are orthogonalised in fp32: the polynomial amplifies rounding of small values.
    compute_dtype = G.dtype if G.dtype in (torch.float32, torch.float64) else torch.float32
    X = G.to(compute_dtype)
    tall = X.size(-2) > X.size(-1)
    if tall:  # iterate on the smaller Gram matrix X Xᵀ; the polynomial commutes with transposition
        X = X.mT
    # Dividing by max(‖X‖_F, tiny) rather than ‖X‖_F + ε keeps NS exactly scale invariant for tiny gradients
    # and still maps a zero matrix to zero.
    X = X / torch.linalg.matrix_norm(X, keepdim=True).clamp_min(torch.finfo(compute_dtype).tiny)
    for _ in range(steps):
        A = X @ X.mT
        B = b * A + c * (A @ A) if c else b * A  # the cubic form has no A² term: skip that matmul
        X = a * X + B @ X
    if tall:
        X = X.mT
    return X.to(G.dtype)


def as_matrix(t: torch.Tensor) -> torch.Tensor:
    """View a ≥2-D tensor as (shape[0], rest): conv kernels (out, in, kh, kw) become (out, in·kh·kw)."""
    return t.reshape(t.shape[0], -1)


def _is_dtensor(t: torch.Tensor) -> bool:
    return type(t).__name__ == "DTensor" and hasattr(t, "full_tensor")


def gather(t: torch.Tensor) -> torch.Tensor:
    """The full tensor behind an FSDP2 DTensor shard (one all-gather); any other tensor unchanged."""
    return t.full_tensor() if _is_dtensor(t) else t


def scatter_like(full: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """This rank's shard of `full`, placed like the DTensor `like`, sliced locally without communication."""
    if not _is_dtensor(like):
        return full
    from torch.distributed.tensor import distribute_tensor

    return distribute_tensor(full, like.device_mesh, like.placements, src_data_rank=None)


def apply_to_full(fn, t: torch.Tensor) -> torch.Tensor:
    """fn(t); for an FSDP2 DTensor shard, fn of the gathered full tensor, then this rank's shard of it.

    Orthogonalisation couples all rows and columns (X Xᵀ), so running it per shard would orthogonalise
    each block separately — a different, world-size-dependent update. Every rank therefore gathers the
    full matrix (`full_tensor()`, one all-gather), computes the same result redundantly, and slices out
    its own shard locally (`src_data_rank=None`: no second communication).
    """
    return scatter_like(fn(gather(t)), t)


def orthogonalize(M: torch.Tensor, steps: int, coefficients: str) -> torch.Tensor:
    """NewtonSchulz_T(M) for a parameter-shaped tensor: ≥3-D tensors are orthogonalised as `as_matrix(M)`."""
    return apply_to_full(lambda m: newton_schulz(as_matrix(m), steps, coefficients).reshape(m.shape), M)
