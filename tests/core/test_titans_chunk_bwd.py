"""Stage 1 of the Triton chunk backward (`hope.ops.titans.chunk_bwd`) equals autograd through the
PyTorch evolution of a memory over one chunk (`hope.memory.chunked.evolve_chunk`, the error clip
before it): gradients of the start weights and momenta, W_0, the gradient factors, η, log α, log β
and the queries.

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


def _inputs(mlp: bool, momentum: bool, base: bool, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen, dtype=DTYPE) * scale).to(DEVICE)

    def uniform(lo, hi):
        return (torch.rand(N, CHUNK, generator=gen, dtype=DTYPE) * (hi - lo) + lo).to(DEVICE)

    shapes = [(F, D), (D, F)] if mlp else [(D, D)]
    weights = [randn(N, o, i, scale=i**-0.5) for o, i in shapes]
    return {
        "weights": weights,
        "momentum": [randn(*w.shape, scale=0.1) for w in weights] if momentum else None,
        "base": [w + randn(*w.shape, scale=0.1) for w in weights] if base else None,
        "k": core.normalize(randn(N, CHUNK, D)),
        "g1": randn(N, CHUNK, F if mlp else D, scale=0.6),  # norms around 1: the clip at 1 bites on some
        "g2": randn(N, CHUNK, D, scale=0.3) if mlp else None,
        "u2": randn(N, CHUNK, F) if mlp else None,
        "eta": uniform(0.05, 0.55),
        "log_alpha": torch.log(uniform(0.8, 1.0)),
        "log_beta": torch.log(uniform(0.5, 0.95)) if momentum else None,
        "q": core.normalize(randn(N, CHUNK, D)),
        "grad_o": randn(N, CHUNK, D),
        "grad_end": [randn(*w.shape) for w in weights],
        "grad_end_momentum": [randn(*w.shape) for w in weights] if momentum else None,
    }


DIFFERENTIATED = ("weights", "momentum", "base", "k", "g1", "g2", "u2", "eta", "log_alpha", "log_beta", "q")


def _autograd(given: dict, rule, activation, clip, retrieval) -> dict:
    """{name: gradient (a list for the layer lists)} of ⟨read, grad_o⟩ + Σ ⟨end state, grad_end⟩."""
    mlp = len(given["weights"]) == 2
    spec = (
        core.MemorySpec("mlp", D, D, hidden=F, activation=activation)
        if mlp
        else core.MemorySpec("matrix", D, D)
    )
    leaf = {}
    for name in DIFFERENTIATED:
        value = given[name]
        if isinstance(value, list):
            leaf[name] = [t.clone().requires_grad_() for t in value]
        elif value is not None:
            leaf[name] = value.clone().requires_grad_()
    inputs = [leaf["k"], leaf["u2"]] if mlp else [leaf["k"]]
    errors = core.clip_errors([leaf["g1"], leaf["g2"]] if mlp else [leaf["g1"]], clip)
    reads = retrieval != "none"
    out, ends, momenta = evolve_chunk(
        spec, rule, leaf["weights"], leaf.get("momentum"), inputs, errors, leaf["log_alpha"], leaf["eta"],
        leaf.get("log_beta"), leaf["q"] if reads else None, include_current=retrieval == "inclusive",
        base=leaf.get("base"),
    )  # fmt: skip
    loss = sum((w * g).sum() for w, g in zip(ends, given["grad_end"]))
    if rule == "momentum":
        loss = loss + sum((s * g).sum() for s, g in zip(momenta, given["grad_end_momentum"]))
    if reads:
        loss = loss + (out * given["grad_o"]).sum()
    flat = [(name, i, t) for name, v in leaf.items() for i, t in enumerate(v if isinstance(v, list) else [v])]
    grads = torch.autograd.grad(loss, [t for _, _, t in flat], allow_unused=True)
    return {f"{name}.{i}": g for (name, i, _), g in zip(flat, grads)}


CASES = [
    # (mlp, rule, activation, clip, retrieval, base)
    (True, "dgd", "gelu", 1.0, "causal", True),  # hope's memories
    (True, "dgd", "silu", 0.0, "inclusive", False),
    (True, "dgd", "gelu", 1.0, "none", True),  # the memories that are not read
    (True, "gd", "gelu", 1.0, "causal", False),
    (False, "dgd", "gelu", 1.0, "causal", True),
    (False, "gd", "gelu", 0.0, "inclusive", True),
    (False, "dgd", "gelu", 0.0, "none", False),
    (True, "momentum", "silu", 1.0, "causal", True),  # Titans' LMM
    (True, "momentum", "gelu", 0.0, "inclusive", False),
    (True, "momentum", "gelu", 1.0, "none", True),
    (False, "momentum", "gelu", 0.0, "causal", False),
]


@pytest.mark.parametrize("mlp,rule,activation,clip,retrieval,base", CASES)
def test_evolution_backward_kernel_equals_autograd(mlp, rule, activation, clip, retrieval, base):
    from hope.ops.titans.chunk_bwd import evolve_backward

    given = _inputs(mlp, rule == "momentum", base)
    expected = _autograd(given, rule, activation, clip, retrieval)
    names = ("weights", "momentum", "base", "k", "g1", "g2", "u2", "eta", "log_alpha", "log_beta", "q")
    results = evolve_backward(
        *(given[n] for n in names), given["grad_o"], given["grad_end"], given["grad_end_momentum"],
        rule=rule, activation=activation, clip=clip, retrieval=retrieval,
    )  # fmt: skip
    got = {}
    for name, value in zip(names, (*results[:3], *results[3:])):
        for i, t in enumerate(value if isinstance(value, list) else [value]):
            if t is not None:
                got[f"{name}.{i}"] = t
    assert got.keys() == expected.keys()
    for key, g in got.items():
        e = expected[key]
        if e is None:  # the queries of a memory that is not read
            e = torch.zeros_like(g)
        torch.testing.assert_close(g, e, atol=TOL, rtol=TOL, msg=key)
    assert expected["weights.0"].abs().sum() > 0 and got["log_alpha.0"].abs().sum() > 0
