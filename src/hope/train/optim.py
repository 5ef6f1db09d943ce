"""Optimizer construction for the trainer: AdamW here; Nested-Learning optimizers come from `hope.optim`."""

import torch
from torch import nn

OPTIMIZERS = ("adamw", "muon", "m3", "dgd")


def build_optimizer(name: str, model: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    if name == "adamw":
        # Decay matrices only: decaying gains, biases and norms pulls them towards zero for no benefit.
        params = [p for p in model.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
        return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), eps=1e-8)
    try:
        from hope.optim import build_optimizer as build_nested
    except ImportError:
        raise ValueError(f"optimizer {name!r} needs hope.optim.build_optimizer, which this installation lacks") from None
    return build_nested(name, model, lr, weight_decay=weight_decay)
