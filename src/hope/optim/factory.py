"""`build_optimizer`: one entry point from an optimizer name and hyper-parameters (used by `hope train`)."""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from hope.optim.base import check_adam, split_params
from hope.optim.dgd import DGD
from hope.optim.m3 import M3
from hope.optim.momentum import DeepMomentum, DeltaMomentum
from hope.optim.muon import Muon


def adamw(
    model: nn.Module,
    lr: float = 3e-3,
    weight_decay: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.95),
    eps: float = 1e-8,
) -> torch.optim.AdamW:
    """torch AdamW; weight decay on matrices only (embeddings, norms and biases are not decayed)."""
    check_adam("", lr, betas, eps, weight_decay)
    matrices, others = split_params(model)
    groups = [{"params": matrices, "weight_decay": weight_decay}, {"params": others, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, betas=tuple(betas), eps=eps)


OPTIMIZERS = {
    "adamw": adamw,
    "muon": Muon,
    "m3": M3,
    "dgd": DGD,
    "delta_momentum": DeltaMomentum,
    "deep_momentum": DeepMomentum,
}


def _defaults(builder) -> dict[str, Any]:
    signature = inspect.signature(builder)
    return {k: v.default for k, v in signature.parameters.items() if k not in ("self", "params", "model")}


# Every optimizer's hyper-parameters and their defaults, read from the constructors so they cannot drift
# (``lr`` is the suggested default; `build_optimizer` always takes it explicitly).
OPTIMIZER_DEFAULTS: dict[str, dict[str, Any]] = {
    name: _defaults(builder) for name, builder in OPTIMIZERS.items()
}


def build_optimizer(
    name: str, model: nn.Module, lr: float, weight_decay: float = 0.0, **hparams: Any
) -> torch.optim.Optimizer:
    """The optimizer `name` for all trainable parameters of model; matrices by its rule, the rest by AdamW."""
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer name must be one of {sorted(OPTIMIZERS)}, got {name!r}")
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    accepted = sorted(set(OPTIMIZER_DEFAULTS[name]) - {"lr", "weight_decay"})
    unknown = sorted(set(hparams) - set(accepted))
    if unknown:
        raise ValueError(f"unknown hyper-parameter(s) {unknown} for optimizer {name!r}; accepted: {accepted}")
    return OPTIMIZERS[name](model, lr=lr, weight_decay=weight_decay, **hparams)
