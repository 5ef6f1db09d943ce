"""GPU kernels, each tested against the PyTorch paths in `hope.memory` (chunked.py, core.py)."""

import functools
import importlib.util
import os
import warnings

import torch


@functools.cache
def warn_once(message: str) -> None:
    """Say a kernel's fallback once a process: every layer of a model takes the same one."""
    warnings.warn(message, stacklevel=3)


def triton_reason(x: torch.Tensor) -> str | None:
    """Why no Triton kernel can run on `x`'s device here (None: one can)."""
    if x.device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        return f"tensors on {x.device.type} (Triton runs on CUDA, or on the CPU with TRITON_INTERPRET=1)"
    if importlib.util.find_spec("triton") is None:
        return "Triton is not installed"
    return None
