"""A memory streamed over given keys, values and queries: the core as a sequence layer.

This is where linear attention (matrix + dot + gd, α = η = 1, Eq. 14–18), DeltaNet (matrix + l2 + gd,
Eq. 65) and Gated DeltaNet (… with α) fall out as configurations. With `chunk_size` C, gradients are
evaluated at the chunk-start weights (Eq. 90); C = 1 is the exact per-token recurrence.
"""

from __future__ import annotations

import torch

from hope.memory import core
from hope.memory.chunked import evolve_chunk


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

    retrieval: `causal` reads M_{t-1}(q_t) (Eq. 83), `updated` reads M_t(q_t) (Eq. 16),
    `chunk_start` reads the chunk-start memory. Returns (outputs, weights, momentum).
    """
    if rule == "momentum" and momentum is None:
        momentum = [torch.zeros_like(w) for w in weights]
    T = keys.shape[-2]
    outs = []
    if impl == "reference":
        for t in range(T):
            if t % chunk_size == 0:
                anchor = weights
            tok = slice(t, t + 1)  # memories act on (*b, n, d); here n = 1
            out, cache = core.forward(spec, anchor, keys[..., tok, :])
            err = core.objective_error(objective, out, values[..., tok, :])
            inputs, errors = core.backward(spec, anchor, cache, err)
            inputs, errors = [u[..., 0, :] for u in inputs], [g[..., 0, :] for g in errors]
            b = None if beta is None else beta[..., t]
            if retrieval == "causal":
                outs.append(core.read(spec, weights, queries[..., tok, :]))
            elif retrieval == "chunk_start":
                outs.append(core.read(spec, anchor, queries[..., tok, :]))
            weights, momentum = core.step(
                rule, weights, momentum, inputs, errors, alpha[..., t], eta[..., t], b
            )
            if retrieval == "updated":
                outs.append(core.read(spec, weights, queries[..., tok, :]))
        return torch.cat(outs, dim=-2), weights, momentum
    if impl != "chunked":
        raise ValueError(f"impl must be 'reference' or 'chunked', got {impl!r}")
    log_alpha, log_beta = torch.log(alpha), None if beta is None else torch.log(beta)
    for s in range(0, T, chunk_size):
        sl = slice(s, min(s + chunk_size, T))
        anchor = weights
        out, cache = core.forward(spec, anchor, keys[..., sl, :])
        inputs, errors = core.backward(
            spec, anchor, cache, core.objective_error(objective, out, values[..., sl, :])
        )
        q = None if retrieval == "chunk_start" else queries[..., sl, :]
        o, weights, momentum = evolve_chunk(
            spec,
            rule,
            weights,
            momentum,
            inputs,
            errors,
            log_alpha[..., sl],
            eta[..., sl],
            None if log_beta is None else log_beta[..., sl],
            q,
            include_current=retrieval == "updated",
        )
        outs.append(core.read(spec, anchor, queries[..., sl, :]) if retrieval == "chunk_start" else o)
    return torch.cat(outs, dim=-2), weights, momentum
