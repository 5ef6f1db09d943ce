"""One block class for every architecture: pre-norm mixer then pre-norm channel memory.

hope:            self-referential Titans → CMS
hope_attention:  causal softmax attention → CMS
transformer:     causal softmax attention → SwiGLU         (Transformer++)
titans:          Titans LMM (momentum + decay) → SwiGLU
"""

from __future__ import annotations

import torch
from torch import nn

from hope.config import ModelConfig
from hope.layers.attention import CausalAttention
from hope.layers.cms import ContinuumMemory
from hope.layers.mlp import SwiGLU
from hope.layers.self_ref_titans import SelfReferentialTitans


class Block(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.norm_mixer = nn.RMSNorm(config.d_model, eps=config.norm_eps)
        self.norm_ffn = nn.RMSNorm(config.d_model, eps=config.norm_eps)
        self.mixer = SelfReferentialTitans(config) if config.uses_titans else CausalAttention(config)
        self.ffn = ContinuumMemory(config) if config.uses_cms else SwiGLU(config)

    def init_state(self, batch_size: int) -> dict:
        return {"mixer": self.mixer.init_state(batch_size), "ffn": self.ffn.init_state(batch_size)}

    def static_state(
        self,
        state: dict | None,
        batch_size: int,
        max_len: int,
        dtype: torch.dtype,
        read_dtype: torch.dtype | None = None,
    ) -> dict:
        """The block's state in the fixed buffers `decode_step` updates in place (`hope.models.decode`);
        `read_dtype`: the CMS reads copies of its fast weights in it (the mixers' memories stay float32)."""
        state = state if state is not None else {"mixer": None, "ffn": None}
        return {
            "mixer": self.mixer.static_state(state["mixer"], batch_size, max_len, dtype),
            "ffn": self.ffn.static_state(state["ffn"], batch_size, max_len, dtype, read_dtype),
        }

    def decode_step(self, x: torch.Tensor, state: dict, steps: tuple[bool, ...]) -> torch.Tensor:
        """One token x (B, 1, D) on static buffers: `forward` for one token, its state updated in place;
        `steps`: the CMS levels that step with it (`ffn.level_steps`)."""
        x = x + self.mixer.decode_step(self.norm_mixer(x), state["mixer"]).to(x.dtype)
        return x + self.ffn.decode_step(self.norm_ffn(x), state["ffn"], steps).to(x.dtype)

    def forward(self, x: torch.Tensor, state: dict | None):
        """x (B, T, D) → (output, new state); state None: the initial state."""
        if state is None:
            # Built here rather than by the caller: the initial memories are views of this block's
            # parameters, which FSDP2 gathers only for the block's own forward.
            state = self.init_state(x.shape[0])
        h, mixer_state = self.mixer(self.norm_mixer(x), state["mixer"])
        x = x + h.to(x.dtype)
        f, ffn_state = self.ffn(self.norm_ffn(x), state["ffn"])
        return x + f.to(x.dtype), {"mixer": mixer_state, "ffn": ffn_state}
