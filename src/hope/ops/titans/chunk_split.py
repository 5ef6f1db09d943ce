"""Triton forward of a self-referential Titans layer with the memories spread over programs: three
launches a chunk (`fused.KERNEL.split`), where `chunk_fwd` gives each (batch, head) one program that
walks every chunk and evolves its five memories in turn on one SM (B·H programs: 12 at batch 1).

Chunk c runs as
1. `generate_kernel`, grid (B·H, 4): M_k, M_v, M_η, M_α read the chunk's inputs at the chunk-start
   weights and write k, v, η, log α (self-modifying layers; static projections are computed before);
2. `gate_kernel`, grid (B·H,): M_mem's surprise and the gate, which every memory's step uses, applied
   to η and log α; with a shared inverse also dgd's first-layer (I + A)⁻¹;
3. `update_kernel`, grid (B·H, P): each memory's gradient factors at the chunk start and its
   evolution over the chunk into the next slot; M_mem also writes the chunk's output.
Weights live in the slots of `chunk_fwd` (same layout), and the gates and history are the same, so
the backward pass does not know which forward ran. The stages are `chunk_fwd`'s own functions.
"""

from __future__ import annotations

import triton
import triton.language as tl

from hope.ops.titans.chunk_fwd import (
    _evolve_memory,
    _first_layer_inverse,
    _gate,
    _gradients,
    _log_sigmoid,
    _memory_read,
    _slot,
)


@triton.jit
def _rows(BT: tl.constexpr, D: tl.constexpr):
    return tl.arange(0, BT)[:, None] * D + tl.arange(0, D)[None, :]


@triton.jit
def _component(c, keep_every, n_kept, b, p, h, B, P: tl.constexpr, H: tl.constexpr):
    """Index of memory p of (b, h) in the weights of chunk c's start slot, in units of one layer."""
    return ((_slot(c, keep_every, n_kept) * B + b) * P + p) * H + h


@triton.jit
def _layers(p1, p2, index, D: tl.constexpr, F: tl.constexpr, MLP: tl.constexpr):
    """Pointers to the two layers of the memory at `index` (in units of one layer): MLP w1 (F, D),
    w2 (D, F); a matrix memory has w1 (D, D) only (p2 is then a placeholder, never read)."""
    S1: tl.constexpr = F * D if MLP else D * D
    S2: tl.constexpr = D * F if MLP else 1
    return p1 + index * S1, p2 + index * S2


@triton.jit(do_not_specialize=["T", "c", "keep_every", "n_kept"])
def generate_kernel(
    x_ptr, w1_ptr, w2_ptr, re_ptr, be_ptr, ra_ptr, ba_ptr, k_ptr, v_ptr, eta_ptr, la_ptr,
    T, c, keep_every, n_kept, eta_max,
    H: tl.constexpr, P: tl.constexpr, BT: tl.constexpr, D: tl.constexpr, F: tl.constexpr,
    MLP: tl.constexpr, ACT: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    """Grid (B·H, 4): program (i, r) runs memory r + 1 (M_k, M_v, M_η, M_α) of (batch, head) i on chunk
    c of x (B, H, T, D); writes the chunk's k, v (B·H, BT, D) and η, log α (B·H, BT)."""
    pid = tl.program_id(0)
    role = tl.program_id(1)
    b, h = pid // H, pid % H
    B = tl.num_programs(0) // H
    offs_t = tl.arange(0, BT)
    offs_d = tl.arange(0, D)
    xh = tl.load(x_ptr + pid.to(tl.int64) * T * D + c * BT * D + _rows(BT, D))
    w1, w2 = _layers(w1_ptr, w2_ptr, _component(c, keep_every, n_kept, b, role + 1, h, B, P, H), D, F, MLP)
    y = _memory_read(w1, w2, xh, D, F, MLP, ACT, PREC)
    out = pid.to(tl.int64) * BT * D + _rows(BT, D)
    if role == 0:
        tl.store(k_ptr + out, y / tl.maximum(tl.sqrt(tl.sum(y * y, 1)), 1e-6)[:, None])
    elif role == 1:
        tl.store(v_ptr + out, y)
    elif role == 2:
        logit = tl.sum(y * tl.load(re_ptr + h * D + offs_d)[None, :], 1) + tl.load(be_ptr + h)
        tl.store(eta_ptr + pid * BT + offs_t, eta_max * tl.sigmoid(logit))
    else:
        logit = tl.sum(y * tl.load(ra_ptr + h * D + offs_d)[None, :], 1) + tl.load(ba_ptr + h)
        tl.store(la_ptr + pid * BT + offs_t, _log_sigmoid(logit))


@triton.jit(do_not_specialize=["T", "c", "kv_T", "kv_t0", "keep_every", "n_kept", "count"])
def gate_kernel(
    k_ptr, v_ptr, eta_ptr, la_ptr, w1_ptr, w2_ptr, hist_ptr, gate_ptr, eta_g_ptr, la_g_ptr, inv_ptr,
    trace_ptr, scratch_ptr, T, c, kv_T, kv_t0, keep_every, n_kept, count, threshold,
    H: tl.constexpr, P: tl.constexpr, BT: tl.constexpr, D: tl.constexpr, F: tl.constexpr,
    MLP: tl.constexpr, SGV: tl.constexpr, L2: tl.constexpr, ACT: tl.constexpr, MODE: tl.constexpr,
    WINDOW: tl.constexpr, SHARE_INV: tl.constexpr, PREC: tl.constexpr, SCR: tl.constexpr,
    TRACE: tl.constexpr,
):  # fmt: skip
    """Grid (B·H,): the gate of chunk c (MODE 0 none, 1 absolute, 2 relative, 3 the given one in
    gate_ptr (B, H, T)); writes the gated η, log α (B·H, BT) and, SHARE_INV, (I + A)⁻¹ (B·H, BT, BT).
    TRACE (not with MODE 3): M_mem's surprise ‖∇ℓ‖ also goes to the chunk's rows of trace_ptr (B, H, T).
    k, v, η, log α are read at rows kv_t0 … of buffers of kv_T rows (the chunk's, or the sequence's)."""
    pid = tl.program_id(0)
    b, h = pid // H, pid % H
    B = tl.num_programs(0) // H
    offs_t = tl.arange(0, BT)
    kv = pid.to(tl.int64) * kv_T * D + kv_t0 * D + _rows(BT, D)
    k = tl.load(k_ptr + kv)
    eta = tl.load(eta_ptr + pid.to(tl.int64) * kv_T + kv_t0 + offs_t)
    la = tl.load(la_ptr + pid.to(tl.int64) * kv_T + kv_t0 + offs_t)
    gates = gate_ptr + pid.to(tl.int64) * T + c * BT + offs_t
    if MODE == 3:
        gate = tl.load(gates)
    else:
        if MODE == 0 and not TRACE:
            gate = tl.full((BT,), 1.0, k.dtype)
        else:
            w1, w2 = _layers(w1_ptr, w2_ptr, _component(c, keep_every, n_kept, b, 0, h, B, P, H), D, F, MLP)
            v = tl.load(v_ptr + kv)
            surprise, _, _, _ = _gradients(w1, w2, k, v, D, F, MLP, SGV, L2, ACT, PREC)
            if MODE == 0:
                gate = tl.full((BT,), 1.0, k.dtype)
            else:
                gate = _gate(surprise, hist_ptr + pid * WINDOW, count, threshold, BT, MODE, WINDOW)
            if TRACE:
                tl.store(trace_ptr + pid.to(tl.int64) * T + c * BT + offs_t, surprise)
        tl.store(gates, gate)
    eta = eta * gate
    la = la * gate
    tl.store(eta_g_ptr + pid * BT + offs_t, eta)
    tl.store(la_g_ptr + pid * BT + offs_t, la)
    if SHARE_INV:
        inv = _first_layer_inverse(k, eta, la, scratch_ptr + pid.to(tl.int64) * SCR, BT, D, PREC)
        tl.store(inv_ptr + pid.to(tl.int64) * BT * BT + _rows(BT, BT), inv)


@triton.jit(do_not_specialize=["T", "c", "kv_T", "kv_t0", "keep_every", "n_kept"])
def update_kernel(
    q_ptr, k_ptr, v_ptr, eta_g_ptr, la_g_ptr, lb_ptr, inv_ptr, w1_ptr, w2_ptr, s1_ptr, s2_ptr,
    w1_0_ptr, w2_0_ptr, o_ptr, scratch_ptr, T, c, kv_T, kv_t0, keep_every, n_kept,
    H: tl.constexpr, P: tl.constexpr, BT: tl.constexpr, D: tl.constexpr, F: tl.constexpr,
    MLP: tl.constexpr, SGV: tl.constexpr, L2: tl.constexpr, RULE: tl.constexpr, BASE: tl.constexpr,
    ACT: tl.constexpr, CLIP: tl.constexpr, READ: tl.constexpr, SHARE_INV: tl.constexpr,
    PREC: tl.constexpr, SCR: tl.constexpr,
):  # fmt: skip
    """Grid (B·H, P): memory p of (batch, head) i over chunk c, from its start slot into the next;
    p = 0 (M_mem) writes the chunk's output rows of o (B, H, T, D). RULE: 0 gd, 1 dgd, 2 momentum."""
    pid = tl.program_id(0)
    p = tl.program_id(1)
    b, h = pid // H, pid % H
    B = tl.num_programs(0) // H
    offs_t = tl.arange(0, BT)
    rows = pid.to(tl.int64) * T * D + c * BT * D + _rows(BT, D)
    kv = pid.to(tl.int64) * kv_T * D + kv_t0 * D + _rows(BT, D)
    q = tl.load(q_ptr + rows)
    k = tl.load(k_ptr + kv)
    v = tl.load(v_ptr + kv)
    eta = tl.load(eta_g_ptr + pid * BT + offs_t)
    la = tl.load(la_g_ptr + pid * BT + offs_t)
    if RULE == 2:
        lb = tl.load(lb_ptr + pid.to(tl.int64) * T + c * BT + offs_t)
    else:
        lb = offs_t * 0.0
    if SHARE_INV:
        inv1 = tl.load(inv_ptr + pid.to(tl.int64) * BT * BT + _rows(BT, BT))
    else:
        inv1 = tl.zeros((BT, BT), dtype=k.dtype)
    at_in = _component(c, keep_every, n_kept, b, p, h, B, P, H)
    at_out = _component(c + 1, keep_every, n_kept, b, p, h, B, P, H)
    w1_in, w2_in = _layers(w1_ptr, w2_ptr, at_in, D, F, MLP)
    w1_out, w2_out = _layers(w1_ptr, w2_ptr, at_out, D, F, MLP)
    s1_in, s2_in = _layers(s1_ptr, s2_ptr, at_in, D, F, MLP)
    s1_out, s2_out = _layers(s1_ptr, s2_ptr, at_out, D, F, MLP)
    w1_0, w2_0 = _layers(w1_0_ptr, w2_0_ptr, p * H + h, D, F, MLP)
    scratch = scratch_ptr + (pid * P + p).to(tl.int64) * SCR
    _, g1, g2, u2 = _gradients(w1_in, w2_in, k, v, D, F, MLP, SGV, L2, ACT, PREC)
    if p == 0:  # only M_mem is read
        o = _evolve_memory(
            w1_in, w2_in, w1_out, w2_out, s1_in, s2_in, s1_out, s2_out, w1_0, w2_0, scratch,
            k, g1, g2, u2, eta, la, lb, q, inv1,
            BT, D, F, MLP, RULE, BASE, ACT, CLIP, READ, SHARE_INV, PREC,
        )  # fmt: skip
        tl.store(o_ptr + rows, o)
    else:
        _evolve_memory(
            w1_in, w2_in, w1_out, w2_out, s1_in, s2_in, s1_out, s2_out, w1_0, w2_0, scratch,
            k, g1, g2, u2, eta, la, lb, q, inv1,
            BT, D, F, MLP, RULE, BASE, ACT, CLIP, 0, SHARE_INV, PREC,
        )  # fmt: skip


def forward_chunks(
    xh, q, k, v, eta, log_alpha, log_beta, w1, w2, s1, s2, w1_0, w2_0, readouts, hist, o, gate,
    *, n_chunks, keep_every, count, threshold, eta_max, mode, self_mod, shape, num_warps, trace=None,
):  # fmt: skip
    """`chunk_fwd`'s work chunk by chunk in three launches (module doc), on the tensors and constants
    `fused.chunk_forward` prepares; fills o, gate, hist, the weight slots and a given `trace`
    (B, H, T: M_mem's surprise) in place."""
    b, h, n, d = q.shape
    chunk, p = shape["BT"], shape["P"]
    scr = chunk * max(shape["F"], d)
    scratch = q.new_empty(b * h * p, scr)
    eta_g, la_g = q.new_empty(b * h, chunk), q.new_empty(b * h, chunk)
    inv = q.new_empty(b * h, chunk, chunk) if shape["SHARE_INV"] else q.new_empty(1)
    if self_mod:  # the generation writes one chunk at a time
        k, v = q.new_empty(b * h, chunk, d), q.new_empty(b * h, chunk, d)
        eta, log_alpha = q.new_empty(b * h, chunk), q.new_empty(b * h, chunk)
    kv_rows = chunk if self_mod else n
    n_kept = n_chunks // keep_every + 1
    common = {key: shape[key] for key in ("H", "P", "BT", "D", "F", "MLP", "ACT", "PREC")}
    objective = {key: shape[key] for key in ("SGV", "L2", "SHARE_INV")}
    window = shape["WINDOW"]
    for c in range(n_chunks):
        kv_t0 = 0 if self_mod else c * chunk
        if self_mod:
            generate_kernel[(b * h, 4)](
                xh, w1, w2, *readouts, k, v, eta, log_alpha, n, c, keep_every, n_kept, eta_max,
                **common, num_warps=num_warps,
            )  # fmt: skip
        gate_kernel[(b * h,)](
            k, v, eta, log_alpha, w1, w2, hist, gate, eta_g, la_g, inv, scratch if trace is None else trace,
            scratch, n, c, kv_rows, kv_t0, keep_every, n_kept, min(count + c * chunk, window), threshold,
            **common, **objective, MODE=mode, WINDOW=window, SCR=scr, TRACE=trace is not None,
            num_warps=num_warps,
        )  # fmt: skip
        update_kernel[(b * h, p)](
            q, k, v, eta_g, la_g, log_beta, inv, w1, w2, s1, s2, w1_0, w2_0, o, scratch,
            n, c, kv_rows, kv_t0, keep_every, n_kept,
            **common, **objective, RULE=shape["RULE"], BASE=shape["BASE"], CLIP=shape["CLIP"],
            READ=shape["READ"], SCR=scr, num_warps=num_warps,
        )  # fmt: skip
