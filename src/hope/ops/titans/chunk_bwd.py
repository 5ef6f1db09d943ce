"""Triton backward of a memory's evolution over one chunk: stage 1 of the chunk backward
(`docs/PERFORMANCE.md`, "Plan: the Titans backward as kernels").

Given the per-token gradient factors fixed at the chunk start (u_i, g_i of every layer), η and log α,
the queries of the read and the gradients of the read and of the end state, it returns the
gradients of the chunk-start weights (through the evolution and the read, not through u_i and g_i),
of u_i, g_i (before the error clip), η, log α, the queries and W_0 (`decay_to="init"`). Stages 2–4
(through the gradient factors at the anchor and the generation) take these up.

Rules: dgd and gd (the UT form of `chunk_fwd._delta_layer`); momentum has no backward kernel yet.
Everything is recomputed from the chunk-start weights: nothing of the forward is stored. Transposes
of computed tiles go through the program's scratch (`chunk_fwd._transpose`), never `tl.trans`.
`evolve_bwd_kernel` runs one memory a program; the layer's chunk backward will call
`evolve_memory_bwd` from its own kernels.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from hope.ops.titans.chunk_fwd import (
    _act,
    _act_grad,
    _clip,
    _load,
    _load_t,
    _mm,
    _store_t,
    _transpose,
    _unit_lower_inverse,
)


@triton.jit
def _clip_bwd(g, d_clipped, CLIP: tl.constexpr):
    """VJP of `_clip` (g · CLIP / max(‖g‖, CLIP)) at g."""
    if CLIP > 0:
        norm = tl.sqrt(tl.sum(g * g, 1))
        over = norm > CLIP
        unit = g / tl.maximum(norm, 1e-30)[:, None]
        radial = tl.sum(unit * d_clipped, 1)
        scaled = (CLIP / tl.maximum(norm, CLIP))[:, None] * (d_clipped - unit * radial[:, None])
        d = tl.where(over[:, None], scaled, d_clipped)
    else:
        d = d_clipped
    return d


@triton.jit
def _delta_prepare(
    w_in, w0, scratch, u, g, eta, la,
    BT: tl.constexpr, O: tl.constexpr, I: tl.constexpr, DGD: tl.constexpr, BASE: tl.constexpr,
    PREC: tl.constexpr,
):  # fmt: skip
    """The forward's pieces of one delta layer (`_delta_layer`): k = û, its transpose, v, β, the
    log-decays, Wᵀ and W (less W_0 with BASE), the strict decay matrix and its transpose, and r."""
    offs = tl.arange(0, BT)
    norm = tl.maximum(tl.sqrt(tl.sum(u * u, 1)), 1e-6)
    k = u / norm[:, None]
    if DGD:
        v = -eta[:, None] * g
        beta = eta
    else:
        v = -(eta * norm)[:, None] * g
        beta = eta * 0.0
    cum = tl.cumsum(la, 0)
    cp = cum - la
    strict = offs[:, None] > offs[None, :]
    ds = tl.where(strict, tl.exp(tl.where(strict, cp[:, None] - cum[None, :], 0.0)), 0.0)
    above = offs[None, :] > offs[:, None]
    ds_t = tl.where(above, tl.exp(tl.where(above, cp[None, :] - cum[:, None], 0.0)), 0.0)
    k_t = _transpose(scratch, k, BT, I)  # (I, BT)
    w_t = _load_t(w_in, O, I)  # Wᵀ (I, O)
    w = _load(w_in, O, I)  # W (O, I)
    if BASE:
        w_t = w_t - _load_t(w0, O, I)
        w = w - _load(w0, O, I)
    kk = _mm(k, k_t, PREC)  # symmetric
    kw = _mm(k, w_t, PREC)  # (BT, O)
    rhs = v - (beta * tl.exp(cp))[:, None] * kw
    if DGD:
        r = _mm(_unit_lower_inverse(beta[:, None] * kk * ds, BT, PREC), rhs, PREC)
    else:
        r = rhs
    return norm, k, k_t, v, beta, cum, cp, ds, ds_t, w_t, w, kk, kw, r


@triton.jit
def _read_decay(cum, cp, ds, ds_t, BT: tl.constexpr, RETRIEVE: tl.constexpr):
    """The read's decay matrix, its transpose and the W_0-part scale: W_{t-1} (1) or W_t (2)."""
    if RETRIEVE == 2:
        offs = tl.arange(0, BT)
        incl = offs[:, None] >= offs[None, :]
        d = tl.where(incl, tl.exp(tl.where(incl, cum[:, None] - cum[None, :], 0.0)), 0.0)
        upper = offs[None, :] >= offs[:, None]
        d_t = tl.where(upper, tl.exp(tl.where(upper, cum[None, :] - cum[:, None], 0.0)), 0.0)
        scale = tl.exp(cum)
    else:
        d, d_t, scale = ds, ds_t, tl.exp(cp)
    return d, d_t, scale


@triton.jit
def _delta_read(
    w_in, w0, scratch, u, g, eta, la, z,
    BT: tl.constexpr, O: tl.constexpr, I: tl.constexpr, DGD: tl.constexpr, BASE: tl.constexpr,
    RETRIEVE: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    """The retrieval of one delta layer at queries z (BT, I), as `_delta_layer` returns it."""
    _, _, k_t, _, _, cum, cp, ds, ds_t, w_t, _, _, _, r = _delta_prepare(
        w_in, w0, scratch, u, g, eta, la, BT, O, I, DGD, BASE, PREC
    )
    d, _, scale = _read_decay(cum, cp, ds, ds_t, BT, RETRIEVE)
    out = scale[:, None] * _mm(z, w_t, PREC) + _mm(_mm(z, k_t, PREC) * d, r, PREC)
    if BASE:
        out = out + _mm(z, _load_t(w0, O, I), PREC)
    return out


@triton.jit
def _delta_layer_bwd(
    w_in, w0, d_end, scratch, u, g, eta, la, z, d_out,
    BT: tl.constexpr, O: tl.constexpr, I: tl.constexpr, DGD: tl.constexpr, BASE: tl.constexpr,
    RETRIEVE: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    """VJP of one delta layer W (O, I) over the chunk (`_delta_layer`) for the gradient d_end of W_end
    (O, I, at a pointer) and d_out (BT, O) of its retrieval at z (RETRIEVE 0: no read).

    Returns (dWᵀ of the start weights (I, O), dW_0ᵀ (I, O), du (BT, I), dg (BT, O), dη, d log α (BT,),
    dz (BT, I))."""
    norm, k, k_t, v, beta, cum, cp, ds, ds_t, w_t, w, kk, kw, r = _delta_prepare(
        w_in, w0, scratch, u, g, eta, la, BT, O, I, DGD, BASE, PREC
    )
    cum_end = tl.sum(la, 0)
    d_end_t = _load_t(d_end, O, I)  # (I, O)
    # W_end − W_0 = γ_end (W − W_0) + Σ_s (γ_end/γ_s) r_s k_sᵀ
    decay_end = tl.exp(cum_end - cum)
    d_wt = tl.exp(cum_end) * d_end_t
    d_cum_end = tl.exp(cum_end) * tl.sum(tl.sum(w_t * d_end_t, 1), 0)
    d_k = _mm(r * decay_end[:, None], _load(d_end, O, I), PREC)
    d_er = _mm(k, d_end_t, PREC)  # (BT, O)
    d_r = d_er * decay_end[:, None]
    d_decay_end = tl.sum(r * d_er, 1) * decay_end
    d_cum_end += tl.sum(d_decay_end, 0)
    d_cum = -d_decay_end
    d_cp = cum * 0.0
    r_t = _transpose(scratch, r, BT, O)  # (O, BT)
    if RETRIEVE:
        # out = scale (z Wᵀ) + ((z kᵀ) ∘ D) r
        d, d_t, scale = _read_decay(cum, cp, ds, ds_t, BT, RETRIEVE)
        z_t = _transpose(scratch, z, BT, I)  # (I, BT)
        y = _mm(z, w_t, PREC)
        d_y = scale[:, None] * d_out
        d_wt += _mm(z_t, d_y, PREC)
        d_z = _mm(d_y, w, PREC)
        d_scale = tl.sum(d_out * y, 1) * scale
        zk = _mm(z, k_t, PREC)
        d_r += _mm(_mm(k, z_t, PREC) * d_t, d_out, PREC)
        d_mix = _mm(d_out, r_t, PREC)  # ∂/∂((z kᵀ) ∘ D)
        d_zk = d_mix * d
        d_z += _mm(d_zk, k, PREC)
        d_k += _mm(_transpose(scratch, d_zk, BT, BT), z, PREC)
        grad_decay = d_mix * zk * d  # ∂/∂(log of D's entries)
        if RETRIEVE == 2:
            d_cum += tl.sum(grad_decay, 1) - tl.sum(grad_decay, 0) + d_scale
        else:
            d_cp += tl.sum(grad_decay, 1) + d_scale
            d_cum -= tl.sum(grad_decay, 0)
        if BASE:
            d_z += _mm(d_out, _load(w0, O, I), PREC)
    else:
        d_z = tl.zeros((BT, I), dtype=u.dtype)
    # r = (I + A)⁻¹ rhs, A = β_t (k_t·k_s) D_s (s < t): ∂rhs = (I + Aᵀ)⁻¹ ∂r, ∂A = −∂rhs rᵀ
    if DGD:
        a_t = beta[None, :] * kk * ds_t
        d_rhs = _mm(_unit_lower_inverse(a_t, BT, PREC), d_r, PREC)
        d_a = -_mm(d_rhs, r_t, PREC) * ds  # ∂A ∘ D_s
        d_beta = tl.sum(d_a * kk, 1)
        d_kk = beta[:, None] * d_a
        d_k += _mm(d_kk + _transpose(scratch, d_kk, BT, BT), k, PREC)
        grad_decay = d_kk * kk
        d_cp += tl.sum(grad_decay, 1)
        d_cum -= tl.sum(grad_decay, 0)
    else:
        d_rhs = d_r
        d_beta = beta * 0.0
    # rhs = v − β γ_{t-1} (k Wᵀ)
    sc = tl.exp(cp)
    d_bs = -tl.sum(d_rhs * kw, 1)
    d_kw = -(beta * sc)[:, None] * d_rhs
    d_k += _mm(d_kw, w, PREC)
    d_wt += _mm(k_t, d_kw, PREC)
    d_beta += d_bs * sc
    d_cp += d_bs * beta * sc
    # log-decays: cum = cumsum(log α), cp = cum − log α, cum_end = Σ log α
    d_cum += d_cp
    d_la = -d_cp + d_cum_end + (tl.sum(d_cum, 0) - tl.cumsum(d_cum, 0) + d_cum)
    d_v = d_rhs
    gv = tl.sum(g * d_v, 1)
    if DGD:
        d_g = -eta[:, None] * d_v
        d_eta = d_beta - gv
        d_norm = gv * 0.0
    else:
        d_g = -(eta * norm)[:, None] * d_v
        d_eta = -norm * gv
        d_norm = -eta * gv
    # k = u / max(‖u‖, ε)
    radial = tl.sum(k * d_k, 1)
    moving = norm > 1e-6
    d_u = tl.where(
        moving[:, None],
        (d_k - k * radial[:, None]) / norm[:, None] + k * d_norm[:, None],
        d_k / norm[:, None],
    )
    if BASE:
        d_w0t = d_end_t - d_wt
        if RETRIEVE:
            d_w0t += _mm(z_t, d_out, PREC)
    else:
        d_w0t = d_wt * 0.0
    return d_wt, d_w0t, d_u, d_g, d_eta, d_la, d_z


@triton.jit
def evolve_memory_bwd(
    w1_in, w2_in, w1_0, w2_0, d1_end, d2_end, d1, d2, d1_0, d2_0, scratch,
    k, g1, g2, u2, eta, la, q, d_o,
    BT: tl.constexpr, D: tl.constexpr, F: tl.constexpr, MLP: tl.constexpr, DGD: tl.constexpr,
    BASE: tl.constexpr, ACT: tl.constexpr, CLIP: tl.constexpr, RETRIEVE: tl.constexpr,
    PREC: tl.constexpr,
):  # fmt: skip
    """VJP of `_evolve_memory` (one memory, clipped errors, a read of q with RETRIEVE) for the gradients
    of its end weights (d1_end, d2_end) and of its read d_o (BT, D). Stores the start weights'
    gradients at d1, d2 and W_0's at d1_0, d2_0 (layer layouts); returns (dk, dg1, dg2, du2, dη,
    d log α, dq). A matrix memory has layer 1 only and returns zeros for g2 and u2."""
    g1c = _clip(g1, CLIP)
    if MLP:
        g2c = _clip(g2, CLIP)
        if RETRIEVE:
            h = _delta_read(w1_in, w1_0, scratch, k, g1c, eta, la, q, BT, F, D, DGD, BASE, RETRIEVE, PREC)
            z2 = _act(h, ACT)
        else:
            h = tl.zeros((BT, F), dtype=k.dtype)
            z2 = h
        dw2, dw2_0, du2, dg2c, d_eta, d_la, dz2 = _delta_layer_bwd(
            w2_in, w2_0, d2_end, scratch, u2, g2c, eta, la, z2, d_o, BT, D, F, DGD, BASE, RETRIEVE, PREC
        )
        _store_t(d2, dw2, D, F)
        if BASE:
            _store_t(d2_0, dw2_0, D, F)
        dh = dz2 * _act_grad(h, ACT)
        dw1, dw1_0, dk, dg1c, d_eta1, d_la1, dq = _delta_layer_bwd(
            w1_in, w1_0, d1_end, scratch, k, g1c, eta, la, q, dh, BT, F, D, DGD, BASE, RETRIEVE, PREC
        )
        _store_t(d1, dw1, F, D)
        if BASE:
            _store_t(d1_0, dw1_0, F, D)
        d_eta += d_eta1
        d_la += d_la1
        if RETRIEVE:
            dq += d_o  # the residual
        dg2 = _clip_bwd(g2, dg2c, CLIP)
    else:
        dw1, dw1_0, dk, dg1c, d_eta, d_la, dq = _delta_layer_bwd(
            w1_in, w1_0, d1_end, scratch, k, g1c, eta, la, q, d_o, BT, D, D, DGD, BASE, RETRIEVE, PREC
        )
        _store_t(d1, dw1, D, D)
        if BASE:
            _store_t(d1_0, dw1_0, D, D)
        dg2 = tl.zeros((BT, D), dtype=k.dtype)
        du2 = tl.zeros((BT, F), dtype=k.dtype)
    return dk, _clip_bwd(g1, dg1c, CLIP), dg2, du2, d_eta, d_la, dq


@triton.jit
def evolve_bwd_kernel(
    w1_ptr, w2_ptr, w1_0_ptr, w2_0_ptr, d1_end_ptr, d2_end_ptr, k_ptr, g1_ptr, g2_ptr, u2_ptr,
    eta_ptr, la_ptr, q_ptr, d_o_ptr,
    d1_ptr, d2_ptr, d1_0_ptr, d2_0_ptr, dk_ptr, dg1_ptr, dg2_ptr, du2_ptr, d_eta_ptr, d_la_ptr,
    dq_ptr, scratch_ptr,
    BT: tl.constexpr, D: tl.constexpr, F: tl.constexpr, MLP: tl.constexpr, DGD: tl.constexpr,
    BASE: tl.constexpr, ACT: tl.constexpr, CLIP: tl.constexpr, RETRIEVE: tl.constexpr,
    PREC: tl.constexpr, SCR: tl.constexpr,
):  # fmt: skip
    """Grid (N,): memory i of N independent ones, every tensor with a leading axis N (layer weights as
    in the slots: w1 (F, D), w2 (D, F); a matrix memory w1 (D, D)); `evolve_memory_bwd` on each."""
    i = tl.program_id(0).to(tl.int64)
    S1: tl.constexpr = F * D if MLP else D * D
    S2: tl.constexpr = D * F if MLP else 1
    G1: tl.constexpr = F if MLP else D
    t = tl.arange(0, BT)
    rows_d = i * BT * D + t[:, None] * D + tl.arange(0, D)[None, :]
    rows_f = i * BT * F + t[:, None] * F + tl.arange(0, F)[None, :]
    rows_g1 = i * BT * G1 + t[:, None] * G1 + tl.arange(0, G1)[None, :]
    k = tl.load(k_ptr + rows_d)
    g1 = tl.load(g1_ptr + rows_g1)
    if MLP:
        g2 = tl.load(g2_ptr + rows_d)
        u2 = tl.load(u2_ptr + rows_f)
    else:
        g2 = k
        u2 = tl.zeros((BT, F), dtype=k.dtype)
    eta = tl.load(eta_ptr + i * BT + t)
    la = tl.load(la_ptr + i * BT + t)
    q = tl.load(q_ptr + rows_d)
    d_o = tl.load(d_o_ptr + rows_d)
    dk, dg1, dg2, du2, d_eta, d_la, dq = evolve_memory_bwd(
        w1_ptr + i * S1, w2_ptr + i * S2, w1_0_ptr + i * S1, w2_0_ptr + i * S2,
        d1_end_ptr + i * S1, d2_end_ptr + i * S2, d1_ptr + i * S1, d2_ptr + i * S2,
        d1_0_ptr + i * S1, d2_0_ptr + i * S2, scratch_ptr + i * SCR,
        k, g1, g2, u2, eta, la, q, d_o, BT, D, F, MLP, DGD, BASE, ACT, CLIP, RETRIEVE, PREC,
    )  # fmt: skip
    tl.store(dk_ptr + rows_d, dk)
    tl.store(dg1_ptr + rows_g1, dg1)
    if MLP:
        tl.store(dg2_ptr + rows_d, dg2)
        tl.store(du2_ptr + rows_f, du2)
    tl.store(d_eta_ptr + i * BT + t, d_eta)
    tl.store(d_la_ptr + i * BT + t, d_la)
    tl.store(dq_ptr + rows_d, dq)


def evolve_backward(
    weights, base, k, g1, g2, u2, eta, log_alpha, q, grad_o, grad_end, *, rule, activation, clip, retrieval
):
    """`evolve_bwd_kernel` on N memories (every tensor with a leading axis N, contiguous): weights,
    base (W_0, or None) and grad_end are lists of one (matrix) or two (MLP) layers; g2, u2 are None
    for a matrix. rule "dgd" or "gd"; retrieval "causal", "inclusive" or "none" (grad_o unused).
    Returns (grads of the start weights, of W_0 (None without base), dk, dg1, dg2, du2, dη, d log α, dq)."""
    from hope.ops.titans.fused import _dot_precision

    mlp = len(weights) == 2
    n, chunk, d = k.shape
    f = weights[0].shape[1] if mlp else d
    dummy = k.new_zeros(1)
    w1, w2 = weights[0], (weights[1] if mlp else dummy)
    b1, b2 = (base[0], base[1] if mlp else dummy) if base is not None else (dummy, dummy)
    e1, e2 = grad_end[0], (grad_end[1] if mlp else dummy)
    grads = [torch.empty_like(w) for w in weights]
    grads_base = [torch.zeros_like(w) for w in weights] if base is not None else None
    d1, d2 = grads[0], (grads[1] if mlp else dummy)
    d1_0, d2_0 = (grads_base[0], grads_base[1] if mlp else dummy) if base is not None else (dummy, dummy)
    dk, dq = torch.empty_like(k), torch.empty_like(q)
    dg1 = torch.empty_like(g1)
    dg2 = torch.empty_like(g2) if mlp else dummy
    du2 = torch.empty_like(u2) if mlp else dummy
    d_eta, d_la = torch.empty_like(eta), torch.empty_like(log_alpha)
    scr = chunk * max(chunk, d, f)
    scratch = k.new_empty(n, scr)
    evolve_bwd_kernel[(n,)](
        w1, w2, b1, b2, e1, e2, k, g1, g2 if mlp else dummy, u2 if mlp else dummy, eta, log_alpha, q,
        grad_o if grad_o is not None else torch.zeros_like(q),
        d1, d2, d1_0, d2_0, dk, dg1, dg2, du2, d_eta, d_la, dq, scratch,
        BT=chunk, D=d, F=f, MLP=mlp, DGD=rule == "dgd", BASE=base is not None,
        ACT=0 if activation == "gelu" else 1, CLIP=float(clip),
        RETRIEVE={"none": 0, "causal": 1, "inclusive": 2}[retrieval],
        PREC=_dot_precision(k.dtype), SCR=scr,
    )  # fmt: skip
    return grads, grads_base, dk, dg1, (dg2 if mlp else None), (du2 if mlp else None), d_eta, d_la, dq
