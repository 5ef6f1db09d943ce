"""One optimizer step and the learning-rate schedule, shared by the trainer (``hope train``), the bench
runner (``hope bench-suite``) and ``benchmarks/optimizers.py``."""

import contextlib
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from hope import distributed as dist


def lr_factor(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """The peak learning rate's multiplier at 0-based ``step`` of ``total``: linear warm-up over ``warmup``
    steps, then cosine decay to ``min_ratio``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def next_token_loss(
    model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor, precision: str
) -> torch.Tensor:
    """Mean next-token cross-entropy of ``model`` on ``inputs`` (bf16 autocast if ``precision`` says so),
    no loss where a target is -100. Autocast's weight cache is off: it cannot live in a CUDA graph
    (``hope.train.graphs``), and it saves nothing when each weight is cast once a step."""
    with torch.autocast(
        inputs.device.type, dtype=torch.bfloat16, enabled=precision == "bf16", cache_enabled=False
    ):
        logits, _ = model(inputs)
        return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())


def train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    next_batch: Callable[[], tuple[torch.Tensor, torch.Tensor]],
    base_lrs: Sequence[float],
    factor: float,
    device: torch.device,
    grad_accum: int = 1,
    precision: str = "fp32",
    grad_clip: float = 0.0,
    after_backward: Callable[[], None] | None = None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> tuple[float, float]:
    """One optimizer step at ``factor`` times each group's base learning rate, over ``grad_accum``
    micro-batches ``(inputs, targets)`` from ``next_batch`` (next-token cross-entropy; no loss where a
    target is -100). Returns the all-process mean loss and the global gradient norm (clipped to
    ``grad_clip``; 0: not clipped). A non-finite loss or norm leaves the weights as they were.
    ``after_backward`` is called between the backward pass and the optimizer step (for timing).
    ``loss_fn(inputs, targets)`` replaces ``next_token_loss`` (a ``hope.train.graphs.GraphedLoss``)."""
    for group, base in zip(optimizer.param_groups, base_lrs, strict=True):
        group["lr"] = base * factor
    loss_sum = torch.zeros((), device=device)
    for micro in range(grad_accum):
        inputs, targets = (t.to(device, non_blocking=True) for t in next_batch())
        with _grad_sync(model, micro == grad_accum - 1):
            if loss_fn is None:
                loss = next_token_loss(model, inputs, targets, precision)
            else:
                loss = loss_fn(inputs, targets)
            (loss / grad_accum).backward()
        loss_sum += loss.detach()
    mean_loss = dist.all_reduce_sum(loss_sum / grad_accum).item() / dist.world_size()
    # With clipping off the norm is still computed (for the log and the NaN check): an infinite max_norm
    # never rescales. The norm is global, so every process takes the same decision below.
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip or math.inf)
    if hasattr(grad_norm, "full_tensor"):  # FSDP2 returns a DTensor
        grad_norm = grad_norm.full_tensor()
    grad_norm = float(grad_norm)
    if after_backward is not None:
        after_backward()
    # A finite loss can still come with NaN gradients (overflow inside the backward pass): skip both.
    if math.isfinite(mean_loss) and math.isfinite(grad_norm):
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return mean_loss, grad_norm


def _grad_sync(model, sync: bool):
    """Skips the gradient all-reduce on all but the last micro-batch of an accumulated step."""
    inner = getattr(model, "_orig_mod", model)
    if sync:
        return contextlib.nullcontext()
    if hasattr(inner, "no_sync"):  # DDP
        return inner.no_sync()
    if hasattr(inner, "set_requires_gradient_sync"):  # FSDP2
        inner.set_requires_gradient_sync(False)
        return _restore_gradient_sync(inner)
    return contextlib.nullcontext()


@contextlib.contextmanager
def _restore_gradient_sync(module):
    try:
        yield
    finally:
        module.set_requires_gradient_sync(True)
