"""Triton one-token step of a self-referential Titans layer (Eq. 83–88), in at most three launches.

What `SelfReferentialTitans.decode_step` does on the reference path, in place on its static buffers:
at a chunk boundary the anchor takes the current weights; generation of k, v, η, α from the anchor's
M_k, M_v, M_η, M_α (or the given static projections); every memory's gradient factors at the anchor
(Eq. 90's chunk-start gradients), the surprise of M_mem and the gate (none / absolute / relative
z-score over the window, whose history shifts by one); the per-token error clip; Eq. 88's update of
every linear layer (gd, dgd, or Titans' momentum, on W − W_0 with `decay_to="init"`); and M_mem's
read at q before (causal) or after (inclusive) the write.

A step is bound by how fast one SM streams a memory's weights, so the work is spread over programs
per (batch, head) and memory, in the order the data needs: `generate_kernel` (the four generators
read x), `gate_kernel` (M_mem's surprise, which decides every memory's step; not launched without a
gate), then `update_kernel` for every memory (five when self-modifying, M_mem alone otherwise). Each
program loads its tiles once and computes every product from them. Everything is a matrix-vector
product, so tiles are reduced with `tl.sum` rather than `tl.dot`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from hope.memory import core
from hope.ops.titans.chunk_fwd import _act, _act_grad, _log_sigmoid


@triton.jit
def _tile(ptr, O: tl.constexpr, I: tl.constexpr):
    return tl.load(ptr + tl.arange(0, O)[:, None] * I + tl.arange(0, I)[None, :])


@triton.jit
def _mv(w, x):
    """w x for a tile w (O, I) and a vector x (I,)."""
    return tl.sum(w * x[None, :], 1)


@triton.jit
def _load_memory(p1, p2, D: tl.constexpr, F: tl.constexpr, MLP: tl.constexpr):
    """A memory's tiles: (W1 (F, D), W2 (D, F)) for an MLP, (W (D, D), W) for a matrix."""
    if MLP:
        t1 = _tile(p1, F, D)
        t2 = _tile(p2, D, F)
    else:
        t1 = _tile(p1, D, D)
        t2 = t1
    return t1, t2


@triton.jit
def _anchor_tiles(w1, w2, a1, a2, pos_ptr, chunk, D: tl.constexpr, F: tl.constexpr, MLP: tl.constexpr):
    """The tiles of a memory's anchor; at a chunk boundary that is the current weights, which the
    update launch copies into the anchor after every read of this step."""
    if tl.load(pos_ptr) % chunk == 0:
        t1, t2 = _load_memory(w1, w2, D, F, MLP)
    else:
        t1, t2 = _load_memory(a1, a2, D, F, MLP)
    return t1, t2


@triton.jit
def _read(t1, t2, x, MLP: tl.constexpr, ACT: tl.constexpr):
    """M(x) for one vector x (D,) from a memory's tiles: x + W2 σ(W1 x), or W x."""
    if MLP:
        y = x + _mv(t2, _act(_mv(t1, x), ACT))
    else:
        y = _mv(t1, x)
    return y


@triton.jit
def _gradient_factors(
    t1, t2, k, v, MLP: tl.constexpr, SGV: tl.constexpr, L2: tl.constexpr, ACT: tl.constexpr
):
    """From the anchor's tiles: (surprise ‖∇ℓ‖, g1, g2, u2) with ∇W1 = g1 kᵀ, ∇W2 = g2 u2ᵀ
    (a matrix: g2 = g1, u2 = k)."""
    if SGV:
        target = _read(t1, t2, v, MLP, ACT)
    else:
        target = v
    if MLP:
        hk = _mv(t1, k)
        u2 = _act(hk, ACT)
        out = k + _mv(t2, u2)
        if L2:
            g2 = out - target
        else:
            g2 = -target
        g1 = tl.sum(t2 * g2[:, None], 0) * _act_grad(hk, ACT)
        surprise = tl.sqrt(tl.sum(g1 * g1, 0) * tl.sum(k * k, 0) + tl.sum(g2 * g2, 0) * tl.sum(u2 * u2, 0))
    else:
        out = _mv(t1, k)
        if L2:
            g1 = out - target
        else:
            g1 = -target
        g2 = g1
        u2 = k
        surprise = tl.sqrt(tl.sum(g1 * g1, 0) * tl.sum(k * k, 0))
    return surprise, g1, g2, u2


@triton.jit
def _clip(g, CLIP: tl.constexpr):
    """g scaled down to ‖g‖ ≤ CLIP (0: unchanged), as `core.clip_errors`."""
    if CLIP > 0:
        g = g * (CLIP / tl.maximum(tl.sqrt(tl.sum(g * g, 0)), CLIP))
    return g


@triton.jit
def _load_layer(w_ptr, w0_ptr, O: tl.constexpr, I: tl.constexpr, BASE: tl.constexpr):
    """One layer's weights W (O, I) and its W_0 (zeros without BASE)."""
    w = _tile(w_ptr, O, I)
    w0 = w * 0.0
    if BASE:
        w0 = _tile(w0_ptr, O, I)
    return w, w0


@triton.jit
def _step_layer(
    w, w0, w_ptr, s_ptr, u, g, eta, alpha, beta, z,
    O: tl.constexpr, I: tl.constexpr, RULE: tl.constexpr, READ: tl.constexpr,
):  # fmt: skip
    """Eq. 88 for one layer W (O, I), loaded as w with its W_0 w0, stored in place (core.step);
    returns W z before (READ 1) or after (READ 2) the write, zeros for READ 0."""
    rows = tl.arange(0, O)[:, None] * I + tl.arange(0, I)[None, :]
    out = tl.zeros((O,), dtype=w.dtype)
    if READ == 1:
        out = _mv(w, z)
    w = w - w0
    if RULE == 0:  # gd
        w = alpha * w - eta * g[:, None] * u[None, :]
    elif RULE == 1:  # dgd: W (αI − η ûûᵀ) − η g ûᵀ
        uh = u / tl.maximum(tl.sqrt(tl.sum(u * u, 0)), 1e-6)
        w = alpha * w - eta * (_mv(w, uh) + g)[:, None] * uh[None, :]
    else:  # momentum: S ← β S − η g uᵀ, W ← α W + S
        s = beta * tl.load(s_ptr + rows) - eta * g[:, None] * u[None, :]
        tl.store(s_ptr + rows, s)
        w = alpha * w + s
    w = w + w0
    if READ == 2:
        out = _mv(w, z)
    tl.store(w_ptr + rows, w)
    return out


@triton.jit
def generate_kernel(
    x_ptr, w1_ptr, w2_ptr, a1_ptr, a2_ptr, re_ptr, be_ptr, ra_ptr, ba_ptr, pos_ptr,
    k_ptr, v_ptr, eta_ptr, la_ptr, chunk, eta_max,
    H: tl.constexpr, P: tl.constexpr, D: tl.constexpr, F: tl.constexpr, MLP: tl.constexpr, ACT: tl.constexpr,
):  # fmt: skip
    """Grid (B·H, 4): generator j + 1 (M_k, M_v, M_η, M_α) of one (batch, head) reads x at the anchor
    (at a boundary: the current weights, which the update launch then copies there); writes k (unit
    norm), v (B, H, D), η or log α (B, H)."""
    pid = tl.program_id(0)
    j = tl.program_id(1)
    b = pid // H
    h = pid % H
    S1: tl.constexpr = F * D if MLP else D * D
    S2: tl.constexpr = D * F if MLP else 1
    at = (b * P * H + (j + 1) * H + h).to(tl.int64)
    offs_d = tl.arange(0, D)
    t1, t2 = _anchor_tiles(
        w1_ptr + at * S1, w2_ptr + at * S2, a1_ptr + at * S1, a2_ptr + at * S2, pos_ptr, chunk, D, F, MLP
    )
    y = _read(t1, t2, tl.load(x_ptr + pid * D + offs_d), MLP, ACT)
    if j == 0:
        tl.store(k_ptr + pid * D + offs_d, y / tl.maximum(tl.sqrt(tl.sum(y * y, 0)), 1e-6))
    elif j == 1:
        tl.store(v_ptr + pid * D + offs_d, y)
    elif j == 2:
        logit = tl.sum(y * tl.load(re_ptr + h * D + offs_d), 0) + tl.load(be_ptr + h)
        tl.store(eta_ptr + pid, eta_max * tl.sigmoid(logit))
    else:
        logit = tl.sum(y * tl.load(ra_ptr + h * D + offs_d), 0) + tl.load(ba_ptr + h)
        tl.store(la_ptr + pid, _log_sigmoid(logit))


@triton.jit
def gate_kernel(
    k_ptr, v_ptr, w1_ptr, w2_ptr, a1_ptr, a2_ptr, hist_ptr, count_ptr, pos_ptr, gate_ptr, chunk, threshold,
    H: tl.constexpr, P: tl.constexpr, D: tl.constexpr, F: tl.constexpr, MLP: tl.constexpr, SGV: tl.constexpr,
    L2: tl.constexpr, ACT: tl.constexpr, MODE: tl.constexpr, WINDOW: tl.constexpr,
):  # fmt: skip
    """Grid (B·H,): M_mem's surprise at the anchor (at a boundary: the current weights), the gate
    (MODE 1 absolute, 2 relative z-score over the last min(count, WINDOW) surprises) into gate (B, H),
    and the surprise history shifted by one."""
    pid = tl.program_id(0)
    b = pid // H
    h = pid % H
    S1: tl.constexpr = F * D if MLP else D * D
    S2: tl.constexpr = D * F if MLP else 1
    at = (b * P * H + h).to(tl.int64)
    offs_d = tl.arange(0, D)
    t1, t2 = _anchor_tiles(
        w1_ptr + at * S1, w2_ptr + at * S2, a1_ptr + at * S1, a2_ptr + at * S2, pos_ptr, chunk, D, F, MLP
    )
    k = tl.load(k_ptr + pid * D + offs_d)
    v = tl.load(v_ptr + pid * D + offs_d)
    surprise, _, _, _ = _gradient_factors(t1, t2, k, v, MLP, SGV, L2, ACT)
    i = tl.arange(0, WINDOW)
    if MODE == 1:
        gate = tl.where(surprise > threshold, 1.0, 0.0)
    else:
        hist = tl.load(hist_ptr + pid * WINDOW + i)
        valid = tl.minimum(tl.load(count_ptr), WINDOW)
        mask = tl.where(i >= WINDOW - valid, 1.0, 0.0)
        n_valid = tl.maximum(valid, 1).to(tl.float32)
        mean = tl.sum(mask * hist, 0) / n_valid
        std = tl.sqrt(tl.sum(mask * (hist - mean) * (hist - mean), 0) / n_valid)
        gate = tl.where(((surprise - mean) / (std + 1e-6) > threshold) | (valid < 2), 1.0, 0.0)
    tl.store(gate_ptr + pid, gate)
    shifted = tl.load(hist_ptr + pid * WINDOW + i + 1, mask=i + 1 < WINDOW, other=0.0)
    tl.debug_barrier()
    tl.store(hist_ptr + pid * WINDOW + i, tl.where(i == WINDOW - 1, surprise, shifted))


@triton.jit
def update_kernel(
    q_ptr, k_ptr, v_ptr, eta_ptr, la_ptr, lb_ptr, gate_ptr,
    w1_ptr, w2_ptr, a1_ptr, a2_ptr, s1_ptr, s2_ptr, w1_0_ptr, w2_0_ptr, pos_ptr, o_ptr, chunk,
    H: tl.constexpr, P: tl.constexpr, D: tl.constexpr, F: tl.constexpr, MLP: tl.constexpr,
    SGV: tl.constexpr, L2: tl.constexpr, RULE: tl.constexpr, BASE: tl.constexpr, ACT: tl.constexpr,
    CLIP: tl.constexpr, GATED: tl.constexpr, READ: tl.constexpr,
):  # fmt: skip
    """Grid (B·H, P): memory j of one (batch, head). Vectors (B, H, D), scalars (B, H); weights,
    anchors and momenta (B, P, H, out, in), W_0 (P, H, out, in). M_mem (memory 0) writes the read o.
    RULE: 0 gd, 1 dgd, 2 momentum."""
    pid = tl.program_id(0)
    p = tl.program_id(1)
    b = pid // H
    h = pid % H
    S1: tl.constexpr = F * D if MLP else D * D
    S2: tl.constexpr = D * F if MLP else 1
    at = (b * P * H + p * H + h).to(tl.int64)
    offs_d = tl.arange(0, D)
    a1, a2 = a1_ptr + at * S1, a2_ptr + at * S2
    w1, w2 = w1_ptr + at * S1, w2_ptr + at * S2
    b1, b2 = w1_0_ptr + (p * H + h) * S1, w2_0_ptr + (p * H + h) * S2
    # every tile is loaded up front, so that the loads are in flight together
    if MLP:
        cw1, cb1 = _load_layer(w1, b1, F, D, BASE)
        cw2, cb2 = _load_layer(w2, b2, D, F, BASE)
    else:
        cw1, cb1 = _load_layer(w1, b1, D, D, BASE)
        cw2, cb2 = cw1, cb1
    if tl.load(pos_ptr) % chunk == 0:  # a chunk starts: the anchor takes the current weights
        t1, t2 = cw1, cw2
        if MLP:
            tl.store(a1 + tl.arange(0, F)[:, None] * D + offs_d[None, :], t1)
            tl.store(a2 + offs_d[:, None] * F + tl.arange(0, F)[None, :], t2)
        else:
            tl.store(a1 + offs_d[:, None] * D + offs_d[None, :], t1)
    else:
        t1, t2 = _load_memory(a1, a2, D, F, MLP)
    k = tl.load(k_ptr + pid * D + offs_d)
    _, g1, g2, u2 = _gradient_factors(t1, t2, k, tl.load(v_ptr + pid * D + offs_d), MLP, SGV, L2, ACT)
    gate = 1.0
    if GATED:
        gate = tl.load(gate_ptr + pid)
    eta = tl.load(eta_ptr + pid) * gate
    alpha = tl.exp(tl.load(la_ptr + pid) * gate)
    beta = 1.0
    if RULE == 2:
        beta = tl.exp(tl.load(lb_ptr + pid))
    q = tl.load(q_ptr + pid * D + offs_d)
    s1, s2 = s1_ptr + at * S1, s2_ptr + at * S2
    g1 = _clip(g1, CLIP)
    if MLP:  # M(q) = q + W2 σ(W1 q)
        g2 = _clip(g2, CLIP)
        h1 = _step_layer(cw1, cb1, w1, s1, k, g1, eta, alpha, beta, q, F, D, RULE, READ)
        o = _step_layer(cw2, cb2, w2, s2, u2, g2, eta, alpha, beta, _act(h1, ACT), D, F, RULE, READ) + q
    else:
        o = _step_layer(cw1, cb1, w1, s1, k, g1, eta, alpha, beta, q, D, D, RULE, READ)
    tl.store(o_ptr + pid * D + offs_d, o, mask=(offs_d < D) & (p == 0))


# warps per program of the step kernels
STEP_NUM_WARPS = 8


def decode_step_fused(layer, xc: torch.Tensor, state: dict) -> torch.Tensor:
    """One token xc (B, 1, D) (after the short convolution) through the kernels, on `static_state`
    buffers updated in place (the position is left to the caller); returns o (B, H, 1, d_h)."""
    titans, spec = layer.titans, layer.spec
    b, h, d = xc.shape[0], layer.n_heads, layer.head_dim
    mlp = spec.kind == "mlp"
    n_memories = len(layer.components)
    q = core.normalize(layer._heads(layer.q_proj(xc)))[:, :, 0].contiguous()
    dummy = q.new_empty(1)
    weights, anchor = state["weights"], state["anchor"]
    w1, w2 = weights[0], (weights[1] if mlp else dummy)
    a1, a2 = anchor[0], (anchor[1] if mlp else dummy)
    shape = dict(H=h, P=n_memories, D=d, F=spec.hidden if mlp else d, MLP=mlp)
    act = 0 if spec.activation == "gelu" else 1
    if titans.self_modifying:
        xh = core.normalize(layer._heads(xc))[:, :, 0].contiguous()
        k, v = torch.empty_like(q), torch.empty_like(q)
        eta, log_alpha = q.new_empty(b, h), q.new_empty(b, h)
        readouts = (layer.eta_readout, layer.eta_bias, layer.alpha_readout, layer.alpha_bias)
        generate_kernel[(b * h, 4)](
            xh, w1, w2, a1, a2, *(t.detach() for t in readouts), state["pos"], k, v, eta, log_alpha,
            titans.chunk_size, float(titans.eta_max), **shape, ACT=act, num_warps=STEP_NUM_WARPS,
        )  # fmt: skip
    else:
        _, k, v, eta, log_alpha, _ = layer._project(None, xc)
        k, v = k[:, :, 0].contiguous(), v[:, :, 0].contiguous()
        eta, log_alpha = eta[..., 0].contiguous(), log_alpha[..., 0].contiguous()
    momentum = titans.update_rule == "momentum"
    log_beta = F.logsigmoid(layer.beta_proj(xc))[:, 0].contiguous() if momentum else dummy
    s1, s2 = (state["momentum"][0], state["momentum"][1] if mlp else dummy) if momentum else (dummy, dummy)
    base = [w.detach() for w in layer.init_weights] if titans.decay_to == "init" else [dummy, dummy]
    o = torch.empty(b, h, d, device=xc.device, dtype=xc.dtype)
    gated = titans.surprise.mode != "none"
    gate = q.new_empty(b, h) if gated else dummy
    objective = dict(SGV=titans.self_generated_values, L2=titans.objective == "l2", ACT=act)
    if gated:  # M_mem's surprise decides every memory's step, so it is known first
        gate_kernel[(b * h,)](
            k, v, w1, w2, a1, a2, state["surprise_hist"], state["surprise_count"], state["pos"], gate,
            titans.chunk_size, float(titans.surprise.threshold), **shape, **objective,
            MODE=("none", "absolute", "relative").index(titans.surprise.mode), WINDOW=titans.surprise.window,
            num_warps=STEP_NUM_WARPS,
        )  # fmt: skip
    update_kernel[(b * h, n_memories)](
        q, k, v, eta, log_alpha, log_beta, gate, w1, w2, a1, a2, s1, s2, base[0], base[1] if mlp else dummy,
        state["pos"], o, titans.chunk_size, **shape, **objective,
        RULE=("gd", "dgd", "momentum").index(titans.update_rule), BASE=titans.decay_to == "init",
        CLIP=float(titans.error_clip), GATED=gated, READ=2 if titans.retrieval == "inclusive" else 1,
        num_warps=STEP_NUM_WARPS,
    )  # fmt: skip
    if gated:
        state["surprise_count"].copy_(torch.clamp(state["surprise_count"] + 1, max=titans.surprise.window))
    return o[:, :, None]
