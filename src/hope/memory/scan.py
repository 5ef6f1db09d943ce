"""A memory streamed over given keys, values and queries: the core as a sequence layer.

This is where linear attention (matrix + dot + gd, α = η = 1, Eq. 14–18), DeltaNet (matrix + l2 + gd,
Eq. 65) and Gated DeltaNet (… with α) fall out as configurations. With `chunk_size` C, gradients are
evaluated at the chunk-start weights (Eq. 90); C = 1 is the exact per-token recurrence.
"""

from __future__ import annotations

import torch

from hope.memory import core
from hope.memory.chunked import evolve_chunk


def update_segment(
    spec: core.MemorySpec,
    rule: str,
    weights: core.Weights,
    momentum: core.Weights | None,
    anchor: core.Weights,
    inputs: core.Weights,
    errors: core.Weights,
    log_alpha: torch.Tensor,
    eta: torch.Tensor,
    log_beta: torch.Tensor | None,
    queries: torch.Tensor,
    retrieval: str,
    parallel: bool,
    base: core.Weights | None = None,
):
    """One segment of tokens sharing a chunk-start `anchor` (Eq. 90): every layer's update and the reads.

    inputs/errors (*b, n, d_i) are the gradient factors at the anchor, log_alpha/eta/log_beta (*b, n),
    queries (*b, n, d). `parallel` evolves the chunk in the UT form (`evolve_chunk`); otherwise the
    segment is one token and takes `core.step`, Eq. 88 exactly. retrieval: `causal` reads M_{t-1}(q_t)
    (Eq. 83), `inclusive` M_t(q_t) (Eq. 16), `chunk_start` the anchor. Returns (o, weights, momentum).
    """
    if retrieval == "chunk_start":
        o = core.read(spec, anchor, queries)
    if not parallel:
        if retrieval == "causal":
            o = core.read(spec, weights, queries)
        weights, momentum = core.step(
            rule,
            weights,
            momentum,
            [u[..., 0, :] for u in inputs],
            [g[..., 0, :] for g in errors],
            torch.exp(log_alpha[..., 0]),
            eta[..., 0],
            None if log_beta is None else torch.exp(log_beta[..., 0]),
            base,
        )
        if retrieval == "inclusive":
            o = core.read(spec, weights, queries)
        return o, weights, momentum
    reads = retrieval != "chunk_start"
    out, weights, momentum = evolve_chunk(
        spec,
        rule,
        weights,
        momentum,
        inputs,
        errors,
        log_alpha,
        eta,
        log_beta,
        queries if reads else None,
        include_current=retrieval == "inclusive",
        base=base,
    )
    return (out if reads else o), weights, momentum


def memory_scan(
    spec: core.MemorySpec,
    objective: str,
    rule: str,
    weights: core.Weights,
    keys: torch.Tensor,
    values: torch.Tensor,
    queries: torch.Tensor,
    alpha: torch.Tensor,
    eta: torch.Tensor,
    beta: torch.Tensor | None = None,
    momentum: core.Weights | None = None,
    chunk_size: int = 1,
    impl: str = "reference",
    retrieval: str = "causal",
):
    """Stream (*b, T, d) keys/values/queries with (*b, T) α, η (β for momentum) through a memory.

    `reference` runs token by token (`core.step`, gradients at each chunk-start anchor), `chunked`
    chunk by chunk; retrieval as in `update_segment`. Returns (outputs, weights, momentum).
    """
    if impl not in ("reference", "chunked"):
        raise ValueError(f"impl must be 'reference' or 'chunked', got {impl!r}")
    if rule == "momentum" and momentum is None:
        momentum = [torch.zeros_like(w) for w in weights]
    log_alpha, log_beta = torch.log(alpha), None if beta is None else torch.log(beta)
    T, outs, t = keys.shape[-2], [], 0
    while t < T:
        if t % chunk_size == 0:
            anchor = weights
        n = min(chunk_size - t % chunk_size, T - t) if impl == "chunked" else 1
        sl = slice(t, t + n)
        out, cache = core.forward(spec, anchor, keys[..., sl, :])
        inputs, errors = core.backward(
            spec, anchor, cache, core.objective_error(objective, out, values[..., sl, :])
        )
        o, weights, momentum = update_segment(
            spec,
            rule,
            weights,
            momentum,
            anchor,
            inputs,
            errors,
            log_alpha[..., sl],
            eta[..., sl],
            None if log_beta is None else log_beta[..., sl],
            queries[..., sl, :],
            retrieval,
            parallel=impl == "chunked",
        )
        outs.append(o)
        t += n
    return torch.cat(outs, dim=-2), weights, momentum
