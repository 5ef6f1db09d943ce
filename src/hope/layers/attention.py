"""Causal softmax attention with RoPE and a KV cache (Transformer++ and HOPE-Attention)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hope.config import ModelConfig


def rotary(x: torch.Tensor, pos: int, theta: float) -> torch.Tensor:
    """Rotary position embedding of x (B, H, T, d) for absolute positions pos … pos+T−1."""
    d = x.shape[-1]
    freqs = theta ** (-torch.arange(0, d, 2, device=x.device, dtype=torch.float32) / d)
    angles = torch.arange(pos, pos + x.shape[-2], device=x.device, dtype=torch.float32)[:, None] * freqs
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2)


class CausalAttention(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        d = config.d_model
        self.n_heads, self.head_dim, self.theta = config.n_heads, config.head_dim, config.rope_theta
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.o_proj = nn.Linear(d, d, bias=False)

    def init_state(self, batch_size: int) -> dict:
        return {"pos": 0, "k": None, "v": None}

    def forward(self, x: torch.Tensor, state: dict | None = None):
        b, t, d = x.shape
        pos = 0 if state is None else state["pos"]
        q, k, v = self.qkv(x).view(b, t, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = rotary(q, pos, self.theta), rotary(k, pos, self.theta)
        if state is not None and state["k"] is not None:
            k = torch.cat([state["k"].to(k.dtype), k], dim=2)
            v = torch.cat([state["v"].to(v.dtype), v], dim=2)
        if k.shape[2] == t:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:  # queries at pos … pos+t−1 see every key up to their own position
            allowed = torch.ones(t, k.shape[2], dtype=torch.bool, device=x.device).tril(k.shape[2] - t)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        y = self.o_proj(y.transpose(1, 2).reshape(b, t, d))
        return y, {"pos": pos + t, "k": k, "v": v}
