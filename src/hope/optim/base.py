"""Shared plumbing: matrix parameters get the optimizer's own rule, everything else AdamW.

Muon-style optimizers are only defined for matrices, so — as Muon users expect — embeddings, norms,
biases and other 1-D parameters are stepped by AdamW inside the same `torch.optim.Optimizer`. Each
parameter group carries ``use_adamw``; AdamW groups have their own ``lr`` (so LR schedulers scale both
kinds of group), ``weight_decay``, ``adamw_betas`` and ``adamw_eps``.

How parameters are routed when a group does not say ``use_adamw`` itself:
- given an ``nn.Module``: weights of ``nn.Embedding`` modules (and any parameter tied to one, e.g. a tied
  LM head) and every parameter with fewer than 2 dimensions go to AdamW; the rest are matrices;
- given tensors or groups: parameters with fewer than 2 dimensions go to AdamW. An embedding cannot be
  recognised from a bare tensor, so pass it in a group with ``use_adamw=True``.
Matrices with more than 2 dimensions (conv kernels, stacked heads) are treated as
``(shape[0], prod(shape[1:]))`` matrices (`hope.optim.newton_schulz.as_matrix`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from hope.checks import check_number


def check_adam(
    prefix: str, lr: float | None, betas: tuple[float, float], eps: float, weight_decay: float
) -> None:
    """AdamW's hyper-parameters, named with ``prefix`` (``""`` or ``"adamw_"``); ``lr`` None: not given."""
    if lr is not None:
        check_number(f"{prefix}lr", lr)
    check_number(f"{prefix}weight_decay", weight_decay)
    if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
        raise ValueError(f"{prefix}betas must be a pair (beta1, beta2), got {betas!r}")
    for i, beta in enumerate(betas):
        check_number(f"{prefix}betas[{i}]", beta, 0.0, 1.0, hi_open=True)
    check_number(f"{prefix}eps", eps, lo_open=True)


def embedding_weights(model: nn.Module) -> set[int]:
    """ids of the weights of every nn.Embedding in model (a tied LM head shares one of these)."""
    return {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}


def split_params(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(matrix params, AdamW params) of a model: embeddings and <2-D params go to AdamW."""
    embeddings = embedding_weights(model)
    matrices, others = [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        (others if p.ndim < 2 or id(p) in embeddings else matrices).append(p)
    return matrices, others


def _route(params) -> list[dict[str, Any]]:
    """Turn a module, an iterable of tensors or of groups into groups that all carry ``use_adamw``."""
    if isinstance(params, nn.Module):
        matrices, others = split_params(params)
        return [
            g
            for g in ({"params": matrices, "use_adamw": False}, {"params": others, "use_adamw": True})
            if g["params"]
        ]
    params = list(params)
    if not params:
        raise ValueError("params must contain at least one parameter, got an empty list")
    groups = params if isinstance(params[0], dict) else [{"params": params}]
    routed = []
    for group in groups:
        group = dict(group)
        tensors = [group["params"]] if isinstance(group["params"], torch.Tensor) else list(group["params"])
        if "use_adamw" in group:
            routed.append({**group, "params": tensors})
            continue
        matrices = [p for p in tensors if p.ndim >= 2]
        others = [p for p in tensors if p.ndim < 2]
        routed += [
            {**group, "params": ps, "use_adamw": flag}
            for ps, flag in ((matrices, False), (others, True))
            if ps
        ]
    return routed


class MatrixOptimizer(torch.optim.Optimizer):
    """Base class: `_update_matrix` for matrix groups, AdamW (decoupled weight decay) for the others."""

    def __init__(
        self,
        params,
        defaults: dict[str, Any],
        adamw_lr: float | None,
        adamw_betas: tuple[float, float],
        adamw_eps: float,
        adamw_weight_decay: float,
    ):
        check_number("lr", defaults["lr"])
        check_number("weight_decay", defaults["weight_decay"])
        check_adam("adamw_", adamw_lr, adamw_betas, adamw_eps, adamw_weight_decay)
        defaults = {**defaults, "use_adamw": False, "adamw_betas": tuple(adamw_betas), "adamw_eps": adamw_eps}
        groups = _route(params)
        for group in groups:
            # A group's own lr / weight_decay wins; otherwise AdamW groups take the adamw_* values.
            if group["use_adamw"]:
                group.setdefault("lr", defaults["lr"] if adamw_lr is None else adamw_lr)
                group.setdefault("weight_decay", adamw_weight_decay)
        super().__init__(groups, defaults)

    def _update_matrix(
        self, p: torch.Tensor, grad: torch.Tensor, state: dict[str, Any], group: dict[str, Any]
    ) -> None:
        raise NotImplementedError

    def _begin_step(self) -> None:
        """Hook run once per step before any parameter is updated (DGD reduces its input statistics here)."""

    @torch.no_grad()
    def step(self, closure=None):
        """One optimisation step over every group; returns the closure's loss if one is given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._begin_step()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise ValueError("sparse gradients are not supported; use nn.Embedding(sparse=False)")
                state = self.state[p]
                if group["use_adamw"]:
                    self._update_adamw(p, p.grad, state, group)
                else:
                    self._update_matrix(p, p.grad, state, group)
        return loss

    @staticmethod
    def _update_adamw(
        p: torch.Tensor, grad: torch.Tensor, state: dict[str, Any], group: dict[str, Any]
    ) -> None:
        """AdamW (Eq. 105 with bias correction and decoupled weight decay) for non-matrix parameters."""
        beta1, beta2 = group["adamw_betas"]
        if not state:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(p)
            state["exp_avg_sq"] = torch.zeros_like(p)
        state["step"] += 1
        t = state["step"]
        state["exp_avg"].lerp_(grad, 1 - beta1)
        state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        denom = (state["exp_avg_sq"] / (1 - beta2**t)).sqrt_().add_(group["adamw_eps"])
        p.mul_(1 - group["lr"] * group["weight_decay"])
        p.addcdiv_(state["exp_avg"], denom, value=-group["lr"] / (1 - beta1**t))
