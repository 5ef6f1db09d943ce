"""Streaming in fixed pieces on static buffers, replayed from a CUDA graph on CUDA.

`model(ids, state)` streams a sequence in pieces of any length, but every call launches each
kernel from Python: at batch 1 a hope-125m piece of 2,048 tokens makes over a thousand Triton launches
and thousands of small PyTorch ones, and the host, not the GPU, sets the pace (docs/PERFORMANCE.md).
`Streamer` runs the same forward on pieces of one fixed length whose state lives in fixed buffers:
after each piece the new state is copied back into them, so on CUDA one piece's whole forward is
captured as a graph and replayed. What the host keeps is the stream position and the Titans
surprise count; the position decides which CMS levels step inside a piece, so there is one graph per
such pattern (and per surprise count until it saturates at its window), as `Decoder` keeps one per
pattern of level steps.

Only models whose state has a fixed size stream this way (Titans-family mixers; attention caches grow),
and only on the chunk grid: the piece length a multiple of the Titans chunk and the CMS segment.
"""

from __future__ import annotations

import math

import torch

from hope.checks import check_int
from hope.models.decode import autocast_dtype, state_batch_size, state_tensors


def _static(tree):
    """A state tree's tensors as contiguous buffers of their own; a CMS level's missing error sum
    (None) as zeros, which `absorb` adds to exactly as it starts from None."""
    if isinstance(tree, torch.Tensor):
        return tree.detach().clone(memory_format=torch.contiguous_format)
    if isinstance(tree, dict):
        out = {k: _static(v) for k, v in tree.items()}
        if "fast" in out and "pending" in out:  # a CMS state
            out["pending"] = [
                [torch.zeros_like(w) for w in fast] if sums is None else sums
                for fast, sums in zip(out["fast"], out["pending"])
            ]
        return out
    if isinstance(tree, (list, tuple)):
        return [_static(v) for v in tree]
    return tree


def _copy_into(static, new) -> None:
    """Copy a forward's new state into the buffers; a None where buffers are (an error sum just
    spent by its level's step) zeroes them. Ints are the host's (`_set_counters`)."""
    if new is None:
        for t in state_tensors(static):
            t.zero_()
    elif isinstance(static, torch.Tensor):
        static.copy_(new)
    elif isinstance(static, dict):
        for key, value in static.items():
            _copy_into(value, new[key])
    elif isinstance(static, list):
        for value, fresh in zip(static, new, strict=True):
            _copy_into(value, fresh)


def _set_counters(tree, pos: int, count: int | None) -> None:
    """Write the host's stream position (every "pos") and Titans surprise count into the tree."""
    if isinstance(tree, dict):
        for key in tree:
            if key == "pos":
                tree[key] = pos
            elif key == "surprise_count":
                tree[key] = count
            else:
                _set_counters(tree[key], pos, count)
    elif isinstance(tree, list):
        for value in tree:
            _set_counters(value, pos, count)


def _surprise_count(tree) -> int | None:
    if isinstance(tree, dict):
        if "surprise_count" in tree:
            return tree["surprise_count"]
        values = tree.values()
    elif isinstance(tree, list):
        values = tree
    else:
        return None
    for value in values:
        count = _surprise_count(value)
        if count is not None:
            return count
    return None


def _grid(config) -> int:
    """Tokens a piece and a stream position must be a multiple of: the Titans chunk and the CMS segment."""
    grid = [config.titans.chunk_size]
    if config.uses_cms and config.cms.error != "none":
        grid.append(min(config.cms.chunk_sizes))
    return math.lcm(*grid)


def why_not_streamed(model, piece: int) -> str | None:
    """Why `Streamer` cannot stream `model` in `piece`-token pieces, or None if it can."""
    config = model.config
    if not config.uses_titans:
        return (
            f"Streamer needs a state of fixed size, but block {config.block!r} attends over a cache"
            " that grows with the stream: stream it with model(ids, state)"
        )
    if model.learns_from_lm_loss:
        return "cms.error='lm' steps between whole segments of the model's loss: use model(ids, state)"
    step = _grid(config)
    if piece % step:
        return f"piece={piece} must be a multiple of {step} (the Titans chunk and the CMS segment)"
    return None


class Streamer:
    """Continue `state` (None: a new stream) one piece of `piece` tokens per call: logits (B, piece, V),
    the numbers `model(ids, state)` gives for the same pieces. `state()` is the stream's state now, in
    the form `model(ids, state)` and `Decoder` take.

    `cuda_graph` (default: on CUDA) captures a piece's forward the first time each pattern comes up
    (module doc) and replays it; the logits are then a buffer the next piece overwrites. Built under
    autocast, every piece runs under the same autocast.
    """

    def __init__(
        self, model, state: dict | None, batch_size: int, piece: int, cuda_graph: bool | None = None
    ):
        check_int("batch_size", batch_size)
        check_int("piece", piece)
        refusal = why_not_streamed(model, piece)
        if refusal:
            raise ValueError(refusal)
        config = model.config
        step = _grid(config)
        held = state_batch_size(state)
        if held is not None and held != batch_size:
            raise ValueError(f"the state holds {held} sequences, but batch_size={batch_size}")
        pos = 0 if state is None else state["pos"]
        if pos % step:
            raise ValueError(
                f"the state ends at token {pos}, off the grid of {step}-token chunks the pieces keep"
            )
        self.model, self.piece, self.batch_size = model, piece, batch_size
        # every period that decides which CMS levels step inside a piece
        self.period = math.lcm(piece, *(config.cms.chunk_sizes if config.uses_cms else ()))
        device = model.embed.weight.device
        self.device_type, self.autocast = device.type, autocast_dtype(device.type)
        with torch.no_grad():
            full = model.init_state(batch_size) if state is None else state
            if any(b is None for b in full["blocks"]):
                fresh = model.init_state(batch_size)["blocks"]
                full = {**full, "blocks": [f if b is None else b for b, f in zip(full["blocks"], fresh)]}
            self.tree = _static(full)
        self.pos, self.count = pos, _surprise_count(self.tree)
        self.ids = torch.zeros(batch_size, piece, dtype=torch.long, device=device)
        graph = device.type == "cuda" if cuda_graph is None else cuda_graph
        if graph and device.type != "cuda":
            raise ValueError(f"cuda_graph=True needs the model on CUDA, it is on {device.type}")
        # pattern → (graph or None, logits buffer, surprise count after the piece)
        self.graphs: dict[tuple[int, int | None], tuple] | None = {} if graph else None

    def reset(self) -> None:
        """Start a new stream on the same buffers (and graphs): the model's initial state, position 0."""
        with torch.no_grad():
            fresh = _static(self.model.init_state(self.batch_size))
            _copy_into(self.tree, fresh)
        self.pos, self.count = 0, _surprise_count(fresh)  # the tree's own ints are the last piece's

    def state(self) -> dict:
        """The stream's state after the pieces so far (copies, safe to keep; a CMS level with nothing
        pending holds a zero error sum)."""
        out = _static(self.tree)
        _set_counters(out, self.pos, self.count)
        return out

    def _run(self) -> tuple[torch.Tensor, int | None]:
        precision = (
            torch.autocast(self.device_type, dtype=self.autocast)
            if self.autocast is not None
            else torch.autocast(self.device_type, enabled=False)
        )
        _set_counters(self.tree, self.pos, self.count)
        with torch.no_grad(), precision:
            logits, new = self.model(self.ids, self.tree)
            _copy_into(self.tree, new)
        return logits, _surprise_count(new)

    def _capture(self) -> tuple:
        saved = [t.clone() for t in state_tensors(self.tree)]
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):  # warm-up off the capture (compilation), then undone
            for _ in range(2):
                self._run()
                for t, s in zip(state_tensors(self.tree), saved):
                    t.copy_(s)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        # one memory pool for every pattern's graph: replays run one at a time, the state lands in
        # buffers outside the pool, and a piece's logits are read before the next piece runs
        pool = next(iter(self.graphs.values()))[0].pool() if self.graphs else None
        with torch.cuda.graph(graph, pool=pool):  # records the piece; the replay runs it
            logits, count = self._run()
        return graph, logits, count

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (B, piece) → logits (B, piece, V)."""
        if tuple(ids.shape) != tuple(self.ids.shape):
            raise ValueError(f"ids must have shape {tuple(self.ids.shape)}, got {tuple(ids.shape)}")
        self.ids.copy_(ids)
        if self.graphs is None:
            logits, self.count = self._run()
        else:
            key = (self.pos % self.period, self.count)
            if key not in self.graphs:
                self.graphs[key] = self._capture()
            graph, logits, count = self.graphs[key]
            graph.replay()
            self.count = count
        self.pos += self.piece
        return logits
