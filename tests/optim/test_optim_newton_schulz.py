import pytest
import torch

from hope.optim.newton_schulz import as_matrix, newton_schulz, orthogonalize

GEN = torch.Generator().manual_seed(0)


def _with_spectrum(m: int, n: int, condition: float) -> torch.Tensor:
    """A random m×n matrix whose singular values are log-spaced from 1 down to 1/condition."""
    U, _ = torch.linalg.qr(torch.randn(m, m, generator=GEN, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(n, n, generator=GEN, dtype=torch.float64))
    k = min(m, n)
    s = torch.logspace(0, -torch.log10(torch.tensor(condition)).item(), k, dtype=torch.float64)
    return U[:, :k] @ torch.diag(s) @ V[:, :k].T


CASES = {
    "random": lambda: torch.randn(64, 64, generator=GEN, dtype=torch.float64),
    "tall": lambda: torch.randn(96, 32, generator=GEN, dtype=torch.float64),
    "wide": lambda: torch.randn(16, 80, generator=GEN, dtype=torch.float64),
    "ill_conditioned": lambda: _with_spectrum(48, 48, 1e3),
    "ill_conditioned_rect": lambda: _with_spectrum(40, 24, 1e3),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_cubic_converges_to_exact_orthogonality(case):
    # Tolerance: 1e-10 on every singular value after 30 cubic steps (condition numbers up to 1e3).
    G = CASES[case]()
    s = torch.linalg.svdvals(newton_schulz(G, steps=30, coefficients="cubic"))
    assert (s - 1).abs().max() < 1e-10
    U, _, Vh = torch.linalg.svd(G, full_matrices=False)
    torch.testing.assert_close(newton_schulz(G, steps=30, coefficients="cubic"), U @ Vh, atol=1e-10, rtol=0)


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("steps", [5, 10])
def test_quintic_keeps_singular_directions_and_lands_in_its_band(case, steps):
    # Quintic NS maps each singular value σ₀ to p(σ₀) along the same singular vectors. Tolerance: after T
    # steps p(σ₀) ∈ [0.68, 1.21] for σ₀ ≥ 0.2·3.4^(1−T)·‖G‖_F, and p(σ₀) ∈ (0, 1.21] for the rest.
    G = CASES[case]()
    O = newton_schulz(G, steps=steps)
    U, S, Vh = torch.linalg.svd(G, full_matrices=False)
    images = O @ Vh.T  # column i = p(σ_i) u_i
    p = images.norm(dim=0)
    torch.testing.assert_close(images / p, U, atol=1e-8, rtol=0)
    large = S / torch.linalg.matrix_norm(G) >= 0.2 * 3.4 ** (1 - steps)
    assert large.any()
    assert p[large].min() >= 0.68 and p.max() <= 1.21 and p.min() > 0


def test_scale_invariance_and_transpose_equivariance():
    G = torch.randn(12, 20, generator=GEN, dtype=torch.float64)
    torch.testing.assert_close(newton_schulz(1e-4 * G), newton_schulz(G), atol=1e-12, rtol=0)
    torch.testing.assert_close(newton_schulz(G.T), newton_schulz(G).T, atol=1e-12, rtol=0)


def test_low_precision_input_is_orthogonalised_in_float32():
    G = torch.randn(32, 48, generator=GEN).to(torch.bfloat16)
    O = newton_schulz(G, steps=30, coefficients="cubic")
    assert O.dtype == torch.bfloat16
    assert (torch.linalg.svdvals(O.float()) - 1).abs().max() < 0.02  # bf16 rounding of the result only


def test_conv_kernels_are_orthogonalised_as_out_by_rest_matrices():
    W = torch.randn(6, 3, 2, 2, generator=GEN, dtype=torch.float64)
    O = orthogonalize(W, steps=30, coefficients="cubic")
    assert O.shape == W.shape
    M = as_matrix(O)  # 6 × 12: its rows are orthonormal
    torch.testing.assert_close(M @ M.T, torch.eye(6, dtype=torch.float64), atol=1e-10, rtol=0)


@pytest.mark.parametrize(
    "kwargs, field", [({"steps": 0}, "ns_steps"), ({"coefficients": "septic"}, "ns_coefficients")]
)
def test_bad_arguments_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        newton_schulz(torch.ones(3, 3), **kwargs)


def test_zero_matrix_maps_to_zero():
    assert torch.equal(newton_schulz(torch.zeros(4, 3)), torch.zeros(4, 3))
