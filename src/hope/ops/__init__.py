"""GPU kernels, each tested against the PyTorch paths in `hope.memory` (chunked.py, core.py)."""
