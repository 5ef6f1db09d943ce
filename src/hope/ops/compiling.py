"""One home for how the layers compile their small pieces (the CMS level piece, the Titans chunk
recompute and its vjp): `compiled(fn)` is `torch.compile` with a shared recompile budget and the
inductor options in `INDUCTOR`, which a benchmark may set before the first compilation
(`benchmarks/speed.py --inductor combo_kernels=false`, say) to time a variant."""

from __future__ import annotations

from functools import cache

import torch

INDUCTOR: dict = {"combo_kernels": True}
"""Inductor config options for every `compiled` function (`torch.compile(options=...)`). combo_kernels
launches independent small kernels as one: hope study-small graphed on an H200 (2026-12-02) trained at
21,155 tok/s with it and the vjp backward, 19,941 with the vjp alone, 18,632 with neither."""


@cache
def compiled(fn, fullgraph: bool = False):
    """`fn` compiled once for every layer that calls it, for static shapes. A layer's pieces recompile
    per shape (chunk lengths, batch sizes), hence the larger recompile budget."""
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 128)
    return torch.compile(fn, dynamic=False, fullgraph=fullgraph, options=dict(INDUCTOR) or None)
