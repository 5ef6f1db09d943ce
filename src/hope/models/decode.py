"""One-token decoding on static buffers, replayed from a CUDA graph on CUDA.

`model.static_state` copies a stream's state (after a prompt ran through `model(ids)`, the chunked
or Triton path) into fixed buffers: attention caches of `max_len` positions, every memory and CMS
level a buffer of its own, positions and surprise counts as 0-d tensors. `model.decode_step` then
updates them in place, one token per call, with shapes that never change and no host sync, which is
what lets `Decoder` capture the whole model's step as a CUDA graph and replay it per token. The host
knows which CMS levels complete a chunk with the next token (`model.level_steps(pos)`), so there is
one graph per such pattern (one more than the number of levels when each period divides the next): between
boundaries a step only reads the levels.
"""

from __future__ import annotations

import torch

from hope.checks import check_int


def _tensors(tree) -> list[torch.Tensor]:
    if isinstance(tree, torch.Tensor):
        return [tree]
    if isinstance(tree, dict):
        return [t for v in tree.values() for t in _tensors(v)]
    if isinstance(tree, (list, tuple)):
        return [t for v in tree for t in _tensors(v)]
    return []


def state_batch_size(state: dict | None) -> int | None:
    """How many sequences a model state holds (None for the start of a stream)."""
    tensors = [t for b in (state or {}).get("blocks", []) for t in _tensors(b) if t.dim() > 0]
    return tensors[0].shape[0] if tensors else None


class Decoder:
    """Continue `state` (None: a new stream) one token per `step`: logits (B, 1, V) of the given ids.

    `max_len` bounds the stream's length where the model attends (its caches are preallocated);
    memory models have no bound. `cuda_graph` (default: on CUDA) captures the step the first time each
    pattern of CMS level steps comes up and replays it; `compile` first fuses the step's small kernels
    with `torch.compile` (a one-off compilation per pattern).
    """

    def __init__(
        self,
        model,
        state: dict | None,
        batch_size: int,
        max_len: int,
        cuda_graph: bool | None = None,
        dtype: torch.dtype | None = None,
        compile: bool = False,
    ):
        check_int("batch_size", batch_size)
        check_int("max_len", max_len)
        held = state_batch_size(state)
        if held is not None and held != batch_size:
            raise ValueError(f"the state holds {held} sequences, but batch_size={batch_size}")
        self.model = model
        self._step = torch.compile(model.decode_step, dynamic=False) if compile else model.decode_step
        self.pos = 0 if state is None else state["pos"]
        self.capacity = None if model.config.uses_titans else max_len
        device = model.embed.weight.device
        with torch.no_grad():
            self.state = model.static_state(state, batch_size, max_len, dtype)
        self.ids = torch.zeros(batch_size, 1, dtype=torch.long, device=device)
        graph = device.type == "cuda" if cuda_graph is None else cuda_graph
        if graph and device.type != "cuda":
            raise ValueError(f"cuda_graph=True needs the model on CUDA, it is on {device.type}")
        # CMS level-step pattern → (graph, its logits buffer); None: eager steps
        self.graphs: dict[tuple[bool, ...], tuple[torch.cuda.CUDAGraph, torch.Tensor]] | None = (
            {} if graph else None
        )

    @torch.no_grad()
    def _capture(self, steps: tuple[bool, ...]) -> tuple[torch.cuda.CUDAGraph, torch.Tensor]:
        saved = [t.clone() for t in _tensors(self.state)]
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):  # warm-up off the capture (lazy initialisation), then undone
            for _ in range(2):
                self._step(self.ids, self.state, steps)
        torch.cuda.current_stream().wait_stream(stream)
        for t, s in zip(_tensors(self.state), saved):
            t.copy_(s)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            logits = self._step(self.ids, self.state, steps)
        return graph, logits

    @torch.no_grad()
    def step(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (B,) or (B, 1) → logits (B, 1, V); with graphs, a buffer that a later step overwrites."""
        if self.capacity is not None and self.pos >= self.capacity:
            raise ValueError(
                f"the attention cache is full: the stream reached max_len={self.capacity} tokens"
            )
        self.ids.copy_(ids.view(self.ids.shape))
        steps = self.model.level_steps(self.pos)
        self.pos += 1
        if self.graphs is None:
            return self._step(self.ids, self.state, steps)
        if steps not in self.graphs:
            self.graphs[steps] = self._capture(steps)
        graph, logits = self.graphs[steps]
        graph.replay()
        return logits
