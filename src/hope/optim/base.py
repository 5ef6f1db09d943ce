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

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn


def check_lr(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite float >= 0, got {value!r}")


def check_unit_interval(name: str, value: float, closed: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = ok and (0.0 <= value <= 1.0 if closed else 0.0 <= value < 1.0)
    if not ok:
        raise ValueError(f"{name} must be a float in [0, 1{']' if closed else ')'}, got {value!r}")


def check_positive(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
        raise ValueError(f"{name} must be a float > 0, got {value!r}")


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> None:
    choices = list(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


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
        return [g for g in ({"params": matrices, "use_adamw": False}, {"params": others, "use_adamw": True}) if g["params"]]
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
        routed += [{**group, "params": ps, "use_adamw": flag} for ps, flag in ((matrices, False), (others, True)) if ps]
    return routed


class MatrixOptimizer(torch.optim.Optimizer):
    """Base class: `_update_matrix` for matrix groups, AdamW (decoupled weight decay) for the others."""

    def __init__(self, params, defaults: dict[str, Any], adamw_lr: float | None, adamw_betas: tuple[float, float],
                 adamw_eps: float, adamw_weight_decay: float):
        check_lr("lr", defaults["lr"])
        check_lr("weight_decay", defaults["weight_decay"])
        if adamw_lr is not None:
            check_lr("adamw_lr", adamw_lr)
        if not (isinstance(adamw_betas, (tuple, list)) and len(adamw_betas) == 2):
            raise ValueError(f"adamw_betas must be a pair (beta1, beta2), got {adamw_betas!r}")
        check_unit_interval("adamw_betas[0]", adamw_betas[0])
        check_unit_interval("adamw_betas[1]", adamw_betas[1])
        check_positive("adamw_eps", adamw_eps)
        check_lr("adamw_weight_decay", adamw_weight_decay)
        defaults = {**defaults, "use_adamw": False, "adamw_betas": tuple(adamw_betas), "adamw_eps": adamw_eps}
        groups = _route(params)
        for group in groups:
            # A group's own lr / weight_decay wins; otherwise AdamW groups take the adamw_* values.
            if group["use_adamw"]:
                group.setdefault("lr", defaults["lr"] if adamw_lr is None else adamw_lr)
                group.setdefault("weight_decay", adamw_weight_decay)
        super().__init__(groups, defaults)

    def _update_matrix(self, p: torch.Tensor, grad: torch.Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
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
    def _update_adamw(p: torch.Tensor, grad: torch.Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
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
