"""SwiGLU MLP (Transformer++ and the Titans baseline's channel mixer)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hope.config import ModelConfig


def swiglu_hidden(d_model: int, mult: float) -> int:
    """Hidden width rounded up to a multiple of 64 (kernel-friendly)."""
    return 64 * ((round(mult * d_model) + 63) // 64)


class SwiGLU(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        hidden = swiglu_hidden(config.d_model, config.mlp_mult)
        self.gate_up = nn.Linear(config.d_model, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, config.d_model, bias=False)

    def init_state(self, batch_size: int) -> None:
        return None

    def forward(self, x: torch.Tensor, state=None):
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up), None

    def static_state(self, state, batch_size: int, max_len: int, dtype: torch.dtype, read_dtype=None) -> None:
        return None

    def level_steps(self, pos: int) -> tuple[bool, ...]:
        return ()

    def decode_step(self, x: torch.Tensor, state=None, steps: tuple[bool, ...] = ()) -> torch.Tensor:
        return self(x)[0]
