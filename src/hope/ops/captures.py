"""The CUDA-graph captures of a layer's backward pieces (the Titans chunk backward,
`hope.ops.titans.fused`), kept apart from the kernels so that a whole-step capture
(`hope.train.graphs`) can set them aside.

A capture reads its layer's parameters where they were when it was recorded, so its key ends with
their addresses. When they move (FSDP resharding between steps) every capture of the layer is stale
and is dropped; a layer whose parameters keep moving stops capturing after a few moves, with one
warning, instead of recording new graphs every step.

Inside `suspended()` (a whole training step being captured: `hope.train.graphs`) no capture is made
or replayed: a graph cannot be launched inside another's capture.
"""

from __future__ import annotations

import contextlib
import warnings
import weakref

import torch

_SUSPENDED = [0]


@contextlib.contextmanager
def suspended():
    """No layer captures or replays its own graphs inside: the plain paths run (and get captured)."""
    _SUSPENDED[0] += 1
    try:
        yield
    finally:
        _SUSPENDED[0] -= 1


def addresses(params) -> tuple[int, ...]:
    """Where the parameters live: the last element of every capture key."""
    return tuple(p.data_ptr() for p in params)


class Captures:
    """{layer: {key: capture}} for one kind of layer (`what`, named in the warning, with `switch`:
    how to turn the graphs off). A capture has `.device` and `.graph` (a `torch.cuda.CUDAGraph`)."""

    def __init__(self, what: str, switch: str, max_moves: int = 4):
        self.what, self.switch, self.max_moves = what, switch, max_moves
        self.graphs: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self.moves: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def get(self, layer, key: tuple):
        return None if _SUSPENDED[0] else self.graphs.get(layer, {}).get(key)

    def of(self, layer) -> dict:
        return {} if _SUSPENDED[0] else self.graphs.get(layer, {})

    def wants(self, layer, key: tuple) -> bool:
        """Whether `key` is to be captured now: not captured yet, and the layer still captures. Drops
        the layer's captures if its parameters moved since they were made."""
        if _SUSPENDED[0]:
            return False
        graphs = self.graphs.setdefault(layer, {})
        if key in graphs:
            return False
        if graphs and next(iter(graphs))[-1] != key[-1]:
            graphs.clear()  # an old capture points at stale memory
            self.moves[layer] = self.moves.get(layer, 0) + 1
            if self.moves[layer] == self.max_moves:
                warnings.warn(
                    f"the parameters of a {self.what} layer moved {self.max_moves} times between steps (FSDP"
                    f" resharding?): its backward now runs without CUDA graphs ({self.switch})",
                    stacklevel=3,
                )
        return self.moves.get(layer, 0) < self.max_moves

    def add(self, layer, key: tuple, capture) -> None:
        self.graphs.setdefault(layer, {})[key] = capture

    def pool(self, device):
        """The memory pool of a live capture on `device` (a new one if none). Backward pieces replay one
        at a time and their outputs are read before the next replay, so captures may share a pool;
        the caller copies what outlives its layer's backward."""
        for graphs in list(self.graphs.values()):
            for capture in graphs.values():
                if capture.device == device:
                    return capture.graph.pool()
        return torch.cuda.graph_pool_handle()
