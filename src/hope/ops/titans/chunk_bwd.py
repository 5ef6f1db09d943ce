"""Triton backward of a self-referential Titans layer, chunk by chunk, last chunk first
(`fused.KERNEL.backward="triton"`; `docs/PERFORMANCE.md`, "The Titans backward as kernels").

A chunk goes back in three launches, nothing of its forward stored, everything recomputed from its
start weights (the kept boundaries, as the PyTorch chunk backward):
1. `chunk_split.generate_kernel` (self-modifying layers): k, v, η, log α at the start weights;
2. `memory_bwd_kernel`, a program per memory: its evolution over the chunk and its read taken back
   (`evolve_memory_bwd`: the UT form of dgd / gd, or the momentum rule; the error clip), then its
   gradient factors at the anchor (`_anchor_bwd`: u_i, g_i of ½‖M(k) − M(v)‖² or −⟨M(k), v̂⟩) →
   the start state's gradient, and this memory's dk, dv, dη, d log α, d log β;
3. `generate_bwd_kernel` (self-modifying layers): those summed over the memories and taken back
   through the gate and the generation by M_k, M_v, M_η, M_α → their weights' gradient, dx̂ and the
   read-outs' gradients.
`backward_chunks` runs them for `fused._FusedTitans`; `evolve_backward` runs stage 2's evolution
alone on independent memories (its tests compare it with autograd through `memory/chunked.py`).
Transposes of computed tiles go through the program's scratch (`chunk_fwd._transpose`), never
`tl.trans` (see `chunk_fwd`).
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
    # the weight-sized tiles last (fewer registers held through the VJP): ∂W = γ_end ∂W_end + zᵀ ∂y + kᵀ ∂(k Wᵀ)
    d_wt = tl.exp(cum_end) * _load_t(d_end, O, I) + _mm(k_t, d_kw, PREC)
    if RETRIEVE:
        d_wt += _mm(z_t, d_y, PREC)
    if BASE:
        d_w0t = _load_t(d_end, O, I) - d_wt
        if RETRIEVE:
            d_w0t += _mm(z_t, d_out, PREC)
    else:
        d_w0t = d_wt * 0.0
    return d_wt, d_w0t, d_u, d_g, d_eta, d_la, d_z


@triton.jit
def _momentum_decays(la, lb, BT: tl.constexpr, RETRIEVE: tl.constexpr):
    """The momentum rule's decay-ratio matrices (`_momentum_layer`): the read's α-ratios (strict,
    a_{t-1}/a_r, or with RETRIEVE 2 inclusive, a_t/a_r) and their transpose, the β-ratios b_r/b_s
    (s ≤ r) and their transpose, the read's W-scale, and the log-cumsums of α (and of it shifted) and β."""
    offs = tl.arange(0, BT)
    ca = tl.cumsum(la, 0)
    cap = ca - la
    cb = tl.cumsum(lb, 0)
    incl = offs[:, None] >= offs[None, :]
    upper = offs[None, :] >= offs[:, None]
    if RETRIEVE == 2:
        da = tl.where(incl, tl.exp(tl.where(incl, ca[:, None] - ca[None, :], 0.0)), 0.0)
        da_t = tl.where(upper, tl.exp(tl.where(upper, ca[None, :] - ca[:, None], 0.0)), 0.0)
        scale = tl.exp(ca)
    else:
        strict = offs[:, None] > offs[None, :]
        above = offs[None, :] > offs[:, None]
        da = tl.where(strict, tl.exp(tl.where(strict, cap[:, None] - ca[None, :], 0.0)), 0.0)
        da_t = tl.where(above, tl.exp(tl.where(above, cap[None, :] - ca[:, None], 0.0)), 0.0)
        scale = tl.exp(cap)
    db = tl.where(incl, tl.exp(tl.where(incl, cb[:, None] - cb[None, :], 0.0)), 0.0)
    db_t = tl.where(upper, tl.exp(tl.where(upper, cb[None, :] - cb[:, None], 0.0)), 0.0)
    return da, da_t, db, db_t, scale, ca, cap, cb


@triton.jit
def _momentum_read(
    w_in, w0, s_in, scratch, u, g, eta, la, lb, z,
    BT: tl.constexpr, O: tl.constexpr, I: tl.constexpr, BASE: tl.constexpr, RETRIEVE: tl.constexpr,
    PREC: tl.constexpr,
):  # fmt: skip
    """The retrieval of one momentum layer at queries z (BT, I), as `_momentum_layer` returns it."""
    v = -eta[:, None] * g
    da, _, db, _, scale, _, _, cb = _momentum_decays(la, lb, BT, RETRIEVE)
    out = scale[:, None] * _mm(z, _fast_part(w_in, w0, O, I, BASE, True), PREC)
    out += tl.sum(da * tl.exp(cb)[None, :], 1)[:, None] * _mm(z, _load_t(s_in, O, I), PREC)
    out += _mm(_mm(da, db, PREC) * _mm(z, _transpose(scratch, u, BT, I), PREC), v, PREC)
    if BASE:
        out += _mm(z, _load_t(w0, O, I), PREC)
    return out


@triton.jit
def _momentum_layer_bwd(
    w_in, w0, s_in, d_end, ds_end, scratch, u, g, eta, la, lb, z, d_out,
    BT: tl.constexpr, O: tl.constexpr, I: tl.constexpr, BASE: tl.constexpr, RETRIEVE: tl.constexpr,
    PREC: tl.constexpr,
):  # fmt: skip
    """VJP of one momentum layer (`_momentum_layer`: S_t = β_t S_{t-1} + v_t u_tᵀ, W_t = α_t W_{t-1} + S_t,
    v = −η g) for the gradients d_end, ds_end of W_end, S_end (O, I, at pointers) and d_out of its
    retrieval at z. Returns (dWᵀ, dW_0ᵀ, dSᵀ of the start (I, O), du, dg, dη, d log α, d log β, dz)."""
    v = -eta[:, None] * g
    da, da_t, db, db_t, scale, ca, cap, cb = _momentum_decays(la, lb, BT, RETRIEVE)
    a_end = tl.sum(la, 0)
    b_end = tl.sum(lb, 0)
    to_end_a = tl.exp(a_end - ca)  # a_end / a_r
    to_end_b = tl.exp(b_end - cb)  # b_end / b_s
    mix_end = tl.sum(to_end_a[:, None] * db, 0)  # (BT,) over s
    coef_end = tl.sum(to_end_a * tl.exp(cb), 0)
    d_end_t = _load_t(d_end, O, I)
    ds_end_t = _load_t(ds_end, O, I)
    s_t = _load_t(s_in, O, I)
    # W_end = a_end W + coef_end S + Σ_s mix_end_s v_s u_sᵀ;  S_end = b_end S + Σ_s (b_end/b_s) v_s u_sᵀ
    d_wt = tl.exp(a_end) * d_end_t
    d_a_end = tl.exp(a_end) * tl.sum(tl.sum(_fast_part(w_in, w0, O, I, BASE, True) * d_end_t, 1), 0)
    d_coef_end = tl.sum(tl.sum(s_t * d_end_t, 1), 0)
    d_st = coef_end * d_end_t + tl.exp(b_end) * ds_end_t
    d_b_end = tl.exp(b_end) * tl.sum(tl.sum(s_t * ds_end_t, 1), 0)
    d_u = _mm(v * mix_end[:, None], _load(d_end, O, I), PREC) + _mm(
        v * to_end_b[:, None], _load(ds_end, O, I), PREC
    )
    d_vw = _mm(u, d_end_t, PREC)  # ∂/∂(v ∘ mix_end)
    d_vs = _mm(u, ds_end_t, PREC)
    d_v = d_vw * mix_end[:, None] + d_vs * to_end_b[:, None]
    d_mix_end = tl.sum(v * d_vw, 1)
    d_to_end_b = tl.sum(v * d_vs, 1) * to_end_b
    d_b_end += tl.sum(d_to_end_b, 0)
    d_cb = -d_to_end_b + d_coef_end * to_end_a * tl.exp(cb)
    d_to_end_a = (tl.sum(db * d_mix_end[None, :], 1) + d_coef_end * tl.exp(cb)) * to_end_a
    d_a_end += tl.sum(d_to_end_a, 0)
    d_ca = -d_to_end_a
    d_db = to_end_a[:, None] * d_mix_end[None, :]  # ∂/∂ (b_r/b_s)
    d_da = da * 0.0
    d_cap = cap * 0.0
    if RETRIEVE:
        # out = scale (z Wᵀ) + coef (z Sᵀ) + ((da db) ∘ (z uᵀ)) v, coef_t = Σ_r da[t, r] b_r
        z_t = _transpose(scratch, z, BT, I)
        y_w = _mm(z, _fast_part(w_in, w0, O, I, BASE, True), PREC)
        y_s = _mm(z, s_t, PREC)
        coef = tl.sum(da * tl.exp(cb)[None, :], 1)
        d_wt += _mm(z_t, scale[:, None] * d_out, PREC)
        d_st += _mm(z_t, coef[:, None] * d_out, PREC)
        d_z = _mm(scale[:, None] * d_out, _fast_part(w_in, w0, O, I, BASE, False), PREC)
        d_z += _mm(coef[:, None] * d_out, _load(s_in, O, I), PREC)
        d_scale = tl.sum(d_out * y_w, 1) * scale
        d_coef = tl.sum(d_out * y_s, 1)
        mix = _mm(da, db, PREC)
        zu = _mm(z, _transpose(scratch, u, BT, I), PREC)
        mix_t = _mm(db_t, da_t, PREC)
        d_v += _mm(mix_t * _mm(u, z_t, PREC), d_out, PREC)
        d_p = _mm(d_out, _transpose(scratch, v, BT, O), PREC)
        d_mix = d_p * zu
        d_zu = d_p * mix
        d_z += _mm(d_zu, u, PREC)
        d_u += _mm(_transpose(scratch, d_zu, BT, BT), z, PREC)
        d_da += _mm(d_mix, db_t, PREC) + d_coef[:, None] * tl.exp(cb)[None, :]
        d_db += _mm(da_t, d_mix, PREC)
        d_cb += tl.exp(cb) * tl.sum(d_coef[:, None] * da, 0)
        grad_a = d_da * da
        if RETRIEVE == 2:
            d_ca += tl.sum(grad_a, 1) - tl.sum(grad_a, 0) + d_scale
        else:
            d_cap += tl.sum(grad_a, 1) + d_scale
            d_ca -= tl.sum(grad_a, 0)
        if BASE:
            d_z += _mm(d_out, _load(w0, O, I), PREC)
    else:
        d_z = tl.zeros((BT, I), dtype=u.dtype)
    grad_b = d_db * db
    d_cb += tl.sum(grad_b, 1) - tl.sum(grad_b, 0)
    d_ca += d_cap
    d_la = -d_cap + d_a_end + (tl.sum(d_ca, 0) - tl.cumsum(d_ca, 0) + d_ca)
    d_lb = d_b_end + (tl.sum(d_cb, 0) - tl.cumsum(d_cb, 0) + d_cb)
    d_g = -eta[:, None] * d_v
    d_eta = -tl.sum(g * d_v, 1)
    if BASE:
        d_w0t = d_end_t - d_wt
        if RETRIEVE:
            d_w0t += _mm(z_t, d_out, PREC)
    else:
        d_w0t = d_wt * 0.0
    return d_wt, d_w0t, d_st, d_u, d_g, d_eta, d_la, d_lb, d_z


@triton.jit
def _layer_read(
    w_in, w0, s_in, scratch, u, g, eta, la, lb, z,
    BT: tl.constexpr, O: tl.constexpr, I: tl.constexpr, RULE: tl.constexpr, BASE: tl.constexpr,
    RETRIEVE: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    """The retrieval of one layer at z under RULE (0 gd, 1 dgd, 2 momentum)."""
    if RULE == 2:
        out = _momentum_read(w_in, w0, s_in, scratch, u, g, eta, la, lb, z, BT, O, I, BASE, RETRIEVE, PREC)
    else:
        out = _delta_read(w_in, w0, scratch, u, g, eta, la, z, BT, O, I, RULE == 1, BASE, RETRIEVE, PREC)
    return out


@triton.jit
def _layer_bwd(
    w_in, w0, s_in, d_end, ds_end, d_w, d_w0, d_s, scratch, u, g, eta, la, lb, z, d_out,
    BT: tl.constexpr, O: tl.constexpr, I: tl.constexpr, RULE: tl.constexpr, BASE: tl.constexpr,
    RETRIEVE: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    """VJP of one layer (O, I) under RULE: stores the start weights' gradient at d_w (and the start
    momentum's at d_s), adds W_0's to d_w0; returns (du, dg, dη, d log α, d log β, dz)."""
    if RULE == 2:
        dw, dw0, ds, du, dg, d_eta, d_la, d_lb, dz = _momentum_layer_bwd(
            w_in,
            w0,
            s_in,
            d_end,
            ds_end,
            scratch,
            u,
            g,
            eta,
            la,
            lb,
            z,
            d_out,
            BT,
            O,
            I,
            BASE,
            RETRIEVE,
            PREC,
        )
        _store_t(d_s, ds, O, I)
    else:
        dw, dw0, du, dg, d_eta, d_la, dz = _delta_layer_bwd(
            w_in, w0, d_end, scratch, u, g, eta, la, z, d_out, BT, O, I, RULE == 1, BASE, RETRIEVE, PREC
        )
        d_lb = d_eta * 0.0
    _store_t(d_w, dw, O, I)
    if BASE:
        _accumulate_t(d_w0, dw0, O, I)
    return du, dg, d_eta, d_la, d_lb, dz


@triton.jit
def evolve_memory_bwd(
    w1_in, w2_in, s1_in, s2_in, w1_0, w2_0, d1_end, d2_end, e1_end, e2_end, d1, d2, ds1, ds2, d1_0, d2_0,
    scratch, k, g1, g2, u2, eta, la, lb, q, d_o,
    BT: tl.constexpr, D: tl.constexpr, F: tl.constexpr, MLP: tl.constexpr, RULE: tl.constexpr,
    BASE: tl.constexpr, ACT: tl.constexpr, CLIP: tl.constexpr, RETRIEVE: tl.constexpr,
    PREC: tl.constexpr,
):  # fmt: skip
    """VJP of `_evolve_memory` (one memory, clipped errors, a read of q with RETRIEVE; RULE 0 gd, 1 dgd,
    2 momentum) for the gradients of its end weights (d1_end, d2_end), end momenta (e1_end, e2_end)
    and of its read d_o (BT, D). Stores the start weights' gradients at d1, d2 (the momenta's at ds1,
    ds2) and adds W_0's to d1_0, d2_0 (layer layouts); returns (dk, dg1, dg2, du2, dη, d log α,
    d log β, dq). A matrix memory has layer 1 only and returns zeros for g2 and u2."""
    g1c = _clip(g1, CLIP)
    if MLP:
        g2c = _clip(g2, CLIP)
        if RETRIEVE:
            h = _layer_read(
                w1_in, w1_0, s1_in, scratch, k, g1c, eta, la, lb, q, BT, F, D, RULE, BASE, RETRIEVE, PREC
            )
            z2 = _act(h, ACT)
        else:
            h = tl.zeros((BT, F), dtype=k.dtype)
            z2 = h
        du2, dg2c, d_eta, d_la, d_lb, dz2 = _layer_bwd(
            w2_in, w2_0, s2_in, d2_end, e2_end, d2, d2_0, ds2, scratch, u2, g2c, eta, la, lb, z2, d_o,
            BT, D, F, RULE, BASE, RETRIEVE, PREC,
        )  # fmt: skip
        dh = dz2 * _act_grad(h, ACT)
        dk, dg1c, d_eta1, d_la1, d_lb1, dq = _layer_bwd(
            w1_in, w1_0, s1_in, d1_end, e1_end, d1, d1_0, ds1, scratch, k, g1c, eta, la, lb, q, dh,
            BT, F, D, RULE, BASE, RETRIEVE, PREC,
        )  # fmt: skip
        d_eta += d_eta1
        d_la += d_la1
        d_lb += d_lb1
        if RETRIEVE:
            dq += d_o  # the residual
        dg2 = _clip_bwd(g2, dg2c, CLIP)
    else:
        dk, dg1c, d_eta, d_la, d_lb, dq = _layer_bwd(
            w1_in, w1_0, s1_in, d1_end, e1_end, d1, d1_0, ds1, scratch, k, g1c, eta, la, lb, q, d_o,
            BT, D, D, RULE, BASE, RETRIEVE, PREC,
        )  # fmt: skip
        dg2 = tl.zeros((BT, D), dtype=k.dtype)
        du2 = tl.zeros((BT, F), dtype=k.dtype)
    return dk, _clip_bwd(g1, dg1c, CLIP), dg2, du2, d_eta, d_la, d_lb, dq


@triton.jit
def evolve_bwd_kernel(
    w1_ptr, w2_ptr, s1_ptr, s2_ptr, w1_0_ptr, w2_0_ptr, e1_ptr, e2_ptr, es1_ptr, es2_ptr,
    k_ptr, g1_ptr, g2_ptr, u2_ptr, eta_ptr, la_ptr, lb_ptr, q_ptr, d_o_ptr,
    d1_ptr, d2_ptr, ds1_ptr, ds2_ptr, d1_0_ptr, d2_0_ptr, dk_ptr, dg1_ptr, dg2_ptr, du2_ptr,
    d_eta_ptr, d_la_ptr, d_lb_ptr, dq_ptr, scratch_ptr,
    BT: tl.constexpr, D: tl.constexpr, F: tl.constexpr, MLP: tl.constexpr, RULE: tl.constexpr,
    BASE: tl.constexpr, ACT: tl.constexpr, CLIP: tl.constexpr, RETRIEVE: tl.constexpr,
    PREC: tl.constexpr, SCR: tl.constexpr,
):  # fmt: skip
    """Grid (N,): memory i of N independent ones, every tensor with a leading axis N (layer weights and
    momenta as in the slots: w1 (F, D), w2 (D, F); a matrix memory w1 (D, D)); `evolve_memory_bwd`."""
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
    if RULE == 2:
        lb = tl.load(lb_ptr + i * BT + t)
    else:
        lb = la * 0.0
    q = tl.load(q_ptr + rows_d)
    d_o = tl.load(d_o_ptr + rows_d)
    dk, dg1, dg2, du2, d_eta, d_la, d_lb, dq = evolve_memory_bwd(
        w1_ptr + i * S1, w2_ptr + i * S2, s1_ptr + i * S1, s2_ptr + i * S2, w1_0_ptr + i * S1,
        w2_0_ptr + i * S2, e1_ptr + i * S1, e2_ptr + i * S2, es1_ptr + i * S1, es2_ptr + i * S2,
        d1_ptr + i * S1, d2_ptr + i * S2, ds1_ptr + i * S1, ds2_ptr + i * S2,
        d1_0_ptr + i * S1, d2_0_ptr + i * S2, scratch_ptr + i * SCR,
        k, g1, g2, u2, eta, la, lb, q, d_o, BT, D, F, MLP, RULE, BASE, ACT, CLIP, RETRIEVE, PREC,
    )  # fmt: skip
    tl.store(dk_ptr + rows_d, dk)
    tl.store(dg1_ptr + rows_g1, dg1)
    if MLP:
        tl.store(dg2_ptr + rows_d, dg2)
        tl.store(du2_ptr + rows_f, du2)
    tl.store(d_eta_ptr + i * BT + t, d_eta)
    tl.store(d_la_ptr + i * BT + t, d_la)
    if RULE == 2:
        tl.store(d_lb_ptr + i * BT + t, d_lb)
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
        # each weight tile loaded where a product needs it (from L2): four held at once would spill
        hk = _mm(k, _load_t(w1, F, D), PREC)
        ak = _act(hk, ACT)
        slope = _act_grad(hk, ACT)
        if SGV:
            hv = _mm(v, _load_t(w1, F, D), PREC)
            av = _act(hv, ACT)
            target = _mm(av, _load_t(w2, D, F), PREC) + v
        else:
            target = v
        if L2:
            g2 = _mm(ak, _load_t(w2, D, F), PREC) + k - target
        else:
            g2 = -target
        m = _mm(g2, _load(w2, D, F), PREC)  # g1 = m ∘ σ'(hk)
        dm = dg1 * slope
        dhk = dg1 * m * _act_grad2(hk, ACT)
        dg2 = dg2 + _mm(dm, _load_t(w2, D, F), PREC)
        dak = du2
        if L2:  # g2 = M(k) − target
            dak += _mm(dg2, _load(w2, D, F), PREC)
            dk += dg2
        dhk += dak * slope
        dk += _mm(dhk, _load(w1, F, D), PREC)
        dw1_t = _mm(k_t, dhk, PREC)  # (D, F)
        if L2:
            x = ak
        else:
            x = ak * 0.0
        if SGV:  # target = M(v)
            x -= av
            dhv = -_mm(dg2, _load(w2, D, F), PREC) * _act_grad(hv, ACT)
            dv = -dg2 + _mm(dhv, _load(w1, F, D), PREC)
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
    q_ptr, k_ptr, v_ptr, eta_ptr, la_ptr, lb_ptr, gate_ptr, w1_ptr, w2_ptr, s1_ptr, s2_ptr,
    w1_0_ptr, w2_0_ptr, e1_ptr, e2_ptr, es1_ptr, es2_ptr, d1_ptr, d2_ptr, ds1_ptr, ds2_ptr,
    d1_0_ptr, d2_0_ptr, do_ptr, dq_ptr, dk_ptr, dv_ptr, deta_ptr, dla_ptr, dlb_ptr, scratch_ptr,
    T, c, kv_T, kv_t0, g_T, g_t0,
    H: tl.constexpr, P: tl.constexpr, BT: tl.constexpr, D: tl.constexpr, F: tl.constexpr,
    MLP: tl.constexpr, SGV: tl.constexpr, L2: tl.constexpr, RULE: tl.constexpr, BASE: tl.constexpr,
    ACT: tl.constexpr, CLIP: tl.constexpr, READ: tl.constexpr, PREC: tl.constexpr, SCR: tl.constexpr,
):  # fmt: skip
    """Grid (B·H, P): memory p of (batch, head) i over chunk c, backward (stages 1 and 3).

    The chunk's start weights w1, w2 (momenta s1, s2) and the gradients of its end weights e1, e2
    (momenta es1, es2) are (B, P, H, out, in); the start weights' gradients go to d1, d2 (the
    momenta's to ds1, ds2; same layout), W_0's are added to d1_0, d2_0 (B, P, H, out, in). RULE: 0 gd,
    1 dgd, 2 momentum, whose log β (B, H, T) is static and whose d log β go to rows of chunk c of
    (B·H, P, T). k, v, η, log α (ungated) are read at rows kv_t0 … of buffers of kv_T rows, the
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
    s1, s2 = _layer_at(s1_ptr, s2_ptr, at, D, F, MLP)
    es1, es2 = _layer_at(es1_ptr, es2_ptr, at, D, F, MLP)
    ds1, ds2 = _layer_at(ds1_ptr, ds2_ptr, at, D, F, MLP)
    if RULE == 2:
        lb = tl.load(lb_ptr + pid.to(tl.int64) * T + c * BT + t)
    else:
        lb = t * 0.0
    d1_0, d2_0 = _layer_at(d1_0_ptr, d2_0_ptr, at, D, F, MLP)
    w1_0, w2_0 = _layer_at(w1_0_ptr, w2_0_ptr, p * H + h, D, F, MLP)
    scratch = scratch_ptr + (pid * P + p).to(tl.int64) * SCR
    surprise, g1, g2, u2 = _gradients(w1, w2, k, v, D, F, MLP, SGV, L2, ACT, PREC)
    if p == 0:
        q = tl.load(q_ptr + rows)
        d_o = tl.load(do_ptr + rows)
        dk, dg1, dg2, du2, d_eta, d_la, d_lb, dq = evolve_memory_bwd(
            w1, w2, s1, s2, w1_0, w2_0, e1, e2, es1, es2, d1, d2, ds1, ds2, d1_0, d2_0, scratch,
            k, g1, g2, u2, eta, la, lb, q, d_o, BT, D, F, MLP, RULE, BASE, ACT, CLIP, READ, PREC,
        )  # fmt: skip
        tl.store(dq_ptr + rows, dq)
    else:
        dk, dg1, dg2, du2, d_eta, d_la, d_lb, dq = evolve_memory_bwd(
            w1, w2, s1, s2, w1_0, w2_0, e1, e2, es1, es2, d1, d2, ds1, ds2, d1_0, d2_0, scratch,
            k, g1, g2, u2, eta, la, lb, k, k, BT, D, F, MLP, RULE, BASE, ACT, CLIP, 0, PREC,
        )  # fmt: skip
    tl.debug_barrier()  # the anchor's part adds to what the evolution's stored
    dk, dv = _anchor_bwd(w1, w2, d1, d2, scratch, k, v, dk, dg1, dg2, du2, BT, D, F, MLP, SGV, L2, ACT, PREC)
    mine = (pid * P + p).to(tl.int64) * kv_T + kv_t0
    out = mine * D + t[:, None] * D + tl.arange(0, D)[None, :]
    tl.store(dk_ptr + out, dk)
    tl.store(dv_ptr + out, dv)
    tl.store(deta_ptr + mine + t, d_eta)
    tl.store(dla_ptr + mine + t, d_la)
    if RULE == 2:
        tl.store(dlb_ptr + (pid * P + p).to(tl.int64) * T + c * BT + t, d_lb)


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
    # the sums over the memories of the layer (branches yield tensors only, never pointers)
    for p in range(P):
        if role == 0:
            dy += tl.load(dk_ptr + (mem + p * BT) * D + tile)
        elif role == 1:
            dy += tl.load(dv_ptr + (mem + p * BT) * D + tile)
        elif role == 2:
            dl += tl.load(deta_ptr + mem + p * BT + t)
        else:
            dl += tl.load(dla_ptr + mem + p * BT + t)
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
        else:  # log α = log σ(⟨y, r_α⟩ + b_α)
            readout = tl.load(ra_ptr + h * D + offs_d)
            s = tl.sigmoid(tl.sum(y * readout[None, :], 1) + tl.load(ba_ptr + h))
            dl = dl * gate * (1.0 - s)
        dy = dl[:, None] * readout[None, :]
        grad_readout = tl.sum(dl[:, None] * y, 0)
        grad_bias = tl.sum(dl, 0)
        if role == 2:
            tl.store(dre_ptr + pid * D + offs_d, tl.load(dre_ptr + pid * D + offs_d) + grad_readout)
            tl.store(dbe_ptr + pid, tl.load(dbe_ptr + pid) + grad_bias)
        else:
            tl.store(dra_ptr + pid * D + offs_d, tl.load(dra_ptr + pid * D + offs_d) + grad_readout)
            tl.store(dba_ptr + pid, tl.load(dba_ptr + pid) + grad_bias)
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
    weights, momentum, base, k, g1, g2, u2, eta, log_alpha, log_beta, q, grad_o, grad_end, grad_end_momentum,
    *, rule, activation, clip, retrieval, precision="ieee",
):  # fmt: skip
    """`evolve_bwd_kernel` (products at `precision`: ieee, tf32 or bf16) on N memories (every tensor with a leading axis N, contiguous): weights,
    momentum (the momentum rule's, else None), base (W_0, or None), grad_end and grad_end_momentum are
    lists of one (matrix) or two (MLP) layers; g2, u2 are None for a matrix. rule "gd", "dgd" or
    "momentum"; retrieval "causal", "inclusive" or "none" (grad_o unused). Returns (grads of the start
    weights, of the start momenta (None), of W_0 (None), dk, dg1, dg2, du2, dη, d log α, d log β, dq)."""
    mlp, has_momentum = len(weights) == 2, rule == "momentum"
    n, chunk, d = k.shape
    f = weights[0].shape[1] if mlp else d
    dummy = k.new_zeros(1)

    def pair(tensors):
        if tensors is None:
            return dummy, dummy
        return tensors[0], (tensors[1] if mlp else dummy)

    grads = [torch.empty_like(w) for w in weights]
    grads_momentum = [torch.empty_like(w) for w in weights] if has_momentum else None
    grads_base = [torch.zeros_like(w) for w in weights] if base is not None else None
    dk, dq, dg1 = torch.empty_like(k), torch.empty_like(q), torch.empty_like(g1)
    dg2 = torch.empty_like(g2) if mlp else dummy
    du2 = torch.empty_like(u2) if mlp else dummy
    d_eta, d_la, d_lb = torch.empty_like(eta), torch.empty_like(log_alpha), torch.empty_like(log_alpha)
    scr = chunk * max(chunk, d, f)
    scratch = k.new_empty(n, scr)
    evolve_bwd_kernel[(n,)](
        *pair(weights), *pair(momentum), *pair(base), *pair(grad_end), *pair(grad_end_momentum),
        k, g1, g2 if mlp else dummy, u2 if mlp else dummy, eta, log_alpha,
        log_beta if has_momentum else dummy, q, grad_o if grad_o is not None else torch.zeros_like(q),
        *pair(grads), *pair(grads_momentum), *pair(grads_base), dk, dg1, dg2, du2, d_eta, d_la, d_lb, dq,
        scratch, BT=chunk, D=d, F=f, MLP=mlp, RULE=("gd", "dgd", "momentum").index(rule),
        BASE=base is not None, ACT=0 if activation == "gelu" else 1, CLIP=float(clip),
        RETRIEVE={"none": 0, "causal": 1, "inclusive": 2}[retrieval], PREC=precision, SCR=scr,
    )  # fmt: skip
    return (
        grads, grads_momentum, grads_base, dk, dg1, (dg2 if mlp else None), (du2 if mlp else None),
        d_eta, d_la, (d_lb if has_momentum else None), dq,
    )  # fmt: skip


def backward_chunks(layer, static, starts, gate, grad_o, grad_end, *, precision: str, num_warps: int | None):
    """The Triton chunk backward of `fused._FusedTitans`: for the static inputs, the forward's gate,
    the gradients of the output and of the end state → (grads of the static inputs (None where a
    slot is None), of the initial state, of each parameter of the layer (None where the chunks do
    not reach it)). Products at `precision` (ieee, tf32, bf16); `num_warps` None picks per kernel.

    Chunk by chunk, last first, from `starts` ((c, chunk c's start state), as
    `fused.chunk_starts_reversed` yields them), in three launches: the generation recomputed
    (`chunk_split.generate_kernel`), every memory's evolution and anchor taken back
    (`memory_bwd_kernel`), the generation taken back (`generate_bwd_kernel`)."""
    from hope.ops.titans.chunk_split import generate_kernel

    titans, spec = layer.titans, layer.spec
    h, d, chunk = layer.n_heads, layer.head_dim, titans.chunk_size
    q, xh, k, v, eta, log_alpha, log_beta = static
    q = q.detach().contiguous()
    b, n = q.shape[0], q.shape[2]
    mlp, self_mod = spec.kind == "mlp", titans.self_modifying
    f, n_comp = (spec.hidden if mlp else d), len(layer.components)
    dummy = q.new_zeros(1)
    base = titans.decay_to == "init"
    w_0 = [w.detach().contiguous() for w in layer.init_weights] if base else [dummy, dummy]
    n_layers, momentum = len(spec.shapes), titans.update_rule == "momentum"

    def layers(state, offset=0):  # the two layers of weights (offset 0) or momenta (offset n_layers)
        if offset and not momentum:
            return dummy, dummy
        return state[offset], (state[offset + 1] if mlp else dummy)

    # the gradients of a chunk's end state (weights, then momenta), and of its start, swapped each chunk
    d_now = [g.contiguous().clone() for g in grad_end]
    d_next = [torch.empty_like(g) for g in d_now]
    d_base = [torch.zeros_like(g) for g in d_now[:n_layers]] if base else [dummy, dummy]
    if momentum:
        log_beta = log_beta.detach().contiguous()
        d_lb = q.new_empty(b * h, n_comp, n)
    else:
        log_beta, d_lb = dummy, dummy
    grad_o, gate = grad_o.contiguous(), gate.contiguous()
    dq = torch.empty_like(q)
    rows = chunk if self_mod else n
    dk, dv = q.new_empty(b * h, n_comp, rows, d), q.new_empty(b * h, n_comp, rows, d)
    d_eta, d_la = q.new_empty(b * h, n_comp, rows), q.new_empty(b * h, n_comp, rows)
    scr = chunk * max(chunk, d, f)
    scratch = q.new_empty(b * h * max(n_comp, 4), scr)
    common = dict(H=h, P=n_comp, BT=chunk, D=d, F=f, MLP=mlp, ACT=0 if spec.activation == "gelu" else 1)
    common.update(PREC=precision, SCR=scr)
    warps = num_warps or 4
    # the memory kernel holds a memory's weight tiles and their gradients: at the study's shapes (64 x 128
    # memories, chunk 16) ptxas spills 12.6 KB a thread at 4 warps, 4.9 KB at 8 (`compile_for`)
    memory_warps = num_warps or 8
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
    for c, start in starts:
        w1, w2 = layers(start)
        if self_mod:  # a view from the chunk's first row: the kernel reads its chunk 0
            generate_kernel[(b * h, 4)](
                xh[:, :, c * chunk :], w1, w2, *readouts, k, v, eta, log_alpha, n, 0, 1, 1,
                float(titans.eta_max), **gen, num_warps=warps,
            )  # fmt: skip
        kv_t0 = 0 if self_mod else c * chunk
        memory_bwd_kernel[(b * h, n_comp)](
            q, k, v, eta, log_alpha, log_beta, gate, w1, w2, *layers(start, n_layers),
            w_0[0], w_0[1] if mlp else dummy, *layers(d_now), *layers(d_now, n_layers),
            *layers(d_next), *layers(d_next, n_layers), d_base[0], d_base[1] if mlp else dummy,
            grad_o, dq, dk, dv, d_eta, d_la, d_lb, scratch,
            n, c, rows, kv_t0, n, c * chunk,
            **common, SGV=titans.self_generated_values, L2=titans.objective == "l2",
            RULE=("gd", "dgd", "momentum").index(titans.update_rule), BASE=base, CLIP=float(titans.error_clip),
            READ=2 if titans.retrieval == "inclusive" else 1, num_warps=memory_warps,
        )  # fmt: skip
        if self_mod:
            generate_bwd_kernel[(b * h, 4)](
                xh, gate, w1, w2, *readouts, dk, dv, d_eta, d_la, d_next[0],
                d_next[1] if mlp else dummy, dx, *d_read, scratch, n, c, n, c * chunk,
                float(titans.eta_max), **common, num_warps=warps,
            )  # fmt: skip
        d_now, d_next = d_next, d_now
    if self_mod:
        grad_static = [dq, dx.sum(0).view(b, h, n, d), None, None, None, None]
    else:
        grad_static = [dq, None, dk.sum(1).view(b, h, n, d), dv.sum(1).view(b, h, n, d)]
        grad_static += [d_eta.sum(1).view(b, h, n) * gate, d_la.sum(1).view(b, h, n) * gate]
    grad_static.append(d_lb.sum(1).view(b, h, n) if momentum else None)
    by_name = {}
    if base:
        by_name.update({f"init_weights.{i}": g.sum(0) for i, g in enumerate(d_base[:n_layers])})
    if self_mod:
        names = ("eta_readout", "eta_bias", "alpha_readout", "alpha_bias")
        by_name.update({name: g.sum(0) for name, g in zip(names, d_read)})
    grad_params = [by_name.get(name) for name, _ in layer.named_parameters()]
    return grad_static, d_now[: len(grad_end)], grad_params
