"""GPU kernels, each tested against the PyTorch paths in `hope.memory` (chunked.py, core.py)."""

import functools
import warnings


@functools.cache
def warn_once(message: str) -> None:
    """Say a kernel's fallback once a process: every layer of a model takes the same one."""
    warnings.warn(message, stacklevel=3)
