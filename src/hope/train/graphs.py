"""A training micro-batch (forward, next-token loss, backward) replayed from CUDA graphs
(`hope train --cuda-graphs`, `hope bench-suite dissect --cuda-graphs`).

HOPE's memories walk a sequence chunk by chunk and segment by segment: tens of thousands of small
kernels a step, each launched from Python. At the dissection study's size the GPU is busy about a
quarter of a hope step and waits on the host the rest (docs/PERFORMANCE.md). Captured once per batch
shape by `torch.cuda.make_graphed_callables`, a step launches two graphs instead.

While a step is captured, the layers' own backward captures (`hope.ops.captures`) stand aside: a
graph cannot be replayed inside another's capture, so the layers take their plain paths and the
outer graph records them. The numbers are the eager step's (`tests/train/test_graphs.py`, on a GPU).
Where a step is bound by the GPU rather than the host (hope-125m at T = 4096) it gains nothing.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from hope import distributed as dist
from hope.ops.captures import suspended
from hope.train.step import next_token_loss


class _Loss(nn.Module):
    """`next_token_loss` as a module whose only child is the model, so that the graph's inputs are the
    batch and the model's parameters."""

    def __init__(self, model: nn.Module, precision: str):
        super().__init__()
        self.model, self.precision = model, precision

    def forward(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return next_token_loss(self.model, inputs, targets, self.precision)


class GraphedLoss:
    """`next_token_loss(model, inputs, targets, precision)` whose forward and backward replay CUDA graphs
    captured at the first batch of each shape (at most `max_shapes`; other shapes run eagerly, with one
    warning). The model must stay in training mode, its parameters where they are (no FSDP
    resharding), in one process. No autograd graph of the model may be alive when a shape is
    captured (a kept loss): its gradient nodes would tie the capture to the default stream."""

    def __init__(self, model: nn.Module, precision: str, max_shapes: int = 2):
        device = next(model.parameters()).device
        if device.type != "cuda":
            raise ValueError(f"cuda_graphs needs the model on a CUDA device, it is on {device}")
        if dist.world_size() > 1:
            raise ValueError(
                "cuda_graphs runs in one process: DDP's and FSDP's gradient hooks cannot be captured; "
                "leave it off under torchrun"
            )
        self.model, self.precision, self.max_shapes = model, precision, max_shapes
        self.graphed: dict[tuple, tuple[nn.Module, list[nn.Parameter]]] = {}
        self.warned = False

    def __call__(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        key = (inputs.shape, inputs.dtype, targets.shape, targets.dtype)
        if key not in self.graphed and self.model.training and len(self.graphed) < self.max_shapes:
            self.graphed[key] = self._capture(inputs, targets)
        if key not in self.graphed or not self.model.training:
            if not self.warned and self.model.training:
                warnings.warn(
                    f"cuda_graphs: a batch of a new shape {tuple(inputs.shape)} after {self.max_shapes} "
                    "captured ones runs eagerly",
                    stacklevel=2,
                )
                self.warned = True
            return next_token_loss(self.model, inputs, targets, self.precision)
        graphed, used = self.graphed[key]
        # Gradients accumulate into tensors of their own: a parameter without one would take the
        # graph's static gradient buffer itself, which the next replay overwrites.
        for p in used:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        return graphed(inputs, targets)

    def _capture(self, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[nn.Module, list[nn.Parameter]]:
        """The graphed loss and the parameters its backward reaches (a CMS level that never steps in
        the sequence leaves its read-outs without a gradient: LanguageModel.idle_cms_levels)."""
        with suspended():
            graphed = torch.cuda.make_graphed_callables(
                _Loss(self.model, self.precision), (inputs, targets), allow_unused_input=True
            )
        params = [p for p in self.model.parameters() if p.requires_grad]
        grads = torch.autograd.grad(graphed(inputs, targets), params, allow_unused=True)
        return graphed, [p for p, g in zip(params, grads) if g is not None]
