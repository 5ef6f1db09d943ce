"""Triton one-token step of a self-referential Titans layer (Eq. 83–88), one launch for every memory.

One program per (batch, head) does what `SelfReferentialTitans.decode_step` does on the reference
path, in place on its static buffers: at a chunk boundary the anchor takes the current weights;
then generation of k, v, η, α from the anchor's M_k, M_v, M_η, M_α (or the given static
projections); every memory's gradient factors at the anchor (Eq. 90's chunk-start gradients), the
surprise of M_mem and the gate (none / absolute / relative z-score over the window, whose history
shifts by one); the per-token error clip; Eq. 88's update of every linear layer (gd, dgd, or
Titans' momentum, on W − W_0 with `decay_to="init"`); and M_mem's read at q before (causal) or
after (inclusive) the write. Everything is a matrix-vector product, so tiles are reduced with
`tl.sum` rather than `tl.dot` (no tensor-core shapes to meet, no transposed-dot pattern).
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
def _read(w1, w2, x, D: tl.constexpr, F: tl.constexpr, MLP: tl.constexpr, ACT: tl.constexpr):
    """M(x) for one vector x (D,): x + W2 σ(W1 x) (w1 (F, D), w2 (D, F)) or W1 x (w1 (D, D))."""
    if MLP:
        h = tl.sum(_tile(w1, F, D) * x[None, :], 1)
        y = x + tl.sum(_tile(w2, D, F) * _act(h, ACT)[None, :], 1)
    else:
        y = tl.sum(_tile(w1, D, D) * x[None, :], 1)
    return y


@triton.jit
def _gradient_factors(
    a1, a2, k, v, D: tl.constexpr, F: tl.constexpr, MLP: tl.constexpr, SGV: tl.constexpr, L2: tl.constexpr,
    ACT: tl.constexpr,
):  # fmt: skip
    """At the anchor: (surprise ‖∇ℓ‖, g1, g2, u2) with ∇W1 = g1 kᵀ, ∇W2 = g2 u2ᵀ (a matrix: g2 = g1, u2 = k)."""
    if SGV:
        target = _read(a1, a2, v, D, F, MLP, ACT)
    else:
        target = v
    if MLP:
        hk = tl.sum(_tile(a1, F, D) * k[None, :], 1)
        u2 = _act(hk, ACT)
        w2 = _tile(a2, D, F)
        out = k + tl.sum(w2 * u2[None, :], 1)
        if L2:
            g2 = out - target
        else:
            g2 = -target
        g1 = tl.sum(w2 * g2[:, None], 0) * _act_grad(hk, ACT)
        surprise = tl.sqrt(tl.sum(g1 * g1, 0) * tl.sum(k * k, 0) + tl.sum(g2 * g2, 0) * tl.sum(u2 * u2, 0))
    else:
        out = tl.sum(_tile(a1, D, D) * k[None, :], 1)
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
def _step_layer(
    w_ptr, s_ptr, w0_ptr, u, g, eta, alpha, beta, z,
    O: tl.constexpr, I: tl.constexpr, RULE: tl.constexpr, BASE: tl.constexpr, READ: tl.constexpr,
):  # fmt: skip
    """Eq. 88 for one layer W (O, I) in place (core.step); returns W z before (READ 1) or after
    (READ 2) the write, zeros for READ 0."""
    rows = tl.arange(0, O)[:, None] * I + tl.arange(0, I)[None, :]
    w = tl.load(w_ptr + rows)
    w0 = w * 0.0
    if BASE:
        w0 = tl.load(w0_ptr + rows)
    w = w - w0
    out = tl.zeros((O,), dtype=w.dtype)
    if READ == 1:
        out = tl.sum((w + w0) * z[None, :], 1)
    if RULE == 0:  # gd
        w = alpha * w - eta * g[:, None] * u[None, :]
    elif RULE == 1:  # dgd: W (αI − η ûûᵀ) − η g ûᵀ
        uh = u / tl.maximum(tl.sqrt(tl.sum(u * u, 0)), 1e-6)
        wu = tl.sum(w * uh[None, :], 1)
        w = alpha * w - eta * (wu + g)[:, None] * uh[None, :]
    else:  # momentum: S ← β S − η g uᵀ, W ← α W + S
        s = beta * tl.load(s_ptr + rows) - eta * g[:, None] * u[None, :]
        tl.store(s_ptr + rows, s)
        w = alpha * w + s
    if READ == 2:
        out = tl.sum((w + w0) * z[None, :], 1)
    tl.store(w_ptr + rows, w + w0)
    return out


@triton.jit
def _step_memory(
    w1, w2, s1, s2, b1, b2, k, g1, g2, u2, eta, alpha, beta, q,
    D: tl.constexpr, F: tl.constexpr, MLP: tl.constexpr, RULE: tl.constexpr, BASE: tl.constexpr,
    ACT: tl.constexpr, CLIP: tl.constexpr, READ: tl.constexpr,
):  # fmt: skip
    """Every layer of one memory with clipped errors; its read at q (zeros for READ 0)."""
    g1 = _clip(g1, CLIP)
    if MLP:
        g2 = _clip(g2, CLIP)
        h = _step_layer(w1, s1, b1, k, g1, eta, alpha, beta, q, F, D, RULE, BASE, READ)
        o = _step_layer(w2, s2, b2, u2, g2, eta, alpha, beta, _act(h, ACT), D, F, RULE, BASE, READ) + q
    else:
        o = _step_layer(w1, s1, b1, k, g1, eta, alpha, beta, q, D, D, RULE, BASE, READ)
    return o


@triton.jit
def titans_step_kernel(
    x_ptr, q_ptr, k_ptr, v_ptr, eta_ptr, la_ptr, lb_ptr,
    w1_ptr, w2_ptr, a1_ptr, a2_ptr, s1_ptr, s2_ptr, w1_0_ptr, w2_0_ptr,
    re_ptr, be_ptr, ra_ptr, ba_ptr, hist_ptr, count_ptr, pos_ptr, o_ptr,
    chunk, threshold, eta_max,
    H: tl.constexpr, P: tl.constexpr, D: tl.constexpr, F: tl.constexpr, SELF_MOD: tl.constexpr,
    MLP: tl.constexpr, SGV: tl.constexpr, L2: tl.constexpr, RULE: tl.constexpr, BASE: tl.constexpr,
    ACT: tl.constexpr, CLIP: tl.constexpr, MODE: tl.constexpr, WINDOW: tl.constexpr, READ: tl.constexpr,
):  # fmt: skip
    """Grid (B·H,). Vectors (B, H, D), scalars (B, H); weights, anchors and momenta (B, P, H, out, in),
    W_0 (P, H, out, in). RULE: 0 gd, 1 dgd, 2 momentum. MODE: 0 none, 1 absolute, 2 relative."""
    pid = tl.program_id(0)
    b = pid // H
    h = pid % H
    S1: tl.constexpr = F * D if MLP else D * D
    S2: tl.constexpr = D * F if MLP else 1
    C1: tl.constexpr = H * S1  # stride between components
    C2: tl.constexpr = H * S2
    at = (b * P * H + h).to(tl.int64)  # component 0 of this (batch, head)
    offs_d = tl.arange(0, D)
    if tl.load(pos_ptr) % chunk == 0:  # a chunk starts: the anchor takes the current weights
        for p in range(P):
            first, second = at * S1 + p * C1 + tl.arange(0, S1), at * S2 + p * C2 + tl.arange(0, S2)
            tl.store(a1_ptr + first, tl.load(w1_ptr + first))
            if MLP:
                tl.store(a2_ptr + second, tl.load(w2_ptr + second))
        tl.debug_barrier()
    a1, a2 = a1_ptr + at * S1, a2_ptr + at * S2
    q = tl.load(q_ptr + pid * D + offs_d)
    if SELF_MOD:
        x = tl.load(x_ptr + pid * D + offs_d)
        k = _read(a1 + C1, a2 + C2, x, D, F, MLP, ACT)
        k = k / tl.maximum(tl.sqrt(tl.sum(k * k, 0)), 1e-6)
        v = _read(a1 + 2 * C1, a2 + 2 * C2, x, D, F, MLP, ACT)
        y_eta = _read(a1 + 3 * C1, a2 + 3 * C2, x, D, F, MLP, ACT)
        y_alpha = _read(a1 + 4 * C1, a2 + 4 * C2, x, D, F, MLP, ACT)
        eta = eta_max * tl.sigmoid(tl.sum(y_eta * tl.load(re_ptr + h * D + offs_d), 0) + tl.load(be_ptr + h))
        la = _log_sigmoid(tl.sum(y_alpha * tl.load(ra_ptr + h * D + offs_d), 0) + tl.load(ba_ptr + h))
    else:
        k = tl.load(k_ptr + pid * D + offs_d)
        v = tl.load(v_ptr + pid * D + offs_d)
        eta = tl.load(eta_ptr + pid)
        la = tl.load(la_ptr + pid)
    beta = 1.0
    if RULE == 2:
        beta = tl.exp(tl.load(lb_ptr + pid))
    surprise, g1, g2, u2 = _gradient_factors(a1, a2, k, v, D, F, MLP, SGV, L2, ACT)
    gate = 1.0
    if MODE == 1:
        gate = tl.where(surprise > threshold, 1.0, 0.0)
    if MODE == 2:  # z-score against the last min(count, WINDOW) surprises (the history's tail)
        i = tl.arange(0, WINDOW)
        hist = tl.load(hist_ptr + pid * WINDOW + i)
        valid = tl.minimum(tl.load(count_ptr), WINDOW)
        mask = tl.where(i >= WINDOW - valid, 1.0, 0.0)
        n_valid = tl.maximum(valid, 1).to(tl.float32)
        mean = tl.sum(mask * hist, 0) / n_valid
        std = tl.sqrt(tl.sum(mask * (hist - mean) * (hist - mean), 0) / n_valid)
        z = (surprise - mean) / (std + 1e-6)
        gate = tl.where((z > threshold) | (valid < 2), 1.0, 0.0)
    if MODE != 0:  # the history shifts by one: drop the oldest, append this token's surprise
        i = tl.arange(0, WINDOW)
        shifted = tl.load(hist_ptr + pid * WINDOW + i + 1, mask=i + 1 < WINDOW, other=0.0)
        tl.debug_barrier()
        tl.store(hist_ptr + pid * WINDOW + i, tl.where(i == WINDOW - 1, surprise, shifted))
    eta = eta * gate
    alpha = tl.exp(la * gate)
    w1, w2 = w1_ptr + at * S1, w2_ptr + at * S2
    s1, s2 = s1_ptr + at * S1, s2_ptr + at * S2
    b1, b2 = w1_0_ptr + h * S1, w2_0_ptr + h * S2
    o = _step_memory(
        w1, w2, s1, s2, b1, b2, k, g1, g2, u2, eta, alpha, beta, q, D, F, MLP, RULE, BASE, ACT, CLIP, READ
    )
    tl.store(o_ptr + pid * D + offs_d, o)
    for p in range(1, P):
        _, g1, g2, u2 = _gradient_factors(a1 + p * C1, a2 + p * C2, k, v, D, F, MLP, SGV, L2, ACT)
        _step_memory(
            w1 + p * C1, w2 + p * C2, s1 + p * C1, s2 + p * C2, b1 + p * H * S1, b2 + p * H * S2,
            k, g1, g2, u2, eta, alpha, beta, q, D, F, MLP, RULE, BASE, ACT, CLIP, 0,
        )  # fmt: skip


# warps per program of the step kernel: 8 took 63 µs a hope-125m layer step, 4 took 79, 16 took 66
# (H200, 2026-12-01, `benchmarks/step_kernel.py`)
STEP_NUM_WARPS = 8


def decode_step_fused(layer, xc: torch.Tensor, state: dict) -> torch.Tensor:
    """One token xc (B, 1, D) (after the short convolution) through the kernel, on `static_state`
    buffers updated in place (the position is left to the caller); returns o (B, H, 1, d_h)."""
    titans, spec = layer.titans, layer.spec
    b, h, d = xc.shape[0], layer.n_heads, layer.head_dim
    mlp = spec.kind == "mlp"
    q = core.normalize(layer._heads(layer.q_proj(xc)))[:, :, 0].contiguous()
    dummy = q.new_empty(1)
    if titans.self_modifying:
        xh = core.normalize(layer._heads(xc))[:, :, 0].contiguous()
        k = v = eta = log_alpha = dummy
        readouts = [layer.eta_readout, layer.eta_bias, layer.alpha_readout, layer.alpha_bias]
    else:
        xh = dummy
        _, k, v, eta, log_alpha, _ = layer._project(None, xc)
        k, v = k[:, :, 0].contiguous(), v[:, :, 0].contiguous()
        eta, log_alpha = eta[..., 0].contiguous(), log_alpha[..., 0].contiguous()
        readouts = [dummy] * 4
    momentum = titans.update_rule == "momentum"
    log_beta = F.logsigmoid(layer.beta_proj(xc))[:, 0].contiguous() if momentum else dummy
    weights, anchor = state["weights"], state["anchor"]
    w1, w2 = weights[0], (weights[1] if mlp else dummy)
    a1, a2 = anchor[0], (anchor[1] if mlp else dummy)
    s1, s2 = (state["momentum"][0], state["momentum"][1] if mlp else dummy) if momentum else (dummy, dummy)
    base = [w.detach() for w in layer.init_weights] if titans.decay_to == "init" else [dummy, dummy]
    o = torch.empty(b, h, d, device=xc.device, dtype=xc.dtype)
    modes = {"none": 0, "absolute": 1, "relative": 2}
    titans_step_kernel[(b * h,)](
        xh, q, k, v, eta, log_alpha, log_beta, w1, w2, a1, a2, s1, s2, base[0], base[1] if mlp else dummy,
        *(t.detach() for t in readouts), state["surprise_hist"], state["surprise_count"], state["pos"], o,
        titans.chunk_size, float(titans.surprise.threshold), float(titans.eta_max),
        H=h, P=len(layer.components), D=d, F=spec.hidden if mlp else d, SELF_MOD=titans.self_modifying,
        MLP=mlp, SGV=titans.self_generated_values, L2=titans.objective == "l2",
        RULE=("gd", "dgd", "momentum").index(titans.update_rule), BASE=titans.decay_to == "init",
        ACT=0 if spec.activation == "gelu" else 1, CLIP=float(titans.error_clip),
        MODE=modes[titans.surprise.mode], WINDOW=titans.surprise.window,
        READ=2 if titans.retrieval == "inclusive" else 1, num_warps=STEP_NUM_WARPS,
    )  # fmt: skip
    if titans.surprise.mode != "none":
        state["surprise_count"].copy_(torch.clamp(state["surprise_count"] + 1, max=titans.surprise.window))
    return o[:, :, None]
