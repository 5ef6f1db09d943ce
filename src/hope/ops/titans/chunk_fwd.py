"""Triton forward of a self-referential Titans layer over a whole sequence (Eq. 83–90), one launch.

One program per (batch, head) walks the chunks, fla's `chunk_fwd_h` pattern. For every chunk it
does what `SelfReferentialTitans._segment` does in PyTorch, at the chunk-start memories:

1. generation: k, v, η, α from M_k, M_v, M_η, M_α (self-modifying) or loaded (static projections);
2. per-token gradient factors u_i, g_i of every memory's ½‖M(k) − v̂‖² (or −⟨M(k), v̂⟩);
3. the surprise of M_mem, the gate (none / absolute / relative z-score over a sliding window), the
   per-token error clip;
4. the within-chunk evolution of every linear layer of every memory: the gated delta rule (dgd) or
   decayed gradient descent (gd) in the UT form, (I + A) r = rhs with (I + A)⁻¹ as a product of
   tensor-core products; or Titans' momentum rule by its decay-ratio matrices; with
   `decay_to="init"` on W − W_0;
5. the retrieval of M_mem, layer by layer: o_t = M_mem,t-1(q_t) (causal) or M_mem,t(q_t) (inclusive).

The memories' weights live in global memory (at 125m, batch 8: 30 MB a layer, inside the H200's L2),
in slots: the weights at every `keep_every`-th chunk boundary stay (slot c / keep_every holds the start
of chunk c), so the backward pass can recompute any chunk from the nearest kept boundary; the others
alternate between two working slots after the kept ones. keep_every > n_chunks keeps only the start
(inference). A given gate (MODE 3) replays a forward exactly: the backward's recompute uses it.

Tiles whose transpose feeds a second `tl.dot` go through a per-program scratch buffer instead of
`tl.trans`: Triton 3.4–3.7.0 miscompile that pattern on Hopper (fla #640, #826, #983).
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _act(h, ACT: tl.constexpr):
    if ACT == 0:
        y = 0.5 * h * (1.0 + tl.erf(h * 0.7071067811865476))
    else:
        y = h * tl.sigmoid(h)
    return y


@triton.jit
def _act_grad(h, ACT: tl.constexpr):
    if ACT == 0:
        cdf = 0.5 * (1.0 + tl.erf(h * 0.7071067811865476))
        pdf = tl.exp(-0.5 * h * h) * 0.3989422804014327
        y = cdf + h * pdf
    else:
        s = tl.sigmoid(h)
        y = s * (1.0 + h * (1.0 - s))
    return y


@triton.jit
def _log_sigmoid(x):
    # log σ(x) = min(x, 0) − log(1 + e^−|x|), with log1p written out: α sits within 1e-5 of 1
    e = tl.exp(-tl.abs(x))
    u = 1.0 + e
    log1p = tl.log(u) - ((u - 1.0) - e) / u
    return tl.minimum(x, 0.0) - log1p


@triton.jit
def _load_t(ptr, R: tl.constexpr, C: tl.constexpr):
    """The transpose (C, R) of the row-major (R, C) matrix at ptr, read with swapped strides."""
    return tl.load(ptr + tl.arange(0, C)[:, None] + tl.arange(0, R)[None, :] * C)


@triton.jit
def _load(ptr, R: tl.constexpr, C: tl.constexpr):
    return tl.load(ptr + tl.arange(0, R)[:, None] * C + tl.arange(0, C)[None, :])


@triton.jit
def _store_t(ptr, tile, R: tl.constexpr, C: tl.constexpr):
    """Store tile (C, R) as the row-major (R, C) matrix at ptr."""
    tl.store(ptr + tl.arange(0, C)[:, None] + tl.arange(0, R)[None, :] * C, tile)


@triton.jit
def _transpose(scratch, tile, R: tl.constexpr, C: tl.constexpr):
    """tile (R, C) → (C, R) through global scratch (see the module doc)."""
    tl.debug_barrier()
    tl.store(scratch + tl.arange(0, R)[:, None] * C + tl.arange(0, C)[None, :], tile)
    tl.debug_barrier()
    out = _load_t(scratch, R, C)
    tl.debug_barrier()
    return out


@triton.jit
def _memory_read(
    w1, w2, x, D: tl.constexpr, F: tl.constexpr, MLP: tl.constexpr, ACT: tl.constexpr, PREC: tl.constexpr
):
    """M(x) for x (BT, D): residual MLP x + W2 σ(W1 x) (w1 (F, D), w2 (D, F)) or matrix W1 x (w1 (D, D))."""
    if MLP:
        h = _mm(x, _load_t(w1, F, D), PREC)
        y = _mm(_act(h, ACT), _load_t(w2, D, F), PREC) + x
    else:
        y = _mm(x, _load_t(w1, D, D), PREC)
    return y


@triton.jit
def _mm(a, b, PREC: tl.constexpr):
    """a @ b accumulated in float32, from tf32 or ieee products, or (PREC "bf16") bfloat16 operands."""
    if PREC == "bf16":
        c = tl.dot(a.to(tl.bfloat16), b.to(tl.bfloat16))
    else:
        c = tl.dot(a, b, input_precision=PREC)
    return c


@triton.jit
def _clip(g, CLIP: tl.constexpr):
    if CLIP > 0:
        norm = tl.sqrt(tl.sum(g * g, 1))
        g = g * (CLIP / tl.maximum(norm, CLIP))[:, None]
    return g


@triton.jit
def _unit_lower_inverse(a, BT: tl.constexpr, PREC: tl.constexpr):
    """(I + A)⁻¹ for strictly lower triangular A (BT, BT): A is nilpotent, so with N = −A
    (I + A)⁻¹ = Σ_{j<BT} N^j = Π_{i<log2 BT} (I + N^(2^i)), 2·log2(BT) − 2 tensor-core products
    instead of BT − 1 dependent row updates."""
    offs = tl.arange(0, BT)
    power = -a
    inv = tl.where(offs[:, None] == offs[None, :], 1.0, 0.0).to(a.dtype) + power
    for i in tl.static_range(1, 9):  # chunks up to 512 tokens
        if (1 << i) < BT:
            power = _mm(power, power, PREC)
            inv = inv + _mm(inv, power, PREC)
    return inv


@triton.jit
def _evolve_layer(
    w_in, w_out, s_in, s_out, w0, scratch, u, g, eta, la, lb, z, inv,
    BT: tl.constexpr, O: tl.constexpr, I: tl.constexpr, RULE: tl.constexpr, BASE: tl.constexpr,
    RETRIEVE: tl.constexpr, SHARED: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    """One linear layer W (O, I) across the chunk; writes W_end to w_out, returns the retrieval (BT, O):
    RETRIEVE 1 reads W_{t-1} z_t, 2 reads W_t z_t (after the token's write), 0 none (zeros).
    SHARED: `inv` is this layer's (I + A)⁻¹, computed once for every memory (dgd's first layers)."""
    if RULE == 2:
        out = _momentum_layer(
            w_in, w_out, s_in, s_out, w0, scratch, u, g, eta, la, lb, z, BT, O, I, BASE, RETRIEVE, PREC
        )
    else:
        out = _delta_layer(
            w_in, w_out, w0, scratch, u, g, eta, la, z, inv, BT, O, I, RULE == 1, BASE, RETRIEVE, SHARED, PREC
        )
    return out


@triton.jit
def _momentum_layer(
    w_in, w_out, s_in, s_out, w0, scratch, u, g, eta, la, lb, z,
    BT: tl.constexpr, O: tl.constexpr, I: tl.constexpr, BASE: tl.constexpr, RETRIEVE: tl.constexpr,
    PREC: tl.constexpr,
):  # fmt: skip
    """S_t = β_t S_{t-1} + v_t u_tᵀ, W_t = α_t W_{t-1} + S_t with v = −η g (`hope.memory.chunked.momentum_chunk`).

    Row t of the retrieval reads W_{t-1}: with a_t = Π α, b_t = Π β inside the chunk,
    W_{t-1} = (a_{t-1}) W_0 + Σ_{r<t} (a_{t-1}/a_r) b_r S_0 + Σ_{s<t} m[t, s] v_s u_sᵀ,
    m[t, s] = Σ_{s<=r<t} (a_{t-1}/a_r)(b_r/b_s); every ratio is exp of a difference of log-cumsums.
    """
    offs = tl.arange(0, BT)
    v = -eta[:, None] * g
    cum_a = tl.cumsum(la, 0)
    cum_a_prev = cum_a - la
    cum_b = tl.cumsum(lb, 0)
    strict = offs[:, None] > offs[None, :]
    incl = offs[:, None] >= offs[None, :]
    decay_a = tl.where(strict, tl.exp(tl.where(strict, cum_a_prev[:, None] - cum_a[None, :], 0.0)), 0.0)
    decay_b = tl.where(incl, tl.exp(tl.where(incl, cum_b[:, None] - cum_b[None, :], 0.0)), 0.0)
    end_a = tl.exp(tl.sum(la, 0) - cum_a)  # a_end / a_r
    mix_end = tl.sum(end_a[:, None] * decay_b, 0)  # m at the chunk's end, (BT,) over s
    u_t = _transpose(scratch, u, BT, I)  # (I, BT)
    w_t = _load_t(w_in, O, I)
    if BASE:
        w0_t = _load_t(w0, O, I)
        w_t = w_t - w0_t
    s_t = _load_t(s_in, O, I)
    w_end_t = tl.exp(tl.sum(la, 0)) * w_t + tl.sum(end_a * tl.exp(cum_b), 0) * s_t
    w_end_t = w_end_t + _mm(u_t, v * mix_end[:, None], PREC)
    s_end_t = tl.exp(tl.sum(lb, 0)) * s_t + _mm(u_t, v * tl.exp(tl.sum(lb, 0) - cum_b)[:, None], PREC)
    if BASE:
        w_end_t = w_end_t + w0_t
    _store_t(w_out, w_end_t, O, I)
    _store_t(s_out, s_end_t, O, I)
    if RETRIEVE:
        if RETRIEVE == 2:  # inclusive: row t reads W_t
            decay_a = tl.where(incl, tl.exp(tl.where(incl, cum_a[:, None] - cum_a[None, :], 0.0)), 0.0)
            scale = tl.exp(cum_a)
        else:
            scale = tl.exp(cum_a_prev)
        mix = _mm(decay_a, decay_b, PREC)
        out = scale[:, None] * _mm(z, w_t, PREC)
        out = out + tl.sum(decay_a * tl.exp(cum_b)[None, :], 1)[:, None] * _mm(z, s_t, PREC)
        out = out + _mm(mix * _mm(z, u_t, PREC), v, PREC)
        if BASE:
            out = out + _mm(z, w0_t, PREC)
    else:
        out = tl.zeros((BT, O), dtype=u.dtype)
    return out


@triton.jit
def _delta_layer(
    w_in, w_out, w0, scratch, u, g, eta, la, z, inv,
    BT: tl.constexpr, O: tl.constexpr, I: tl.constexpr, DGD: tl.constexpr, BASE: tl.constexpr,
    RETRIEVE: tl.constexpr, SHARED: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    """Gated delta rule (dgd: k = û, v = −η g, β = η) or decayed GD (gd: v = −η‖u‖g, β = 0) over the
    chunk in the UT form of `hope.memory.chunked.delta_chunk`."""
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
    cum_prev = cum - la
    strict = offs[:, None] > offs[None, :]
    decay = tl.where(strict, tl.exp(tl.where(strict, cum_prev[:, None] - cum[None, :], 0.0)), 0.0)
    k_t = _transpose(scratch, k, BT, I)  # (I, BT)
    w_t = _load_t(w_in, O, I)  # Wᵀ (I, O)
    if BASE:
        w0_t = _load_t(w0, O, I)
        w_t = w_t - w0_t
    rhs = v - (beta * tl.exp(cum_prev))[:, None] * _mm(k, w_t, PREC)
    if DGD and SHARED:
        r = _mm(inv, rhs, PREC)  # (BT, O)
    elif DGD:
        r = _mm(_unit_lower_inverse(beta[:, None] * _mm(k, k_t, PREC) * decay, BT, PREC), rhs, PREC)
    else:  # β = 0: A = 0
        r = rhs
    cum_end = tl.sum(la, 0)
    w_end_t = tl.exp(cum_end) * w_t + _mm(k_t, r * tl.exp(cum_end - cum)[:, None], PREC)
    if BASE:
        w_end_t = w_end_t + w0_t
    _store_t(w_out, w_end_t, O, I)
    if RETRIEVE:
        if RETRIEVE == 2:  # inclusive: row t reads W_t
            incl = offs[:, None] >= offs[None, :]
            decay = tl.where(incl, tl.exp(tl.where(incl, cum[:, None] - cum[None, :], 0.0)), 0.0)
            scale = tl.exp(cum)
        else:
            scale = tl.exp(cum_prev)
        zk = _mm(z, k_t, PREC) * decay
        out = scale[:, None] * _mm(z, w_t, PREC)
        out = out + _mm(zk, r, PREC)
        if BASE:
            out = out + _mm(z, w0_t, PREC)
    else:
        out = tl.zeros((BT, O), dtype=u.dtype)
    return out


@triton.jit
def _gradients(
    w1,
    w2,
    k,
    v,
    D: tl.constexpr,
    F: tl.constexpr,
    MLP: tl.constexpr,
    SGV: tl.constexpr,
    L2: tl.constexpr,
    ACT: tl.constexpr,
    PREC: tl.constexpr,
):
    """Gradient factors of ℓ(M; k_t, v̂_t) at the chunk-start weights w1, w2: ∇W_i = g_i u_iᵀ.

    Returns (unclipped surprise ‖∇ℓ_t‖ (BT,), g1, g2, u2); u1 is k. A matrix memory returns g1 twice."""
    if SGV:
        target = _memory_read(w1, w2, v, D, F, MLP, ACT, PREC)
    else:
        target = v
    if MLP:
        hk = _mm(k, _load_t(w1, F, D), PREC)  # (BT, F)
        ak = _act(hk, ACT)
        out = _mm(ak, _load_t(w2, D, F), PREC) + k
        if L2:
            g2 = out - target
        else:
            g2 = -target
        g1 = _mm(g2, _load(w2, D, F), PREC) * _act_grad(hk, ACT)  # (BT, F)
        surprise = tl.sqrt(tl.sum(g1 * g1, 1) * tl.sum(k * k, 1) + tl.sum(g2 * g2, 1) * tl.sum(ak * ak, 1))
    else:
        out = _mm(k, _load_t(w1, D, D), PREC)
        if L2:
            g1 = out - target
        else:
            g1 = -target
        g2 = g1
        ak = k
        surprise = tl.sqrt(tl.sum(g1 * g1, 1) * tl.sum(k * k, 1))
    return surprise, g1, g2, ak


@triton.jit
def _evolve_memory(
    w1_in, w2_in, w1_out, w2_out, s1_in, s2_in, s1_out, s2_out, w1_0, w2_0, scratch,
    k, g1, g2, u2, eta, la, lb, q, inv1,
    BT: tl.constexpr, D: tl.constexpr, F: tl.constexpr, MLP: tl.constexpr, RULE: tl.constexpr,
    BASE: tl.constexpr, ACT: tl.constexpr, CLIP: tl.constexpr, RETRIEVE: tl.constexpr,
    SHARE_INV: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    """Evolve every layer of one memory with clipped errors; returns its retrieval M_{t-1}(q_t) (or zeros).
    With SHARE_INV the first layer's (I + A)⁻¹ is the given `inv1`."""
    g1 = _clip(g1, CLIP)
    if MLP:
        g2 = _clip(g2, CLIP)
        h = _evolve_layer(
            w1_in, w1_out, s1_in, s1_out, w1_0, scratch, k, g1, eta, la, lb, q, inv1,
            BT, F, D, RULE, BASE, RETRIEVE, SHARE_INV, PREC,
        )  # fmt: skip
        o = _evolve_layer(
            w2_in, w2_out, s2_in, s2_out, w2_0, scratch, u2, g2, eta, la, lb, _act(h, ACT), inv1,
            BT, D, F, RULE, BASE, RETRIEVE, False, PREC,
        )  # fmt: skip
        o = o + q
    else:
        o = _evolve_layer(
            w1_in, w1_out, s1_in, s1_out, w1_0, scratch, k, g1, eta, la, lb, q, inv1,
            BT, D, D, RULE, BASE, RETRIEVE, SHARE_INV, PREC,
        )  # fmt: skip
    return o


@triton.jit
def _first_layer_inverse(k, eta, la, scratch, BT: tl.constexpr, D: tl.constexpr, PREC: tl.constexpr):
    """(I + A)⁻¹ of dgd's first layers: A = η_t (k̂_t · k̂_s) γ_t/γ_s (s < t) involves only the key, η and α,
    which every memory of the layer shares, so one inverse serves all of them (as `_delta_layer` forms it)."""
    offs = tl.arange(0, BT)
    kn = k / tl.maximum(tl.sqrt(tl.sum(k * k, 1)), 1e-6)[:, None]
    cum = tl.cumsum(la, 0)
    strict = offs[:, None] > offs[None, :]
    decay = tl.where(strict, tl.exp(tl.where(strict, (cum - la)[:, None] - cum[None, :], 0.0)), 0.0)
    a = eta[:, None] * _mm(kn, _transpose(scratch, kn, BT, D), PREC) * decay
    return _unit_lower_inverse(a, BT, PREC)


@triton.jit
def _gate(surprise, hist_ptr, count, threshold, BT: tl.constexpr, MODE: tl.constexpr, WINDOW: tl.constexpr):
    """Surprise gate in {0, 1} (BT,); absolute and relative modes also shift this chunk into the
    history at hist_ptr (the previous WINDOW surprises, oldest first), as `_gate` in the layer does."""
    j = tl.arange(0, BT)
    i = tl.arange(0, WINDOW)
    if MODE == 0:
        gate = tl.full((BT,), 1.0, surprise.dtype)
    elif MODE == 1:
        gate = tl.where(surprise > threshold, 1.0, 0.0).to(surprise.dtype)
    else:
        hist = tl.load(hist_ptr + i)
        valid = tl.minimum(count + j, WINDOW)
        # token j sees the last `valid` of the WINDOW values before it: history slots
        # i >= j + WINDOW − valid, and this chunk's tokens s with j − valid <= s < j
        m1 = (i[None, :] >= (j + WINDOW - valid)[:, None]).to(surprise.dtype)
        m2 = ((j[None, :] >= (j - valid)[:, None]) & (j[None, :] < j[:, None])).to(surprise.dtype)
        n_valid = tl.maximum(valid, 1).to(surprise.dtype)
        mean = (tl.sum(m1 * hist[None, :], 1) + tl.sum(m2 * surprise[None, :], 1)) / n_valid
        d1 = (hist[None, :] - mean[:, None]) * m1
        d2 = (surprise[None, :] - mean[:, None]) * m2
        std = tl.sqrt((tl.sum(d1 * d1, 1) + tl.sum(d2 * d2, 1)) / n_valid)
        z = (surprise - mean) / (std + 1e-6)
        gate = tl.where((z > threshold) | (valid < 2), 1.0, 0.0).to(surprise.dtype)
    if MODE != 0:  # the new history: the last WINDOW values of (history, this chunk)
        shifted = tl.load(hist_ptr + i + BT, mask=i + BT < WINDOW)
        tl.debug_barrier()
        tl.store(hist_ptr + i, shifted, mask=i + BT < WINDOW)
        tl.store(hist_ptr + j + WINDOW - BT, surprise, mask=j + WINDOW - BT >= 0)
        tl.debug_barrier()
    return gate


# runtime sizes stay unspecialised: one compiled kernel serves every length and stream position
@triton.jit
def _slot(c, keep_every, n_kept):
    """Slot of the weights at the start of chunk c (see the module doc)."""
    return tl.where(c % keep_every == 0, c // keep_every, n_kept + c % 2).to(tl.int64)


@triton.jit(do_not_specialize=["T", "n_chunks", "keep_every", "count"])
def titans_chunk_fwd_kernel(
    x_ptr, q_ptr, k_ptr, v_ptr, eta_ptr, la_ptr, lb_ptr,
    w1_ptr, w2_ptr, s1_ptr, s2_ptr, w1_0_ptr, w2_0_ptr,
    re_ptr, be_ptr, ra_ptr, ba_ptr,
    hist_ptr, o_ptr, gate_ptr, scratch_ptr,
    T, n_chunks, keep_every, count, threshold, eta_max,
    H: tl.constexpr, P: tl.constexpr, BT: tl.constexpr, D: tl.constexpr, F: tl.constexpr,
    SELF_MOD: tl.constexpr, MLP: tl.constexpr, SGV: tl.constexpr, L2: tl.constexpr, RULE: tl.constexpr,
    BASE: tl.constexpr, ACT: tl.constexpr, CLIP: tl.constexpr, MODE: tl.constexpr, WINDOW: tl.constexpr,
    READ: tl.constexpr, SHARE_INV: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    """Grid (B·H,). Token tensors (B, H, T, ·); weights and momenta (slots, B, P, H, out, in);
    W_0 (P, H, out, in). RULE: 0 gd, 1 dgd, 2 momentum (log β in lb_ptr)."""
    pid = tl.program_id(0)
    b = pid // H
    h = pid % H
    # layer sizes: MLP w1 (F, D), w2 (D, F); matrix w1 (D, D)
    S1: tl.constexpr = F * D if MLP else D * D
    S2: tl.constexpr = D * F if MLP else 1
    B = tl.num_programs(0) // H
    offs_t = tl.arange(0, BT)
    offs_d = tl.arange(0, D)
    tok = pid.to(tl.int64) * T * D
    scratch = scratch_ptr + pid.to(tl.int64) * BT * F
    hist = hist_ptr + pid * WINDOW
    n_kept = n_chunks // keep_every + 1
    C1: tl.constexpr = H * S1  # stride between components in a slot
    C2: tl.constexpr = H * S2
    for c in range(n_chunks):
        t0 = c * BT
        rows = (t0 + offs_t)[:, None] * D + offs_d[None, :]
        q = tl.load(q_ptr + tok + rows)
        # component 0 of this head at the chunk's slot: ((slot·B + b)·P + 0)·H + h
        at_in = (_slot(c, keep_every, n_kept) * B + b) * P * H + h
        at_out = (_slot(c + 1, keep_every, n_kept) * B + b) * P * H + h
        w1_in, w2_in = w1_ptr + at_in * S1, w2_ptr + at_in * S2
        w1_out, w2_out = w1_ptr + at_out * S1, w2_ptr + at_out * S2
        s1_in, s2_in = s1_ptr + at_in * S1, s2_ptr + at_in * S2
        s1_out, s2_out = s1_ptr + at_out * S1, s2_ptr + at_out * S2
        if RULE == 2:
            lb = tl.load(lb_ptr + pid.to(tl.int64) * T + t0 + offs_t)
        else:
            lb = offs_t * 0.0
        if SELF_MOD:
            xh = tl.load(x_ptr + tok + rows)
            k = _memory_read(w1_in + C1, w2_in + C2, xh, D, F, MLP, ACT, PREC)
            k = k / tl.maximum(tl.sqrt(tl.sum(k * k, 1)), 1e-6)[:, None]
            v = _memory_read(w1_in + 2 * C1, w2_in + 2 * C2, xh, D, F, MLP, ACT, PREC)
            y_eta = _memory_read(w1_in + 3 * C1, w2_in + 3 * C2, xh, D, F, MLP, ACT, PREC)
            y_alpha = _memory_read(w1_in + 4 * C1, w2_in + 4 * C2, xh, D, F, MLP, ACT, PREC)
            eta_logit = tl.sum(y_eta * tl.load(re_ptr + h * D + offs_d)[None, :], 1) + tl.load(be_ptr + h)
            alpha_logit = tl.sum(y_alpha * tl.load(ra_ptr + h * D + offs_d)[None, :], 1) + tl.load(ba_ptr + h)
            eta = eta_max * tl.sigmoid(eta_logit)
            la = _log_sigmoid(alpha_logit)
        else:
            k = tl.load(k_ptr + tok + rows)
            v = tl.load(v_ptr + tok + rows)
            eta = tl.load(eta_ptr + pid.to(tl.int64) * T + t0 + offs_t)
            la = tl.load(la_ptr + pid.to(tl.int64) * T + t0 + offs_t)
        # M_mem (component 0) goes first: its surprise gates every memory of the layer, and it alone
        # is read. The others share one loop body (a dynamic loop: 4 unrolled copies would compile
        # several times slower).
        surprise, g1, g2, u2 = _gradients(w1_in, w2_in, k, v, D, F, MLP, SGV, L2, ACT, PREC)
        if MODE == 3:
            gate = tl.load(gate_ptr + pid.to(tl.int64) * T + t0 + offs_t)
        else:
            gate = _gate(surprise, hist, tl.minimum(count + c * BT, WINDOW), threshold, BT, MODE, WINDOW)
            tl.store(gate_ptr + pid.to(tl.int64) * T + t0 + offs_t, gate)
        eta = eta * gate
        la = la * gate
        if SHARE_INV:
            inv1 = _first_layer_inverse(k, eta, la, scratch, BT, D, PREC)
        else:
            inv1 = tl.zeros((BT, BT), dtype=k.dtype)
        o = _evolve_memory(
            w1_in, w2_in, w1_out, w2_out, s1_in, s2_in, s1_out, s2_out,
            w1_0_ptr + h * S1, w2_0_ptr + h * S2, scratch, k, g1, g2, u2, eta, la, lb, q, inv1,
            BT, D, F, MLP, RULE, BASE, ACT, CLIP, READ, SHARE_INV, PREC,
        )  # fmt: skip
        tl.store(o_ptr + tok + rows, o)
        for p in range(1, P):
            _, g1, g2, u2 = _gradients(w1_in + p * C1, w2_in + p * C2, k, v, D, F, MLP, SGV, L2, ACT, PREC)
            _evolve_memory(
                w1_in + p * C1, w2_in + p * C2, w1_out + p * C1, w2_out + p * C2,
                s1_in + p * C1, s2_in + p * C2, s1_out + p * C1, s2_out + p * C2,
                w1_0_ptr + (p * H + h) * S1, w2_0_ptr + (p * H + h) * S2, scratch,
                k, g1, g2, u2, eta, la, lb, q, inv1,
                BT, D, F, MLP, RULE, BASE, ACT, CLIP, 0, SHARE_INV, PREC,
            )  # fmt: skip
        # the next chunk reads what this one wrote (other threads of the program wrote it)
        tl.debug_barrier()
