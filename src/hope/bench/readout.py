"""MAD's compression read-out: a model seen only through its final hidden state."""

from __future__ import annotations

import torch


class BottleneckReadout(torch.nn.Module):
    """MAD's compression read-out (its auto-encoder backbone): ``model`` reads the P prompt tokens and
    only its final hidden state h, at the compression token, reaches a non-expanding MLP decoder; token i
    of the reconstruction is ``decoder(h + sincos(i))``. Every architecture goes through the same
    one-vector bottleneck, so attention cannot copy the input from its cache.

    Called like ``model`` on :func:`training_pair`'s layout for compression (the prompt, then P - 1
    teacher-forced tokens, which it ignores); the P reconstruction logits sit at the target positions
    P - 1 ... 2P - 2 and the others are zero."""

    def __init__(self, model: torch.nn.Module, prompt_length: int):
        super().__init__()
        d, vocab = model.config.d_model, model.config.vocab_size
        self.model, self.config, self.prompt_length = model, model.config, prompt_length
        self.decoder = torch.nn.Sequential(
            torch.nn.RMSNorm(d),
            torch.nn.Linear(d, d),
            torch.nn.GELU(),
            torch.nn.RMSNorm(d),
            torch.nn.Linear(d, d),
            torch.nn.GELU(),
            torch.nn.RMSNorm(d),
            torch.nn.Linear(d, vocab),
        )
        i = torch.arange(prompt_length, dtype=torch.float32)[:, None]
        freq = 10000.0 ** (-torch.arange(0, d, 2, dtype=torch.float32) / d)
        angle = i * freq
        self.register_buffer(
            "positions", torch.cat([angle.sin(), angle.cos()], dim=-1)[:, :d], persistent=False
        )

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def encode(self, prompt: torch.Tensor) -> torch.Tensor:
        """h: the model's final (normalised) hidden state after the whole prompt, (B, d)."""
        seen = []
        hook = self.model.norm.register_forward_hook(lambda module, args, out: seen.append(out))
        try:
            self.model(prompt)
        finally:
            hook.remove()
        return seen[-1][:, -1]

    def forward(self, ids: torch.Tensor, state: dict | None = None) -> tuple[torch.Tensor, None]:
        p = self.prompt_length
        if state is not None or ids.shape[1] != 2 * p - 1:
            raise ValueError(
                f"BottleneckReadout takes one whole compression pair of {2 * p - 1} tokens (prompt of {p}); "
                f"got {ids.shape[1]} tokens{' and a state' if state is not None else ''}"
            )
        h = self.encode(ids[:, :p])
        reconstruction = self.decoder(h[:, None, :] + self.positions.to(h.dtype))
        return torch.cat(
            [reconstruction.new_zeros(ids.shape[0], p - 1, reconstruction.shape[-1]), reconstruction], 1
        ), None
