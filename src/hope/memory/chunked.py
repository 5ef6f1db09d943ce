"""Chunk-parallel evolution of memory weights inside one chunk (Eq. 90), in pure PyTorch.

With the per-token gradients g_t u_tᵀ fixed at the chunk start, every linear layer W of a memory
evolves inside a chunk by a linear recurrence that is parallel over the chunk's tokens:

  gd:        W_t = α_t W_{t-1} + v_t k_tᵀ                       (k = û, v = −η‖u‖g)
  dgd:       W_t = W_{t-1}(α_t I − η_t k_t k_tᵀ) + v_t k_tᵀ      (k = û, v = −η g)
             — the gated delta rule; solved with a unit-lower-triangular system (the UT/WY form)
  momentum:  S_t = β_t S_{t-1} + v_t u_tᵀ,  W_t = α_t W_{t-1} + S_t   (v = −η g)

All decays enter as ratios exp(log γ_t − log γ_s) with s ≤ t, never as 1/γ, so long chunks with
strong decay stay finite. Each function returns the retrievals W_{t-1} x_t (or W_t x_t with
`include_current`) for queries x, and the end-of-chunk state.
"""

from __future__ import annotations

import torch

from hope.memory import core


def _decay_matrix(log_row: torch.Tensor, log_col: torch.Tensor, include_diagonal: bool) -> torch.Tensor:
    """D[t, s] = exp(log_row[t] − log_col[s]) for s < t (s ≤ t with the diagonal), else 0."""
    n = log_row.shape[-1]
    mask = torch.ones(n, n, dtype=torch.bool, device=log_row.device).tril(0 if include_diagonal else -1)
    diff = log_row[..., :, None] - log_col[..., None, :]
    return torch.exp(diff.masked_fill(~mask, float("-inf")))


def delta_chunk(w0, k, v, c, log_alpha, queries=None, include_current=False):
    """Gated delta rule over one chunk. w0 (*b, o, i); k, queries (*b, n, i); v (*b, n, o); c, log_alpha (*b, n)."""
    la = torch.cumsum(log_alpha, dim=-1)  # log γ_t
    la_prev = la - log_alpha  # log γ_{t-1}
    d_strict = _decay_matrix(la_prev, la, include_diagonal=False)
    lower = c[..., :, None] * (k @ k.transpose(-1, -2)) * d_strict
    rhs = v - (c * torch.exp(la_prev))[..., None] * (k @ w0.transpose(-1, -2))
    eye = torch.eye(lower.shape[-1], dtype=lower.dtype, device=lower.device)
    r = torch.linalg.solve_triangular(eye + lower, rhs, upper=False, unitriangular=True)
    la_end = la[..., -1:]
    w_end = torch.exp(la_end)[..., None] * w0 + (r * torch.exp(la_end - la)[..., None]).transpose(-1, -2) @ k
    if queries is None:
        return None, w_end
    if include_current:
        scale, d = torch.exp(la), _decay_matrix(la, la, include_diagonal=True)
    else:
        scale, d = torch.exp(la_prev), d_strict
    out = scale[..., None] * (queries @ w0.transpose(-1, -2)) + (d * (queries @ k.transpose(-1, -2))) @ r
    return out, w_end


def momentum_chunk(w0, s0, u, v, log_alpha, log_beta, queries=None, include_current=False):
    """Momentum rule over one chunk. w0, s0 (*b, o, i); u, queries (*b, n, i); v (*b, n, o)."""
    la = torch.cumsum(log_alpha, dim=-1)
    lb = torch.cumsum(log_beta, dim=-1)
    da = _decay_matrix(la, la, include_diagonal=True)  # a_t / a_r, r ≤ t
    db = _decay_matrix(lb, lb, include_diagonal=True)  # b_r / b_s, s ≤ r
    mix = da @ db  # m[t, s] = Σ_{r=s..t} (a_t/a_r)(b_r/b_s)
    coef_s0 = (da @ torch.exp(lb)[..., None])[..., 0]  # Σ_{r≤t} (a_t/a_r) b_r
    w_end = (
        torch.exp(la[..., -1])[..., None, None] * w0
        + coef_s0[..., -1, None, None] * s0
        + (v * mix[..., -1, :, None]).transpose(-1, -2) @ u
    )
    s_end = (
        torch.exp(lb[..., -1])[..., None, None] * s0
        + (v * torch.exp(lb[..., -1:] - lb)[..., None]).transpose(-1, -2) @ u
    )
    if queries is None:
        return None, w_end, s_end
    scale = torch.exp(la)
    if not include_current:  # shift to row t−1; row 0 reads W_0
        pad = torch.zeros_like(mix[..., :1, :])
        mix = torch.cat([pad, mix[..., :-1, :]], dim=-2)
        coef_s0 = torch.cat([torch.zeros_like(coef_s0[..., :1]), coef_s0[..., :-1]], dim=-1)
        scale = torch.exp(la - log_alpha)
    out = (
        scale[..., None] * (queries @ w0.transpose(-1, -2))
        + coef_s0[..., None] * (queries @ s0.transpose(-1, -2))
        + (mix * (queries @ u.transpose(-1, -2))) @ v
    )
    return out, w_end, s_end


def evolve_chunk(
    spec: core.MemorySpec,
    rule: str,
    weights,
    momentum,
    inputs,
    errors,
    log_alpha,
    eta,
    log_beta=None,
    queries=None,
    include_current=False,
    base=None,
):
    """Evolve every layer of one memory across a chunk; optionally retrieve M_{t-1}(q_t) for queries.

    inputs[i] (*b, n, in_i) and errors[i] (*b, n, out_i) are the per-token gradient factors fixed at
    the chunk start. Layers evolve independently, so retrieval goes layer by layer: layer i's
    queries are σ(layer i−1's retrieved pre-activations). With `base` (W_0 per layer, as in
    `core.step`) the recurrence runs on W − W_0 and every retrieval adds the static part z W_0ᵀ.
    """
    z = queries
    new_w, new_s = [], []
    for i, (w, u, g) in enumerate(zip(weights, inputs, errors)):
        w0 = None if base is None else base[i]
        if w0 is not None:
            w = w - w0
        if rule == "momentum":
            out, w_end, s_end = momentum_chunk(
                w, momentum[i], u, -eta[..., None] * g, log_alpha, log_beta, z, include_current
            )
            new_s.append(s_end)
        else:
            # as core.normalize, so gd's v kᵀ = −η g uᵀ exactly
            norm = u.norm(dim=-1, keepdim=True).clamp_min(1e-6)
            if rule == "dgd":
                out, w_end = delta_chunk(w, u / norm, -eta[..., None] * g, eta, log_alpha, z, include_current)
            else:
                out, w_end = delta_chunk(
                    w,
                    u / norm,
                    -eta[..., None] * norm * g,
                    torch.zeros_like(eta),
                    log_alpha,
                    z,
                    include_current,
                )
        if w0 is not None:
            w_end = w_end + w0
            if out is not None:
                out = out + z @ w0.transpose(-1, -2)
        new_w.append(w_end)
        if z is not None:
            z = core.activation(spec.activation, out) if i < len(weights) - 1 else out
    if z is not None and spec.kind == "mlp":
        z = z + queries
    return z, new_w, (new_s if rule == "momentum" else momentum)
