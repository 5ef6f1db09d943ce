"""Momentum as an associative memory of gradients, made more expressive (Eq. 48–50)."""

from __future__ import annotations

from typing import Any

import torch

from hope.checks import check_number
from hope.optim.base import MatrixOptimizer
from hope.optim.newton_schulz import as_matrix, gather, scatter_like


class DeltaMomentum(MatrixOptimizer):
    """Delta momentum (Eq. 48–49): m ← m (β I − δ ĝᵀĝ) + g;  W ← W (1 − η λ) − η m, with ĝ = g / ‖g‖_F.

    Plain momentum (Eq. 33) is a memory trained by one gradient step on a dot-product objective, a
    Hebbian write that ignores what is already stored. Eq. 49 uses the L2 objective instead, which adds
    the delta-rule term: before writing g, the memory erases what it holds along g's row space.
    Choices: (i) the key is the Frobenius-normalised gradient ĝ, so ĝᵀĝ has eigenvalues in [0, 1] and
    the transition β I − δ ĝᵀĝ is a contraction for δ ∈ [0, 1] whatever the gradient's scale (Eq. 49
    writes the raw gradient, whose tiny norm would make the erase term vanish); (ii) δ, the weight of
    the erase term, is 1 in Eq. 49 and a hyper-parameter here; (iii) P_i = I and the learning rate is
    applied to the output (m accumulates +g, the sign of torch's SGD), so the update equals Eq. 48 with
    m_paper = −η m for constant η and works with LR schedulers. Matrices only; the rest go to AdamW.
    """

    def __init__(
        self,
        params,
        lr: float = 0.02,
        momentum: float = 0.9,
        delta: float = 0.5,
        eps: float = 1e-12,
        weight_decay: float = 0.0,
        adamw_lr: float | None = 3e-3,
        adamw_betas: tuple[float, float] = (0.9, 0.95),
        adamw_eps: float = 1e-8,
        adamw_weight_decay: float = 0.0,
    ):
        check_number("momentum", momentum, 0.0, 1.0, hi_open=True)
        check_number("delta", delta, 0.0, 1.0)
        check_number("eps", eps, lo_open=True)
        defaults = dict(lr=lr, momentum=momentum, delta=delta, eps=eps, weight_decay=weight_decay)
        super().__init__(params, defaults, adamw_lr, adamw_betas, adamw_eps, adamw_weight_decay)

    def _update_matrix(
        self, p: torch.Tensor, grad: torch.Tensor, state: dict[str, Any], group: dict[str, Any]
    ) -> None:
        if not state:
            state["momentum_buffer"] = torch.zeros_like(p)
        m = state["momentum_buffer"]

        g = as_matrix(gather(grad))
        g_hat = g / (torch.linalg.matrix_norm(g) + group["eps"])
        # m ĝᵀĝ computed as (m ĝᵀ) ĝ: a rows×rows intermediate instead of cols×cols.
        erase = scatter_like(((as_matrix(gather(m)) @ g_hat.mT) @ g_hat).reshape(p.shape), m)
        m.mul_(group["momentum"]).sub_(erase, alpha=group["delta"]).add_(grad)
        p.mul_(1 - group["lr"] * group["weight_decay"])
        p.add_(m, alpha=-group["lr"])


class DeepMomentum(MatrixOptimizer):
    """Deep momentum gradient descent, DMGD (Eq. 50): W ← W − η m_φ(u), φ one GD step on ⟨m_φ(u), g⟩ per step.

    The momentum memory is a small MLP read with the current gradient: each row u_j of û (the
    gradient's rows, L2-normalised) is a key, and
        m_φ(û) = M + tanh(û A) B,    φ = (M ∈ ℝ^{r×c}, A ∈ ℝ^{c×h}, B ∈ ℝ^{h×c})
    for a parameter viewed as an r×c matrix. As for plain momentum (Eq. 33–34), the internal objective
    is the dot-product similarity between the memory's output and the gradient, L⁽²⁾ = −⟨m_φ(û), g⟩;
    one gradient step of step size 1/h on (A, B) and 1 on M, with forget gate β on M and B, gives
        M ← β M + g,    B ← β B + tanh(ûA)ᵀ g / h,    A ← A + ûᵀ[(g Bᵀ) ⊙ (1 − tanh²(ûA))] / h
    (gradients taken at the old φ), after which W is updated with the new memory's read-out m_φ(û).
    With B = 0 the memory is exactly heavy-ball momentum (Eq. 33); the MLP term adds
    Σ_s β^{t−s} K(û_t, û_s) g_s with the learned kernel K = tanh(ûA) tanh(û_sA)ᵀ / h, i.e. it recalls the
    past gradients whose rows resemble the current ones, the "long context" of Section 4.3.
    Our choices where Eq. 50 leaves them open: keys are the gradient's rows (so the memory is shared
    across rows), the value is the gradient itself, A starts as a fixed-seed N(0, 1) matrix (identical on
    every DDP rank) and B at 0, and the forget gate does not decay A (decaying the key map would erase
    the memory's ability to read). Matrices only; the rest go to AdamW.
    """

    def __init__(
        self,
        params,
        lr: float = 0.02,
        momentum: float = 0.9,
        hidden: int = 16,
        seed: int = 0,
        eps: float = 1e-12,
        weight_decay: float = 0.0,
        adamw_lr: float | None = 3e-3,
        adamw_betas: tuple[float, float] = (0.9, 0.95),
        adamw_eps: float = 1e-8,
        adamw_weight_decay: float = 0.0,
    ):
        check_number("momentum", momentum, 0.0, 1.0, hi_open=True)
        if not isinstance(hidden, int) or isinstance(hidden, bool) or hidden < 1:
            raise ValueError(f"hidden must be an integer >= 1, got {hidden!r}")
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ValueError(f"seed must be an integer, got {seed!r}")
        check_number("eps", eps, lo_open=True)
        defaults = dict(
            lr=lr, momentum=momentum, hidden=hidden, seed=seed, eps=eps, weight_decay=weight_decay
        )
        super().__init__(params, defaults, adamw_lr, adamw_betas, adamw_eps, adamw_weight_decay)

    def _update_matrix(
        self, p: torch.Tensor, grad: torch.Tensor, state: dict[str, Any], group: dict[str, Any]
    ) -> None:
        beta, h = group["momentum"], group["hidden"]
        cols = as_matrix(p).shape[1]
        if not state:
            generator = torch.Generator().manual_seed(group["seed"])
            state["M"] = torch.zeros_like(p)
            state["A"] = torch.randn(cols, h, generator=generator, dtype=torch.float64).to(p.device, p.dtype)
            state["B"] = torch.zeros(h, cols, device=p.device, dtype=p.dtype)
        A, B = state["A"], state["B"]
        g = as_matrix(gather(grad))
        u_hat = g / (torch.linalg.vector_norm(g, dim=1, keepdim=True) + group["eps"])
        H = torch.tanh(u_hat @ A)
        grad_A = u_hat.mT @ ((g @ B.mT) * (1 - H * H)) / h
        B.mul_(beta).add_(H.mT @ g, alpha=1 / h)
        A.add_(grad_A)
        state["M"].mul_(beta).add_(grad)
        read_out = scatter_like((torch.tanh(u_hat @ A) @ B).reshape(p.shape), p)
        p.mul_(1 - group["lr"] * group["weight_decay"])
        p.sub_(state["M"] + read_out, alpha=group["lr"])
