"""Causal softmax attention with RoPE and a KV cache (Transformer++ and HOPE-Attention).

`forward` grows its cache by concatenation (any piece length); `decode_step` writes one token into a
preallocated cache of fixed size, so a decoding step has static shapes and can be replayed from a
CUDA graph (`hope.models.decode`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hope.checks import check_shape
from hope.config import ModelConfig


def rotary(x: torch.Tensor, pos: int | torch.Tensor, theta: float) -> torch.Tensor:
    """Rotary position embedding of x (B, H, T, d) for absolute positions pos … pos+T−1 (pos an int
    or a 0-d tensor on x's device)."""
    d = x.shape[-1]
    freqs = theta ** (-torch.arange(0, d, 2, device=x.device, dtype=torch.float32) / d)
    angles = (pos + torch.arange(x.shape[-2], device=x.device)).to(torch.float32)[:, None] * freqs
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

    # ---- one-token decoding on a fixed-size cache ----------------------------------------------
    def static_state(self, state: dict | None, batch_size: int, max_len: int, dtype: torch.dtype) -> dict:
        """`state` (None: empty) in a cache of `max_len` positions that `decode_step` fills in place."""
        weight = self.o_proj.weight
        shape = (batch_size, self.n_heads, max_len, self.head_dim)
        cache = {name: torch.zeros(shape, device=weight.device, dtype=dtype) for name in ("k", "v")}
        pos = 0 if state is None else state["pos"]
        if pos > max_len:
            raise ValueError(f"the state holds {pos} tokens, more than the cache's max_len={max_len}")
        if state is not None and state["k"] is not None:
            for name in ("k", "v"):
                check_shape(f"attention state[{name!r}]", state[name], (*shape[:2], pos, shape[-1]))
                cache[name][:, :, :pos] = state[name]
        return {"pos": torch.tensor(pos, device=weight.device), **cache}

    def decode_step(self, x: torch.Tensor, state: dict) -> torch.Tensor:
        """One token x (B, 1, D) against the whole cache. The keys not yet written are masked by a
        mask of fixed shape built on the device from the position: no host sync, no new shape."""
        b, t, d = x.shape
        k_cache, v_cache, pos = state["k"], state["v"], state["pos"]
        q, k, v = self.qkv(x).view(b, t, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = rotary(q, pos, self.theta), rotary(k, pos, self.theta)
        k_cache.index_copy_(2, pos.view(1), k.to(k_cache.dtype))
        v_cache.index_copy_(2, pos.view(1), v.to(v_cache.dtype))
        visible = (torch.arange(k_cache.shape[2], device=x.device) <= pos)[None]  # (1, max_len)
        y = F.scaled_dot_product_attention(q.to(k_cache.dtype), k_cache, v_cache, attn_mask=visible)
        state["pos"].add_(1)
        return self.o_proj(y.to(x.dtype).transpose(1, 2).reshape(b, t, d))
