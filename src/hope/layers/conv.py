"""Short causal depthwise convolution (window 4 in HOPE, Section 8.3) with a streaming tail."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ShortConv(nn.Module):
    """y_t = Σ_j w_j ⊙ x_{t−K+1+j}; the last K−1 inputs are carried in the state so pieces stream exactly."""

    def __init__(self, channels: int, size: int):
        super().__init__()
        self.size = size
        weight = torch.zeros(channels, 1, size)
        weight[..., -1] = 1.0  # starts as the identity; the model learns the mixing
        self.weight = nn.Parameter(weight)

    def init_state(self, batch_size: int, device=None, dtype=None) -> torch.Tensor:
        return torch.zeros(batch_size, self.size - 1, self.weight.shape[0], device=device, dtype=dtype)

    def forward(self, x: torch.Tensor, tail: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        if tail is None:
            tail = self.init_state(x.shape[0], x.device, x.dtype)
        full = torch.cat([tail.to(x.dtype), x], dim=1)
        if x.shape[1] == 1:  # a decoding step: a weighted sum of the window, which fuses with its neighbours
            y = (full * self.weight[:, 0].T.to(x.dtype)).sum(1, keepdim=True)
        else:
            y = F.conv1d(full.transpose(1, 2), self.weight.to(x.dtype), groups=x.shape[-1]).transpose(1, 2)
        return y, full[:, full.shape[1] - (self.size - 1) :]
