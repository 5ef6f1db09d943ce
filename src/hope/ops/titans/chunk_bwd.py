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
    _gradients,
    _memory_read,
    _load,
    _load_t,
    _mm,
    _store_t,
    _transpose,
    _unit_lower_inverse,
)


@triton.jit
def _accumulate(ptr, tile, R: tl.constexpr, C: tl.constexpr):
    """The row-major (R, C) matrix at ptr += tile (R, C)."""
    at = ptr + tl.arange(0, R)[:, None] * C + tl.arange(0, C)[None, :]
    tl.store(at, tl.load(at) + tile)


@triton.jit
def _accumulate_t(ptr, tile, R: tl.constexpr, C: tl.constexpr):
    """The row-major (R, C) matrix at ptr += tileᵀ, tile (C, R)."""
    at = ptr + tl.arange(0, C)[:, None] + tl.arange(0, R)[None, :] * C
    tl.store(at, tl.load(at) + tile)


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
def _fast_part(w_in, w0, O: tl.constexpr, I: tl.constexpr, BASE: tl.constexpr, TRANSPOSE: tl.constexpr):
    """W − W_0 (O, I) of the layer at w_in (W_0 only with BASE), or with TRANSPOSE its transpose (I, O).
    Loaded where each product needs it (from L2), rather than two weight tiles held through the VJP."""
    if TRANSPOSE:
        w = _load_t(w_in, O, I)
        if BASE:
            w -= _load_t(w0, O, I)
    else:
        w = _load(w_in, O, I)
        if BASE:
            w -= _load(w0, O, I)
    return w


@triton.jit
def _delta_prepare(
    w_in, w0, scratch, u, g, eta, la,
    BT: tl.constexpr, O: tl.constexpr, I: tl.constexpr, DGD: tl.constexpr, BASE: tl.constexpr,
    PREC: tl.constexpr,
):  # fmt: skip
    """The forward's pieces of one delta layer (`_delta_layer`): k = û, its transpose, v, β, the
    log-decays, the strict decay matrix and its transpose, k kᵀ, k (W − W_0)ᵀ and r."""
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
    kk = _mm(k, k_t, PREC)  # symmetric
    kw = _mm(k, _fast_part(w_in, w0, O, I, BASE, True), PREC)  # (BT, O)
    rhs = v - (beta * tl.exp(cp))[:, None] * kw
    if DGD:
        r = _mm(_unit_lower_inverse(beta[:, None] * kk * ds, BT, PREC), rhs, PREC)
    else:
        r = rhs
    return norm, k, k_t, v, beta, cum, cp, ds, ds_t, kk, kw, r


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
    _, _, k_t, _, _, cum, cp, ds, ds_t, _, _, r = _delta_prepare(
        w_in, w0, scratch, u, g, eta, la, BT, O, I, DGD, BASE, PREC
    )
    d, _, scale = _read_decay(cum, cp, ds, ds_t, BT, RETRIEVE)
    out = scale[:, None] * _mm(z, _fast_part(w_in, w0, O, I, BASE, True), PREC)
    out += _mm(_mm(z, k_t, PREC) * d, r, PREC)
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
    norm, k, k_t, v, beta, cum, cp, ds, ds_t, kk, kw, r = _delta_prepare(
        w_in, w0, scratch, u, g, eta, la, BT, O, I, DGD, BASE, PREC
    )
    cum_end = tl.sum(la, 0)
    d_end_t = _load_t(d_end, O, I)  # (I, O)
    # W_end − W_0 = γ_end (W − W_0) + Σ_s (γ_end/γ_s) r_s k_sᵀ
    decay_end = tl.exp(cum_end - cum)
    d_wt = tl.exp(cum_end) * d_end_t
    d_cum_end = tl.exp(cum_end) * tl.sum(tl.sum(_fast_part(w_in, w0, O, I, BASE, True) * d_end_t, 1), 0)
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
        y = _mm(z, _fast_part(w_in, w0, O, I, BASE, True), PREC)
        d_y = scale[:, None] * d_out
        d_wt += _mm(z_t, d_y, PREC)
        d_z = _mm(d_y, _fast_part(w_in, w0, O, I, BASE, False), PREC)
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
    d_k += _mm(d_kw, _fast_part(w_in, w0, O, I, BASE, False), PREC)
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
    gradients at d1, d2 and adds W_0's to d1_0, d2_0 (layer layouts); returns (dk, dg1, dg2, du2, dη,
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
            _accumulate_t(d2_0, dw2_0, D, F)
        dh = dz2 * _act_grad(h, ACT)
        dw1, dw1_0, dk, dg1c, d_eta1, d_la1, dq = _delta_layer_bwd(
            w1_in, w1_0, d1_end, scratch, k, g1c, eta, la, q, dh, BT, F, D, DGD, BASE, RETRIEVE, PREC
        )
        _store_t(d1, dw1, F, D)
        if BASE:
            _accumulate_t(d1_0, dw1_0, F, D)
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
            _accumulate_t(d1_0, dw1_0, D, D)
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


@triton.jit
def _act_grad2(h, ACT: tl.constexpr):
    """σ''(h): gelu φ(h)(2 − h²); silu s(1 − s)(2 + h(1 − 2s))."""
    if ACT == 0:
        y = tl.exp(-0.5 * h * h) * 0.3989422804014327 * (2.0 - h * h)
    else:
        s = tl.sigmoid(h)
        y = s * (1.0 - s) * (2.0 + h * (1.0 - 2.0 * s))
    return y


@triton.jit
def _anchor_bwd(
    w1, w2, d1, d2, scratch, k, v, dk, dg1, dg2, du2,
    BT: tl.constexpr, D: tl.constexpr, F: tl.constexpr, MLP: tl.constexpr, SGV: tl.constexpr,
    L2: tl.constexpr, ACT: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    """Stage 3: VJP of `_gradients` at the anchor w1, w2 (u1 = k, g1, g2, u2 = σ(W1 k)) for the
    gradients dk (of u1), dg1, dg2, du2; adds the anchor's part to the weight gradients at d1, d2 and
    returns (dk, dv) of this memory."""
    k_t = _transpose(scratch, k, BT, D)
    v_t = _transpose(scratch, v, BT, D)
    if MLP:
        w1_t = _load_t(w1, F, D)  # (D, F)
        w1n = _load(w1, F, D)
        w2_t = _load_t(w2, D, F)  # (F, D)
        w2n = _load(w2, D, F)
        hk = _mm(k, w1_t, PREC)
        ak = _act(hk, ACT)
        slope = _act_grad(hk, ACT)
        if SGV:
            hv = _mm(v, w1_t, PREC)
            av = _act(hv, ACT)
            target = _mm(av, w2_t, PREC) + v
        else:
            target = v
        if L2:
            g2 = _mm(ak, w2_t, PREC) + k - target
        else:
            g2 = -target
        m = _mm(g2, w2n, PREC)  # g1 = m ∘ σ'(hk)
        dm = dg1 * slope
        dhk = dg1 * m * _act_grad2(hk, ACT)
        dg2 = dg2 + _mm(dm, w2_t, PREC)
        dak = du2
        if L2:  # g2 = M(k) − target
            dak += _mm(dg2, w2n, PREC)
            dk += dg2
        dhk += dak * slope
        dk += _mm(dhk, w1n, PREC)
        dw1_t = _mm(k_t, dhk, PREC)  # (D, F)
        if L2:
            x = ak
        else:
            x = ak * 0.0
        if SGV:  # target = M(v)
            x -= av
            dhv = -_mm(dg2, w2n, PREC) * _act_grad(hv, ACT)
            dv = -dg2 + _mm(dhv, w1n, PREC)
            dw1_t += _mm(v_t, dhv, PREC)
        else:
            dv = -dg2
        g2_t = _transpose(scratch, g2, BT, D)
        dg2_t = _transpose(scratch, dg2, BT, D)
        _accumulate(d2, _mm(g2_t, dm, PREC) + _mm(dg2_t, x, PREC), D, F)
        _accumulate_t(d1, dw1_t, F, D)
    else:
        w1n = _load(w1, D, D)
        dw1_t = tl.zeros((D, D), dtype=k.dtype)
        if L2:  # g1 = k W1ᵀ − target
            dk += _mm(dg1, w1n, PREC)
            dw1_t += _mm(k_t, dg1, PREC)
        if SGV:  # target = v W1ᵀ
            dv = -_mm(dg1, w1n, PREC)
            dw1_t -= _mm(v_t, dg1, PREC)
        else:
            dv = -dg1
        _accumulate_t(d1, dw1_t, D, D)
    return dk, dv


@triton.jit
def _layer_at(p1, p2, index, D: tl.constexpr, F: tl.constexpr, MLP: tl.constexpr):
    """Pointers to the two layers of memory `index` (in units of one layer) of stacked weights."""
    S1: tl.constexpr = F * D if MLP else D * D
    S2: tl.constexpr = D * F if MLP else 1
    return p1 + index * S1, p2 + index * S2


@triton.jit(do_not_specialize=["T", "c", "kv_T", "kv_t0", "g_T", "g_t0"])
def memory_bwd_kernel(
    q_ptr, k_ptr, v_ptr, eta_ptr, la_ptr, gate_ptr, w1_ptr, w2_ptr, w1_0_ptr, w2_0_ptr,
    e1_ptr, e2_ptr, d1_ptr, d2_ptr, d1_0_ptr, d2_0_ptr, do_ptr, dq_ptr,
    dk_ptr, dv_ptr, deta_ptr, dla_ptr, scratch_ptr,
    T, c, kv_T, kv_t0, g_T, g_t0,
    H: tl.constexpr, P: tl.constexpr, BT: tl.constexpr, D: tl.constexpr, F: tl.constexpr,
    MLP: tl.constexpr, SGV: tl.constexpr, L2: tl.constexpr, DGD: tl.constexpr, BASE: tl.constexpr,
    ACT: tl.constexpr, CLIP: tl.constexpr, READ: tl.constexpr, PREC: tl.constexpr, SCR: tl.constexpr,
):  # fmt: skip
    """Grid (B·H, P): memory p of (batch, head) i over chunk c, backward (stages 1 and 3).

    The chunk's start weights w1, w2 and the gradients of its end weights e1, e2 are (B, P, H, out, in);
    the start weights' gradients go to d1, d2 (same layout), W_0's are added to d1_0, d2_0
    (B, P, H, out, in). k, v, η, log α (ungated) are read at rows kv_t0 … of buffers of kv_T rows, the
    gate at rows g_t0 … of g_T; this memory's dk, dv, dη, d log α (of the gated η, log α) go to rows
    kv_t0 … of (B·H, P, kv_T, ·). M_mem (p = 0) is read: q, do and dq are (B, H, T, D), chunk c."""
    pid = tl.program_id(0)
    p = tl.program_id(1)
    b, h = pid // H, pid % H
    t = tl.arange(0, BT)
    rows = pid.to(tl.int64) * T * D + c * BT * D + t[:, None] * D + tl.arange(0, D)[None, :]
    kv = pid.to(tl.int64) * kv_T * D + kv_t0 * D + t[:, None] * D + tl.arange(0, D)[None, :]
    k = tl.load(k_ptr + kv)
    v = tl.load(v_ptr + kv)
    gate = tl.load(gate_ptr + pid.to(tl.int64) * g_T + g_t0 + t)
    eta = tl.load(eta_ptr + pid.to(tl.int64) * kv_T + kv_t0 + t) * gate
    la = tl.load(la_ptr + pid.to(tl.int64) * kv_T + kv_t0 + t) * gate
    at = (b * P + p) * H + h
    w1, w2 = _layer_at(w1_ptr, w2_ptr, at, D, F, MLP)
    e1, e2 = _layer_at(e1_ptr, e2_ptr, at, D, F, MLP)
    d1, d2 = _layer_at(d1_ptr, d2_ptr, at, D, F, MLP)
    d1_0, d2_0 = _layer_at(d1_0_ptr, d2_0_ptr, at, D, F, MLP)
    w1_0, w2_0 = _layer_at(w1_0_ptr, w2_0_ptr, p * H + h, D, F, MLP)
    scratch = scratch_ptr + (pid * P + p).to(tl.int64) * SCR
    _, g1, g2, u2 = _gradients(w1, w2, k, v, D, F, MLP, SGV, L2, ACT, PREC)
    if p == 0:
        q = tl.load(q_ptr + rows)
        d_o = tl.load(do_ptr + rows)
        dk, dg1, dg2, du2, d_eta, d_la, dq = evolve_memory_bwd(
            w1, w2, w1_0, w2_0, e1, e2, d1, d2, d1_0, d2_0, scratch,
            k, g1, g2, u2, eta, la, q, d_o, BT, D, F, MLP, DGD, BASE, ACT, CLIP, READ, PREC,
        )  # fmt: skip
        tl.store(dq_ptr + rows, dq)
    else:
        dk, dg1, dg2, du2, d_eta, d_la, _ = evolve_memory_bwd(
            w1, w2, w1_0, w2_0, e1, e2, d1, d2, d1_0, d2_0, scratch,
            k, g1, g2, u2, eta, la, k, k, BT, D, F, MLP, DGD, BASE, ACT, CLIP, 0, PREC,
        )  # fmt: skip
    tl.debug_barrier()  # the anchor's part adds to what the evolution's stored
    dk, dv = _anchor_bwd(w1, w2, d1, d2, scratch, k, v, dk, dg1, dg2, du2, BT, D, F, MLP, SGV, L2, ACT, PREC)
    mine = (pid * P + p).to(tl.int64) * kv_T + kv_t0
    out = mine * D + t[:, None] * D + tl.arange(0, D)[None, :]
    tl.store(dk_ptr + out, dk)
    tl.store(dv_ptr + out, dv)
    tl.store(deta_ptr + mine + t, d_eta)
    tl.store(dla_ptr + mine + t, d_la)


@triton.jit(do_not_specialize=["T", "c", "g_T", "g_t0"])
def generate_bwd_kernel(
    x_ptr, gate_ptr, w1_ptr, w2_ptr, re_ptr, be_ptr, ra_ptr, ba_ptr,
    dk_ptr, dv_ptr, deta_ptr, dla_ptr, d1_ptr, d2_ptr, dx_ptr, dre_ptr, dbe_ptr, dra_ptr, dba_ptr,
    scratch_ptr, T, c, g_T, g_t0, eta_max,
    H: tl.constexpr, P: tl.constexpr, BT: tl.constexpr, D: tl.constexpr, F: tl.constexpr,
    MLP: tl.constexpr, ACT: tl.constexpr, PREC: tl.constexpr, SCR: tl.constexpr,
):  # fmt: skip
    """Grid (B·H, 4), stage 4: program (i, r) takes the generation k, v, η, log α = … M_{r+1}(x̂) of
    chunk c back, from the memories' dk, dv, dη, d log α summed (the gated ones; the gate is taken
    back here): adds M_{r+1}'s part to the start weights' gradients d1, d2 (B, P, H, out, in), writes
    its part of dx̂ into rows of chunk c of dx (4, B·H, T, D) and adds the read-outs' gradients
    (B, H, D) and (B, H) of its role."""
    pid = tl.program_id(0)
    role = tl.program_id(1)
    b, h = pid // H, pid % H
    t = tl.arange(0, BT)
    offs_d = tl.arange(0, D)
    tile = t[:, None] * D + offs_d[None, :]
    xh = tl.load(x_ptr + pid.to(tl.int64) * T * D + c * BT * D + tile)
    gate = tl.load(gate_ptr + pid.to(tl.int64) * g_T + g_t0 + t)
    at = (b * P + role + 1) * H + h
    w1, w2 = _layer_at(w1_ptr, w2_ptr, at, D, F, MLP)
    d1, d2 = _layer_at(d1_ptr, d2_ptr, at, D, F, MLP)
    scratch = scratch_ptr + (pid * 4 + role).to(tl.int64) * SCR
    y = _memory_read(w1, w2, xh, D, F, MLP, ACT, PREC)
    mem = pid.to(tl.int64) * P * BT  # row 0 of memory 0 of (B·H, P, BT, ·)
    dy = tl.zeros((BT, D), dtype=xh.dtype)
    dl = tl.zeros((BT,), dtype=xh.dtype)
    for p in range(P):  # the sums over the memories of the layer
        if role <= 1:
            ptr = dk_ptr if role == 0 else dv_ptr
            dy += tl.load(ptr + (mem + p * BT) * D + tile)
        else:
            ptr = deta_ptr if role == 2 else dla_ptr
            dl += tl.load(ptr + mem + p * BT + t)
    if role == 0:  # k = y / max(‖y‖, ε)
        norm = tl.maximum(tl.sqrt(tl.sum(y * y, 1)), 1e-6)
        unit = y / norm[:, None]
        radial = tl.sum(unit * dy, 1)
        dy = tl.where(
            (norm > 1e-6)[:, None], (dy - unit * radial[:, None]) / norm[:, None], dy / norm[:, None]
        )
    elif role >= 2:
        if role == 2:  # η = η_max σ(⟨y, r_η⟩ + b_η)
            readout = tl.load(re_ptr + h * D + offs_d)
            s = tl.sigmoid(tl.sum(y * readout[None, :], 1) + tl.load(be_ptr + h))
            dl = dl * gate * eta_max * s * (1.0 - s)
            dr, db = dre_ptr, dbe_ptr
        else:  # log α = log σ(⟨y, r_α⟩ + b_α)
            readout = tl.load(ra_ptr + h * D + offs_d)
            s = tl.sigmoid(tl.sum(y * readout[None, :], 1) + tl.load(ba_ptr + h))
            dl = dl * gate * (1.0 - s)
            dr, db = dra_ptr, dba_ptr
        dy = dl[:, None] * readout[None, :]
        tl.store(dr + pid * D + offs_d, tl.load(dr + pid * D + offs_d) + tl.sum(dl[:, None] * y, 0))
        tl.store(db + pid, tl.load(db + pid) + tl.sum(dl, 0))
    # y = M(x̂): x̂ + W2 σ(W1 x̂), or W1 x̂
    xh_t = _transpose(scratch, xh, BT, D)
    if MLP:
        hx = _mm(xh, _load_t(w1, F, D), PREC)
        dh = _mm(dy, _load(w2, D, F), PREC) * _act_grad(hx, ACT)
        _accumulate(d2, _mm(_transpose(scratch, dy, BT, D), _act(hx, ACT), PREC), D, F)
        _accumulate_t(d1, _mm(xh_t, dh, PREC), F, D)
        dx = dy + _mm(dh, _load(w1, F, D), PREC)
    else:
        _accumulate_t(d1, _mm(xh_t, dy, PREC), D, D)
        dx = _mm(dy, _load(w1, D, D), PREC)
    B = tl.num_programs(0) // H
    tl.store(dx_ptr + ((role * B * H + pid).to(tl.int64) * T + c * BT) * D + tile, dx)


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


def unsupported_reason(layer) -> str | None:
    """Why the backward kernels cannot take this layer back (None: they can)."""
    titans = layer.titans
    if titans.update_rule == "momentum":
        return "titans.update_rule='momentum' has no backward kernel"
    return None


def backward_chunks(layer, static, slots, gate, grad_o, grad_end, every):
    """The Triton chunk backward of `fused._FusedTitans`: for the forward's kept `slots` (every
    `every`-th boundary), gate and static inputs, the gradients of the output and of the end state
    → (grads of the static inputs (None where a slot is None), of the initial state, of each
    parameter of the layer (None where the chunks do not reach it)).

    Groups of `every` chunks in reverse: the forward kernel replays a group from its kept boundary to
    recover every boundary inside it; then each chunk, last first, is three launches: the generation
    recomputed (`chunk_split.generate_kernel`), every memory's evolution and anchor taken back
    (`memory_bwd_kernel`), the generation taken back (`generate_bwd_kernel`)."""
    from hope.ops.titans.chunk_split import generate_kernel
    from hope.ops.titans.fused import KERNEL, _dot_precision, _tokens, chunk_forward

    titans, spec = layer.titans, layer.spec
    h, d, chunk = layer.n_heads, layer.head_dim, titans.chunk_size
    q, xh, k, v, eta, log_alpha, _ = static
    q = q.detach().contiguous()
    b, n = q.shape[0], q.shape[2]
    n_chunks, mlp, self_mod = n // chunk, spec.kind == "mlp", titans.self_modifying
    f, n_comp = (spec.hidden if mlp else d), len(layer.components)
    dummy = q.new_zeros(1)
    base = titans.decay_to == "init"
    w_0 = [w.detach().contiguous() for w in layer.init_weights] if base else [dummy, dummy]
    d_now = [g.contiguous().clone() for g in grad_end]
    d_next = [torch.empty_like(g) for g in d_now]
    d_base = [torch.zeros_like(g) for g in d_now] if base else [dummy, dummy]
    grad_o, gate = grad_o.contiguous(), gate.contiguous()
    dq = torch.empty_like(q)
    rows = chunk if self_mod else n
    dk, dv = q.new_empty(b * h, n_comp, rows, d), q.new_empty(b * h, n_comp, rows, d)
    d_eta, d_la = q.new_empty(b * h, n_comp, rows), q.new_empty(b * h, n_comp, rows)
    scr = chunk * max(chunk, d, f)
    scratch = q.new_empty(b * h * max(n_comp, 4), scr)
    precision = "bf16" if KERNEL.dots == "bf16" else _dot_precision(q.dtype)
    common = dict(H=h, P=n_comp, BT=chunk, D=d, F=f, MLP=mlp, ACT=0 if spec.activation == "gelu" else 1)
    common.update(PREC=precision, SCR=scr)
    num_warps = KERNEL.num_warps or 4
    if self_mod:
        xh = xh.detach().contiguous()
        k, v = q.new_empty(b * h, chunk, d), q.new_empty(b * h, chunk, d)
        eta, log_alpha = q.new_empty(b * h, chunk), q.new_empty(b * h, chunk)
        readouts = [t.detach().contiguous() for t in (layer.eta_readout, layer.eta_bias)]
        readouts += [t.detach().contiguous() for t in (layer.alpha_readout, layer.alpha_bias)]
        dx = q.new_empty(4, b * h, n, d)
        d_read = [q.new_zeros(b, h, d), q.new_zeros(b, h), q.new_zeros(b, h, d), q.new_zeros(b, h)]
        gen = {key: common[key] for key in ("H", "P", "BT", "D", "F", "MLP", "ACT", "PREC")}
    else:
        k, v, eta, log_alpha = (t.detach().contiguous() for t in (k, v, eta, log_alpha))
    for first in reversed(range(0, n_chunks, every)):
        last = min(first + every, n_chunks)
        kept = [s[first // every] for s in slots]
        if last - first > 1:
            span = slice(first * chunk, last * chunk)
            _, replayed, *_ = chunk_forward(
                layer, _tokens(static, span), kept, None, 0, 1, gate=gate[..., span]
            )
            bounds = [[s[c] for s in replayed] for c in range(last - first)]
        else:
            bounds = [kept]
        for c in reversed(range(first, last)):
            start = bounds[c - first]
            w1, w2 = start[0], (start[1] if mlp else dummy)
            if self_mod:  # a view from the chunk's first row: the kernel reads its chunk 0
                generate_kernel[(b * h, 4)](
                    xh[:, :, c * chunk :], w1, w2, *readouts, k, v, eta, log_alpha, n, 0, 1, 1,
                    float(titans.eta_max), **gen, num_warps=num_warps,
                )  # fmt: skip
            kv_t0 = 0 if self_mod else c * chunk
            memory_bwd_kernel[(b * h, n_comp)](
                q, k, v, eta, log_alpha, gate, w1, w2, w_0[0], w_0[1] if mlp else dummy,
                d_now[0], d_now[1] if mlp else dummy, d_next[0], d_next[1] if mlp else dummy,
                d_base[0], d_base[1] if mlp else dummy, grad_o, dq, dk, dv, d_eta, d_la, scratch,
                n, c, rows, kv_t0, n, c * chunk,
                **common, SGV=titans.self_generated_values, L2=titans.objective == "l2",
                DGD=titans.update_rule == "dgd", BASE=base, CLIP=float(titans.error_clip),
                READ=2 if titans.retrieval == "inclusive" else 1, num_warps=num_warps,
            )  # fmt: skip
            if self_mod:
                generate_bwd_kernel[(b * h, 4)](
                    xh, gate, w1, w2, *readouts, dk, dv, d_eta, d_la, d_next[0],
                    d_next[1] if mlp else dummy, dx, *d_read, scratch, n, c, n, c * chunk,
                    float(titans.eta_max), **common, num_warps=num_warps,
                )  # fmt: skip
            d_now, d_next = d_next, d_now
    if self_mod:
        grad_static = [dq, dx.sum(0).view(b, h, n, d), None, None, None, None, None]
    else:
        grad_static = [dq, None, dk.sum(1).view(b, h, n, d), dv.sum(1).view(b, h, n, d)]
        grad_static += [d_eta.sum(1).view(b, h, n) * gate, d_la.sum(1).view(b, h, n) * gate, None]
    by_name = {}
    if base:
        by_name.update({f"init_weights.{i}": g.sum(0) for i, g in enumerate(d_base[: len(spec.shapes)])})
    if self_mod:
        names = ("eta_readout", "eta_bias", "alpha_readout", "alpha_bias")
        by_name.update({name: g.sum(0) for name, g in zip(names, d_read)})
    grad_params = [by_name.get(name) for name, _ in layer.named_parameters()]
    return grad_static, d_now[: len(grad_end)], grad_params
