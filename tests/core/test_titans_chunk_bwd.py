"""Stage 1 of the Triton chunk backward (`hope.ops.titans.chunk_bwd`) equals autograd through the
PyTorch evolution of a memory over one chunk (`hope.memory.chunked.evolve_chunk`, the error clip
before it): gradients of the start weights, W_0, the gradient factors, η, log α and the queries.

Float64 in Triton's interpreter on a CPU (tests/conftest.py); float32 with IEEE products on a GPU."""

import pytest
import torch

from hope.memory import core
from hope.memory.chunked import evolve_chunk

pytest.importorskip("triton")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPE = torch.float64 if DEVICE == "cpu" else torch.float32
TOL = 1e-10 if DTYPE == torch.float64 else 2e-4
N, CHUNK, D, F = 3, 16, 16, 32


def _inputs(mlp: bool, base: bool, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen, dtype=DTYPE) * scale).to(DEVICE)

    shapes = [(F, D), (D, F)] if mlp else [(D, D)]
    weights = [randn(N, o, i, scale=i**-0.5) for o, i in shapes]
    w0 = [w + randn(*w.shape, scale=0.1) for w in weights] if base else None
    k = core.normalize(randn(N, CHUNK, D))
    g1 = randn(N, CHUNK, F if mlp else D, scale=0.6)  # norms around 1: the clip at 1 bites on some
    g2 = randn(N, CHUNK, D, scale=0.3) if mlp else None
    u2 = randn(N, CHUNK, F) if mlp else None
    eta = (torch.rand(N, CHUNK, generator=gen, dtype=DTYPE) * 0.5 + 0.05).to(DEVICE)
    log_alpha = torch.log(torch.rand(N, CHUNK, generator=gen, dtype=DTYPE) * 0.2 + 0.8).to(DEVICE)
    q = core.normalize(randn(N, CHUNK, D))
    grad_o = randn(N, CHUNK, D)
    grad_end = [randn(*w.shape) for w in weights]
    return weights, w0, k, g1, g2, u2, eta, log_alpha, q, grad_o, grad_end


def _autograd(inputs, rule, activation, clip, retrieval):
    weights, w0, k, g1, g2, u2, eta, log_alpha, q, grad_o, grad_end = inputs
    mlp = len(weights) == 2
    spec = (
        core.MemorySpec("mlp", D, D, hidden=F, activation=activation)
        if mlp
        else core.MemorySpec("matrix", D, D)
    )
    leaves = [t.clone().requires_grad_() for t in (*weights, *(w0 or []), k, g1, eta, log_alpha, q)]
    n_w = len(weights)
    ws, bases = leaves[:n_w], (leaves[n_w : 2 * n_w] if w0 else None)
    k_, g1_, eta_, la_, q_ = leaves[len(leaves) - 5 :]
    extra = [t.clone().requires_grad_() for t in (g2, u2)] if mlp else []
    inputs_ = [k_, extra[1]] if mlp else [k_]
    errors = core.clip_errors([g1_, extra[0]] if mlp else [g1_], clip)
    reads = retrieval != "none"
    out, ends, _ = evolve_chunk(
        spec, rule, ws, None, inputs_, errors, la_, eta_, None, q_ if reads else None,
        include_current=retrieval == "inclusive", base=bases,
    )  # fmt: skip
    loss = sum((w * g).sum() for w, g in zip(ends, grad_end))
    if reads:
        loss = loss + (out * grad_o).sum()
    wanted = [*ws, *(bases or []), k_, g1_, *extra, eta_, la_, q_]
    return torch.autograd.grad(loss, wanted, allow_unused=True)


CASES = [
    # (mlp, rule, activation, clip, retrieval, base)
    (True, "dgd", "gelu", 1.0, "causal", True),  # hope's memories
    (True, "dgd", "silu", 0.0, "inclusive", False),
    (True, "dgd", "gelu", 1.0, "none", True),  # the memories that are not read
    (True, "gd", "gelu", 1.0, "causal", False),
    (False, "dgd", "gelu", 1.0, "causal", True),
    (False, "gd", "gelu", 0.0, "inclusive", True),
    (False, "dgd", "gelu", 0.0, "none", False),
]


@pytest.mark.parametrize("mlp,rule,activation,clip,retrieval,base", CASES)
def test_evolution_backward_kernel_equals_autograd(mlp, rule, activation, clip, retrieval, base):
    from hope.ops.titans.chunk_bwd import evolve_backward

    inputs = _inputs(mlp, base)
    weights, w0, k, g1, g2, u2, eta, log_alpha, q, grad_o, grad_end = inputs
    expected = _autograd(inputs, rule, activation, clip, retrieval)
    got_w, got_w0, dk, dg1, dg2, du2, d_eta, d_la, dq = evolve_backward(
        weights, w0, k, g1, g2, u2, eta, log_alpha, q, grad_o, grad_end,
        rule=rule, activation=activation, clip=clip, retrieval=retrieval,
    )  # fmt: skip
    names = [f"W{i + 1}" for i in range(len(weights))]
    got = [*got_w, *(got_w0 or []), dk, dg1, *([dg2, du2] if mlp else []), d_eta, d_la, dq]
    labels = [*names, *([f"{n}_0" for n in names] if base else []), "k", "g1"]
    labels += ["g2", "u2"] if mlp else []
    labels += ["eta", "log_alpha", "q"]
    for label, g, e in zip(labels, got, expected, strict=True):
        if e is None:  # the queries of a memory that is not read
            e = torch.zeros_like(g)
        torch.testing.assert_close(g, e, atol=TOL, rtol=TOL, msg=label)
    assert expected[0].abs().sum() > 0 and d_la.abs().sum() > 0
