"""One-token decoding on static buffers, replayed from a CUDA graph on CUDA.

`model.static_state` copies a stream's state (after a prompt ran through `model(ids)`, the chunked
or Triton path) into fixed buffers: attention caches of `max_len` positions, every memory and CMS
level a buffer of its own, positions and surprise counts as 0-d tensors. `model.decode_step` then
updates them in place, one token per call, with shapes that never change and no host sync, which is
what lets `Decoder` capture the whole model's step as a CUDA graph and replay it per token. The host
knows which CMS levels complete a chunk with the next token (`model.level_steps(pos)`), so there is
one graph per such pattern (one more than the number of levels when each period divides the next): between
boundaries a step only reads the levels.

A step runs in the precision the `Decoder` was built in. Under autocast it would cast every weight
it multiplies, every token; instead the decoder casts them once: the `nn.Linear` weights outside the
Titans mixers (which run in float32) and the frozen CMS levels, swapped in for the step with
`torch.func.functional_call`, and the CMS fast weights, which the state keeps as read copies beside
the float32 weights that take the steps. The numbers are the ones autocast gives.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call

from hope.checks import check_int
from hope.layers.cms import ContinuumMemory
from hope.layers.self_ref_titans import SelfReferentialTitans


def state_tensors(tree) -> list[torch.Tensor]:
    """Every tensor of a state tree (nested dicts and lists), in a fixed order."""
    if isinstance(tree, torch.Tensor):
        return [tree]
    if isinstance(tree, dict):
        return [t for v in tree.values() for t in state_tensors(v)]
    if isinstance(tree, (list, tuple)):
        return [t for v in tree for t in state_tensors(v)]
    return []


def state_batch_size(state: dict | None) -> int | None:
    """How many sequences a model state holds (None for the start of a stream)."""
    tensors = [t for b in (state or {}).get("blocks", []) for t in state_tensors(b) if t.dim() > 0]
    return tensors[0].shape[0] if tensors else None


def autocast_dtype(device_type: str) -> torch.dtype | None:
    """The dtype autocast multiplies in on `device_type` right now; None where it is off."""
    return torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None


def cast_weights(model: nn.Module, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The parameters a decode step multiplies under autocast every token, cast to `dtype` once, by
    name: every `nn.Linear` outside the Titans mixers (those run with autocast off) and the weights
    of CMS levels that do not learn in context."""
    titans = [name + "." for name, m in model.named_modules() if isinstance(m, SelfReferentialTitans)]
    out = {}
    for name, module in model.named_modules():
        if any(name.startswith(prefix) for prefix in titans):
            continue
        if isinstance(module, nn.Linear):
            named = module.named_parameters(prefix=name, recurse=False)
        elif isinstance(module, ContinuumMemory) and not module.learns_in_context:
            named = ((n, p) for n, p in module.named_parameters(prefix=name) if "readout" not in n)
        else:
            continue
        out.update({n: p.detach().to(dtype) for n, p in named if p.dtype != dtype})
    return out


class _Step(nn.Module):
    """`model.decode_step` as a module call, so that `functional_call` can swap the weights it reads."""

    def __init__(self, model: nn.Module, step):
        super().__init__()
        self.model, self.step = model, step

    def forward(self, ids, state, steps):
        return self.step(ids, state, steps)


class Decoder:
    """Continue `state` (None: a new stream) one token per `step`: logits (B, 1, V) of the given ids.

    `max_len` bounds the stream's length where the model attends (its caches are preallocated);
    memory models have no bound. `cuda_graph` (default: on CUDA) captures the step the first time each
    pattern of CMS level steps comes up and replays it; `compile` first fuses the step's small kernels
    with `torch.compile` (a one-off compilation per pattern). Built under autocast, every step runs
    under the same autocast, on weights cast once (module doc): the parameters as they are now.
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
        step = torch.compile(model.decode_step, dynamic=False) if compile else model.decode_step
        self.pos = 0 if state is None else state["pos"]
        self.capacity = None if model.config.uses_titans else max_len
        device = model.embed.weight.device
        self.device_type, self.autocast = device.type, autocast_dtype(device.type)
        with torch.no_grad():
            self.state = model.static_state(state, batch_size, max_len, dtype, self.autocast)
            cast = {} if self.autocast is None else cast_weights(model, self.autocast)
        self.weights = {f"model.{name}": w for name, w in cast.items()}  # names inside `_Step`
        self._module = _Step(model, step)
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
        saved = [t.clone() for t in state_tensors(self.state)]
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):  # warm-up off the capture (lazy initialisation), then undone
            for _ in range(2):
                self._run(steps)
        torch.cuda.current_stream().wait_stream(stream)
        for t, s in zip(state_tensors(self.state), saved):
            t.copy_(s)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            logits = self._run(steps)
        return graph, logits

    def _run(self, steps: tuple[bool, ...]) -> torch.Tensor:
        precision = (
            torch.autocast(self.device_type, dtype=self.autocast)
            if self.autocast is not None
            else torch.autocast(self.device_type, enabled=False)
        )
        with precision:
            if not self.weights:
                return self._module(self.ids, self.state, steps)
            return functional_call(
                self._module, self.weights, (self.ids, self.state, steps), tie_weights=False, strict=False
            )

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
            return self._run(steps)
        if steps not in self.graphs:
            self.graphs[steps] = self._capture(steps)
        graph, logits = self.graphs[steps]
        graph.replay()
        return logits
