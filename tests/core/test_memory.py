"""The associative-memory core: chunked == reference, and the textbook special cases."""

import pytest
import torch

from hope.memory import MemorySpec, core, memory_scan

D64 = torch.float64
B, H, T, D = 2, 2, 19, 6  # T is not a multiple of any chunk size used


def _inputs(seed):
    g = torch.Generator().manual_seed(seed)
    k = core.normalize(torch.randn(B, H, T, D, generator=g, dtype=D64))
    v = torch.randn(B, H, T, D, generator=g, dtype=D64)
    q = torch.randn(B, H, T, D, generator=g, dtype=D64)
    alpha = 0.5 + 0.5 * torch.rand(B, H, T, generator=g, dtype=D64)
    eta = 0.5 * torch.rand(B, H, T, generator=g, dtype=D64)
    beta = torch.rand(B, H, T, generator=g, dtype=D64)
    return k, v, q, alpha, eta, beta


@pytest.mark.parametrize("kind", ["matrix", "mlp"])
@pytest.mark.parametrize("rule", ["gd", "momentum", "dgd"])
@pytest.mark.parametrize("objective", ["l2", "dot"])
@pytest.mark.parametrize("retrieval", ["causal", "inclusive", "chunk_start"])
def test_chunked_equals_reference(kind, rule, objective, retrieval):
    spec = MemorySpec(kind, D, D, hidden=5, depth=3 if kind == "mlp" else 1)
    k, v, q, alpha, eta, beta = _inputs(0)
    w0 = [w.to(D64) for w in core.init_weights(spec, (B, H), 0.3, torch.Generator().manual_seed(1))]
    args = (spec, objective, rule, w0, k, v, q, alpha, eta, beta)
    for chunk in (1, 4, 16):
        ref, fast = (
            memory_scan(*args, chunk_size=chunk, impl=impl, retrieval=retrieval)
            for impl in ("reference", "chunked")
        )
        torch.testing.assert_close(fast[0], ref[0], rtol=0, atol=1e-10)
        for a, b in zip(fast[1], ref[1]):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


def _matrix(impl, objective, k, v, q, alpha, eta, chunk=1):
    spec = MemorySpec("matrix", D, D)
    w0 = [torch.zeros(B, H, D, D, dtype=D64)]
    return memory_scan(
        spec, objective, "gd", w0, k, v, q, alpha, eta, chunk_size=chunk, impl=impl, retrieval="inclusive"
    )[0]


@pytest.mark.parametrize("impl", ["reference", "chunked"])
def test_linear_attention_is_matrix_dot_gd(impl):
    """Eq. 14–18: M_t = M_{t-1} + v_t k_tᵀ, y_t = M_t q_t, i.e. y_t = Σ_{s≤t} (k_s·q_t) v_s."""
    k, v, q, _, _, _ = _inputs(2)
    ones = torch.ones(B, H, T, dtype=D64)
    scores = (q @ k.transpose(-1, -2)).tril()
    expected = scores @ v
    for chunk in (1, 5):  # dot-product gradients do not depend on the state: exact at any chunk size
        torch.testing.assert_close(
            _matrix(impl, "dot", k, v, q, ones, ones, chunk), expected, rtol=0, atol=1e-10
        )


def _textbook_gated_delta(k, v, q, alpha, beta):
    """Gated DeltaNet (Yang et al. 2024): S_t = α_t S_{t-1}(I − β_t k_t k_tᵀ) + β_t v_t k_tᵀ; o_t = S_t q_t."""
    state = torch.zeros(B, H, D, D, dtype=D64)
    eye = torch.eye(D, dtype=D64)
    outs = []
    for t in range(T):
        kt, vt = k[..., t, :], v[..., t, :]
        a, b = alpha[..., t, None, None], beta[..., t, None, None]
        state = (
            a * state @ (eye - b * kt[..., :, None] * kt[..., None, :])
            + b * vt[..., :, None] * kt[..., None, :]
        )
        outs.append((state @ q[..., t, :, None])[..., 0])
    return torch.stack(outs, dim=-2)


@pytest.mark.parametrize("impl", ["reference", "chunked"])
def test_deltanet_is_matrix_l2_gd(impl):
    """Eq. 65: with α = 1 the L2 objective under GD is DeltaNet's delta rule, exactly (C = 1)."""
    k, v, q, _, eta, _ = _inputs(3)
    ones = torch.ones(B, H, T, dtype=D64)
    expected = _textbook_gated_delta(k, v, q, ones, eta)
    torch.testing.assert_close(_matrix(impl, "l2", k, v, q, ones, eta), expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("impl", ["reference", "chunked"])
def test_gated_deltanet_is_matrix_l2_gd_with_alpha(impl):
    """Gated DeltaNet with (α, β) is our GD rule W ← αW − η∇ with η = αβ and values v/α.

    Our rule takes the gradient at W_{t-1}: αW − η(Wk − v)kᵀ = W(αI − η kkᵀ) + η v kᵀ; matching
    Gated DeltaNet's α W (I − β kkᵀ) + β v kᵀ term by term gives η = αβ and a value of v/α.
    """
    k, v, q, alpha, _, beta = _inputs(4)
    expected = _textbook_gated_delta(k, v, q, alpha, beta)
    got = _matrix(impl, "l2", k, v / alpha[..., None], q, alpha, alpha * beta)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)


def test_dgd_step_matches_eq57_closed_form():
    """Eq. 57 for one linear layer with a unit-norm input: W(αI − η x xᵀ) − η ∇_y ⊗ x."""
    g = torch.Generator().manual_seed(5)
    w = torch.randn(3, 4, dtype=D64, generator=g)
    x = core.normalize(torch.randn(4, dtype=D64, generator=g))
    err = torch.randn(3, dtype=D64, generator=g)
    alpha, eta = torch.tensor(0.9, dtype=D64), torch.tensor(0.3, dtype=D64)
    new, _ = core.step("dgd", [w], None, [x], [err], alpha, eta)
    expected = w @ (alpha * torch.eye(4, dtype=D64) - eta * torch.outer(x, x)) - eta * torch.outer(err, x)
    torch.testing.assert_close(new[0], expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("rule", ["gd", "dgd", "momentum"])
def test_decay_towards_the_initial_weights(rule):
    """With `base` W_0 an idle memory (η = 0) relaxes to W_0 as α^t; without it, to zero."""
    g = torch.Generator().manual_seed(6)
    w0, w = (torch.randn(3, 4, dtype=D64, generator=g) for _ in range(2))
    u, err = torch.randn(4, dtype=D64, generator=g), torch.randn(3, dtype=D64, generator=g)
    alpha, eta, beta = (
        torch.tensor(0.9, dtype=D64),
        torch.tensor(0.0, dtype=D64),
        torch.tensor(0.5, dtype=D64),
    )
    mom = [torch.zeros_like(w)]
    relative, absolute = [w], [w]
    for _ in range(5):
        relative, _ = core.step(rule, relative, mom, [u], [err], alpha, eta, beta, base=[w0])
        absolute, _ = core.step(rule, absolute, mom, [u], [err], alpha, eta, beta)
    torch.testing.assert_close(relative[0], w0 + 0.9**5 * (w - w0), rtol=0, atol=1e-12)
    torch.testing.assert_close(absolute[0], 0.9**5 * w, rtol=0, atol=1e-12)
    # A write is the same either way: the base only moves the point the memory decays to.
    once_rel, _ = core.step(
        rule,
        [w],
        mom,
        [u],
        [err],
        torch.tensor(1.0, dtype=D64),
        torch.tensor(0.3, dtype=D64),
        beta,
        base=[w0],
    )
    once_abs, _ = core.step(
        rule, [w - w0], mom, [u], [err], torch.tensor(1.0, dtype=D64), torch.tensor(0.3, dtype=D64), beta
    )
    torch.testing.assert_close(once_rel[0] - w0, once_abs[0], rtol=0, atol=1e-12)


def test_mlp_gradient_factors_match_autograd():
    """backward()'s g_i u_iᵀ is ∇W_i of ½‖M(k) − v‖² for the residual MLP (Eq. 89)."""
    spec = MemorySpec("mlp", D, D, hidden=7, depth=3, activation="silu")
    g = torch.Generator().manual_seed(6)
    weights = [w.to(D64).requires_grad_() for w in core.init_weights(spec, (), 0.5, g)]
    k, v = torch.randn(1, D, dtype=D64, generator=g), torch.randn(1, D, dtype=D64, generator=g)
    out, cache = core.forward(spec, weights, k)
    inputs, errors = core.backward(spec, weights, cache, core.objective_error("l2", out, v))
    auto = torch.autograd.grad(0.5 * ((out - v) ** 2).sum(), weights)
    for u, e, a in zip(inputs, errors, auto):
        torch.testing.assert_close(e.transpose(-1, -2) @ u, a, rtol=0, atol=1e-12)
