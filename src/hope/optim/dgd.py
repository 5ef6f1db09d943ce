"""Delta gradient descent (Eq. 56–57) for the linear layers of a model, from inputs captured by hooks."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from hope.optim.base import MatrixOptimizer, embedding_weights
from hope.optim.newton_schulz import gather, scatter_like


class DGD(MatrixOptimizer):
    """DGD (Eq. 57): W ← W (I − η′ C) − η′ ∇_W L,  η′ = η / (1 + η),  C = mean over rows of x̂ x̂ᵀ.

    Eq. 56 replaces gradient descent's implicit dot-product objective (Eq. 8–9) by an L2 regression of
    the layer's output error onto its input; with normalised inputs, Sherman–Morrison gives the closed
    form of Eq. 57 — a gradient step plus an input-dependent decay that forgets what the layer maps
    from the directions it is seeing now. Applied to every ``nn.Linear`` of ``model``:
    - the inputs x of each layer are captured by a forward pre-hook (only in training mode with grad
      enabled) and L2-normalised per row, x̂ = x / ‖x‖ (the normalised form of Appendix C);
    - a batch is reduced by averaging: C = (1/N) Σₙ x̂ₙ x̂ₙᵀ over all N = batch × time rows seen since the
      last step (gradient-accumulation micro-batches and activation-checkpoint recomputations included,
      which leaves the mean unchanged). C is PSD with trace 1, so I − η′C is a contraction. Summing
      instead would multiply the decay by N and break it for any realistic batch;
    - Σₙ ∇_{yₙ} L ⊗ xₙ is the ordinary weight gradient, so the gradient term is ``p.grad`` and needs no
      backward hook.
    Everything else (biases, norms, embeddings — including a Linear weight tied to an embedding — and
    non-Linear matrices) goes to AdamW (see `hope.optim.base`). Under DDP the statistics are all-reduced
    (sum of x̂x̂ᵀ and of N) at each step so every rank applies the same decay; under FSDP2 the decay
    gathers each full weight (`full_tensor()`), as the product W C mixes all of W's columns.
    Statistics are cleared at every ``step`` and ``zero_grad``; ``remove_hooks()`` detaches the hooks.
    """

    def __init__(
        self,
        model: nn.Module,
        lr: float = 0.1,
        weight_decay: float = 0.0,
        adamw_lr: float | None = 3e-3,
        adamw_betas: tuple[float, float] = (0.9, 0.95),
        adamw_eps: float = 1e-8,
        adamw_weight_decay: float = 0.0,
    ):
        if not isinstance(model, nn.Module):
            raise ValueError(
                f"model must be a torch.nn.Module (DGD hooks its nn.Linear layers), got {type(model).__name__}"
            )
        embeddings = embedding_weights(model)
        linears = [
            m
            for m in model.modules()
            if isinstance(m, nn.Linear) and m.weight.requires_grad and id(m.weight) not in embeddings
        ]
        linear_weights = {id(m.weight) for m in linears}
        others = [p for p in model.parameters() if p.requires_grad and id(p) not in linear_weights]
        groups = [
            {"params": [m.weight for m in linears], "use_adamw": False},
            {"params": others, "use_adamw": True},
        ]
        defaults = dict(lr=lr, weight_decay=weight_decay)
        super().__init__(
            [g for g in groups if g["params"]], defaults, adamw_lr, adamw_betas, adamw_eps, adamw_weight_decay
        )
        self._stats: dict[torch.Tensor, list] = {}  # weight -> [Σ x̂x̂ᵀ, N], transient between forward and step
        self._handles = [m.register_forward_pre_hook(self._capture_hook(m.weight)) for m in linears]

    def _capture_hook(self, weight: nn.Parameter):
        def hook(module: nn.Module, inputs: tuple) -> None:
            if not (module.training and torch.is_grad_enabled()):
                return
            x = inputs[0].detach()
            x = x.reshape(-1, x.shape[-1]).to(torch.promote_types(x.dtype, torch.float32))
            x_hat = x / (torch.linalg.vector_norm(x, dim=1, keepdim=True) + 1e-12)
            gram, n = x_hat.mT @ x_hat, x_hat.shape[0]
            if weight in self._stats:
                self._stats[weight][0] += gram
                self._stats[weight][1] += n
            else:
                self._stats[weight] = [gram, n]

        return hook

    def remove_hooks(self) -> None:
        """Detach the input-capturing hooks from the model."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear gradients and the captured input statistics."""
        super().zero_grad(set_to_none)
        self._stats.clear()

    def _begin_step(self) -> None:
        """All-reduce the input statistics across ranks so every rank applies the same decay."""
        if not (
            self._stats
            and torch.distributed.is_available()
            and torch.distributed.is_initialized()
            and torch.distributed.get_world_size() > 1
        ):
            return
        weights = list(self._stats)  # every rank hooks the same layers in the same order
        flat = torch.cat(
            [
                torch.cat([self._stats[w][0].flatten(), self._stats[w][0].new_tensor([self._stats[w][1]])])
                for w in weights
            ]
        )
        torch.distributed.all_reduce(flat)
        offset = 0
        for w in weights:
            numel = self._stats[w][0].numel()
            self._stats[w] = [
                flat[offset : offset + numel].view_as(self._stats[w][0]),
                flat[offset + numel].item(),
            ]
            offset += numel + 1

    @torch.no_grad()
    def step(self, closure=None):
        loss = super().step(closure)
        self._stats.clear()
        return loss

    def _update_matrix(
        self, p: torch.Tensor, grad: torch.Tensor, state: dict[str, Any], group: dict[str, Any]
    ) -> None:
        eta = group["lr"] / (1 + group["lr"])
        decay = None
        if p in self._stats:
            gram, n = self._stats[p]
            decay = scatter_like(gather(p) @ (gram / n).to(p.dtype), p)  # W C at the pre-step weights
        p.mul_(1 - group["lr"] * group["weight_decay"])
        if decay is not None:
            p.sub_(decay, alpha=eta)
        p.sub_(grad, alpha=eta)
