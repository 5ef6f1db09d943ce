"""Muon (Eq. 42, 52): heavy-ball momentum whose output is orthogonalised by Newton–Schulz."""

from __future__ import annotations

import math
from typing import Any

import torch

from hope.checks import check_choice, check_number
from hope.optim.base import MatrixOptimizer
from hope.optim.newton_schulz import as_matrix, check_ns_args, orthogonalize


class Muon(MatrixOptimizer):
    """Muon baseline (Eq. 42): m ← μ m + g;  W ← W (1 − η λ) − η s · NewtonSchulz_T(g + μ m or m).

    ``nesterov=True`` orthogonalises g + μ m (the usual Muon choice), otherwise m itself as in Eq. 42.
    The shape factor s makes the step size comparable across matrix shapes:
    ``scale="rms"`` uses s = 0.2 √max(rows, cols), which gives the update the root-mean-square of an
    AdamW step, so AdamW's learning rate and weight decay carry over; ``scale="spectral"`` uses
    s = √max(1, rows/cols) (the original Muon, with learning rates around 0.02).
    Embeddings, norms, biases and other 1-D parameters go to AdamW; ≥3-D weights are orthogonalised as
    (shape[0], rest) matrices. DDP needs nothing extra; under FSDP2, Newton–Schulz gathers each full
    matrix (see `hope.optim.newton_schulz.apply_to_full`).
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_steps: int = 5,
        weight_decay: float = 0.0,
        scale: str = "rms",
        ns_coefficients: str = "quintic",
        adamw_lr: float | None = None,
        adamw_betas: tuple[float, float] = (0.9, 0.95),
        adamw_eps: float = 1e-8,
        adamw_weight_decay: float = 0.0,
    ):
        check_number("momentum", momentum, 0.0, 1.0, hi_open=True)
        check_choice("nesterov", nesterov, (True, False))
        check_ns_args(ns_steps, ns_coefficients)
        check_choice("scale", scale, ("rms", "spectral"))
        defaults = dict(
            lr=lr,
            momentum=momentum,
            nesterov=nesterov,
            ns_steps=ns_steps,
            weight_decay=weight_decay,
            scale=scale,
            ns_coefficients=ns_coefficients,
        )
        super().__init__(params, defaults, adamw_lr, adamw_betas, adamw_eps, adamw_weight_decay)

    def _update_matrix(
        self, p: torch.Tensor, grad: torch.Tensor, state: dict[str, Any], group: dict[str, Any]
    ) -> None:
        mu = group["momentum"]
        if not state:
            state["momentum_buffer"] = torch.zeros_like(p)
        m = state["momentum_buffer"]
        m.mul_(mu).add_(grad)
        u = grad.add(m, alpha=mu) if group["nesterov"] else m
        O = orthogonalize(u, group["ns_steps"], group["ns_coefficients"])
        rows, cols = as_matrix(p).shape
        s = 0.2 * math.sqrt(max(rows, cols)) if group["scale"] == "rms" else math.sqrt(max(1.0, rows / cols))
        p.mul_(1 - group["lr"] * group["weight_decay"])
        p.add_(O, alpha=-group["lr"] * s)
