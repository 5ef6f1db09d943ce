"""M3, Multi-scale Momentum Muon (Algorithm 1): fast and slow orthogonalised momenta over a variance normaliser."""

from __future__ import annotations

from typing import Any

import torch

from hope.checks import check_choice, check_number
from hope.optim.base import MatrixOptimizer
from hope.optim.newton_schulz import check_ns_args, orthogonalize


class M3(MatrixOptimizer):
    """Multi-scale Momentum Muon (Algorithm 1): θ ← θ − η (O¹ + α O²) / (√V + ε).

    Per matrix parameter, with g_t its gradient at step t = 1, 2, …:

        M¹_t = β₁ M¹_{t−1} + (1 − β₁) g_t          fast momentum, every step
        O¹_t = NewtonSchulz_T(M¹_t)
        V_t  = β₂ V_{t−1} + (1 − β₂) g_t²           variance (Adam's second moment, Eq. 102–105)
        θ_t  = θ_{t−1} (1 − η λ) − η (O¹_t + α O²) / (√V̂_t + ε),   V̂_t = V_t / (1 − β₂ᵗ)
        at t = k f (end of chunk k):  M² ← β₃ M² + (1 − β₃) Σ_{i=(k−1)f+1}^{kf} g_i,   O² ← NewtonSchulz_T(M²)

    O² is 0 during the first f steps and is then held fixed for the f steps of the next chunk, so
    Newton–Schulz runs on M² once every f steps. λ is decoupled weight decay (not in Algorithm 1).
    Parameters with fewer than 2 dimensions and embeddings go to AdamW (see `hope.optim.base`);
    ≥3-D weights are orthogonalised as (shape[0], rest) matrices, V stays elementwise.

    Where Algorithm 1 is ambiguous, and what this class does:

    1. *Sum or EMA for M¹, V and M².* Algorithm 1 writes sums (M¹ ← M¹ + β₁ g, V ← V + β₂ g²,
       M² ← M² + β₃ Σ g) while its own notes call them EMAs. Newton–Schulz is scale invariant, so
       under the literal sums β₁ and β₃ would have no effect at all (O¹ = NS(Σ all g)) and β₂ would only
       rescale the learning rate — yet the hyper-parameter table calls β₁, β₂, β₃ decay rates and
       tunes β₃. We take the EMA reading (``reading="ema"``, where every β is a decay, and V gets
       Adam's bias correction because Algorithm 1 derives V from Adam). ``reading="literal"`` runs the
       sums exactly as written: no decay, no bias correction.
    2. *Which gradients "β₃ Σ_{i=(k−1)f}^{kf} g_i" covers.* The bounds include f + 1 indices; we
       use the f gradients of the chunk that just ended, ((k−1)f, kf], so each gradient is counted once.
    3. *Refreshed or accumulated slow momentum.* The slow momentum is accumulated across chunks
       with decay β₃ per chunk (EMA over chunk sums). The "refreshed" reading — M² replaced by the
       last chunk's sum — is ``reading="ema"`` with β₃ = 0.
    4. *When the new O² takes effect.* Algorithm 1 refreshes M² at the top of the outer loop, before
       the next chunk's first gradient: the chunk ending at step kf (its gradient g_kf included) feeds
       the update of steps kf+1 … (k+1)f. During the first chunk O² = NS(0) = 0.
    5. *Newton–Schulz.* Quintic coefficients (3.4445, −4.7750, 2.0315) by default, ``ns_coefficients=
       "cubic"`` for the X(3I − XᵀX)/2 form of Eq. 44; ``ns_steps`` = T.
    6. *What V normalises.* Algorithm 1 accumulates V from g² but divides the orthogonalised O¹ + αO²
       by √V. O is scale free (singular values ≈ 1) while √V has the gradient's scale, so the step is
       η·O_ij/|g_ij| elementwise: unbounded where a gradient entry is small relative to its row/column,
       and not comparable with Muon's or AdamW's learning rate. We keep Algorithm 1 as written by default
       (``variance="gradient"``); it needs a small η (on a least-squares toy it diverges at η = 1e-3 and
       barely moves at 3e-5). ``variance="orthogonalized"`` accumulates V from (O¹)² instead (as AdaMuon
       does), so O/√V is bounded like Adam's m/√v and η behaves like an AdamW learning rate.

    Distributed: under DDP every rank holds the same all-reduced gradients and runs the same
    deterministic update — nothing extra is needed. Under FSDP2 the momenta are DTensor shards like
    their parameters; all elementwise work stays per shard, and each Newton–Schulz call gathers the full
    matrix with ``full_tensor()``, orthogonalises it on every rank and keeps the local shard, because
    orthogonalising shards separately would be a different (block-wise, world-size-dependent) update.
    """

    def __init__(
        self,
        params,
        lr: float = 1e-4,
        betas: tuple[float, float, float] = (0.9, 0.999, 0.9),
        alpha: float = 0.5,
        frequency: int = 10,
        ns_steps: int = 5,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        reading: str = "ema",
        variance: str = "gradient",
        ns_coefficients: str = "quintic",
        adamw_lr: float | None = 3e-3,
        adamw_betas: tuple[float, float] = (0.9, 0.95),
        adamw_eps: float = 1e-8,
        adamw_weight_decay: float = 0.0,
    ):
        if not (isinstance(betas, (tuple, list)) and len(betas) == 3):
            raise ValueError(f"betas must be a triple (beta1, beta2, beta3), got {betas!r}")
        for i, beta in enumerate(betas):
            check_number(f"betas[{i}]", beta, 0.0, 1.0, hi_open=True)
        if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or alpha < 0:
            raise ValueError(f"alpha must be a float >= 0, got {alpha!r}")
        if not isinstance(frequency, int) or isinstance(frequency, bool) or frequency < 1:
            raise ValueError(f"frequency must be an integer >= 1, got {frequency!r}")
        check_ns_args(ns_steps, ns_coefficients)
        check_number("eps", eps, lo_open=True)
        check_choice("reading", reading, ("ema", "literal"))
        check_choice("variance", variance, ("gradient", "orthogonalized"))
        defaults = dict(
            lr=lr,
            betas=tuple(betas),
            alpha=alpha,
            frequency=frequency,
            ns_steps=ns_steps,
            eps=eps,
            weight_decay=weight_decay,
            reading=reading,
            variance=variance,
            ns_coefficients=ns_coefficients,
        )
        super().__init__(params, defaults, adamw_lr, adamw_betas, adamw_eps, adamw_weight_decay)

    def _update_matrix(
        self, p: torch.Tensor, grad: torch.Tensor, state: dict[str, Any], group: dict[str, Any]
    ) -> None:
        beta1, beta2, beta3 = group["betas"]
        ema = group["reading"] == "ema"
        if not state:
            state["step"] = 0
            for name in ("M1", "V", "M2", "O2", "chunk_sum"):
                state[name] = torch.zeros_like(p)
        state["step"] += 1
        t = state["step"]
        M1, V, chunk_sum = state["M1"], state["V"], state["chunk_sum"]
        if ema:
            M1.lerp_(grad, 1 - beta1)
        else:
            M1.add_(grad, alpha=beta1)
        chunk_sum.add_(grad)
        O1 = orthogonalize(M1, group["ns_steps"], group["ns_coefficients"])

        x = grad if group["variance"] == "gradient" else O1
        if ema:
            V.mul_(beta2).addcmul_(x, x, value=1 - beta2)
            V_hat = V / (1 - beta2**t)
        else:
            V.addcmul_(x, x, value=beta2)
            V_hat = V
        direction = O1.add_(state["O2"], alpha=group["alpha"])
        p.mul_(1 - group["lr"] * group["weight_decay"])
        p.addcdiv_(direction, V_hat.sqrt().add_(group["eps"]), value=-group["lr"])

        if t % group["frequency"] == 0:  # end of a chunk: refresh the slow memory for the next f steps
            if ema:
                state["M2"].lerp_(chunk_sum, 1 - beta3)
            else:
                state["M2"].add_(chunk_sum, alpha=beta3)
            state["O2"].copy_(orthogonalize(state["M2"], group["ns_steps"], group["ns_coefficients"]))
            chunk_sum.zero_()
