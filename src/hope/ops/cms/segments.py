"""The CMS's training path over many segments (Eq. 71): a forward that keeps only checkpoints and a
backward that recomputes each segment, replayed from a CUDA graph on CUDA.

`ContinuumMemory.forward` walks a sequence one segment (the shortest period's tokens) at a time, the
fast weights of every level changing between segments. With autograd recording that walk, a
512-token sequence at the dissection study's 8-token period makes 64 compiled calls per layer in each
direction and stores every segment's fast weights: 87% of hope's training step at the study's size
(docs/PERFORMANCE.md). `segments_forward` runs the same walk inside one `torch.autograd.Function`:

* forward without autograd, keeping the state (fast weights and error sums) at every k-th segment
  start, k ≈ √(segments), instead of at every segment;
* backward in reverse, block by block: the block's segment starts recomputed from its checkpoint,
  then each segment recomputed with autograd and differentiated (its output, next state) → (its
  input, start state, read-out parameters). On CUDA that per-segment recompute + gradient is captured
  in the forward once per pattern (segment length, which levels step at its end) and replayed in the
  backward, the pattern of the Titans backward (`hope.ops.titans.fused`).

The numbers are the plain walk's (`tests/core/test_cms_segments.py`: float64, every variant and
level kind, states that start mid-segment with pending error sums). Inside the Function a level's
error sum is a tensor of zeros where the plain walk holds None (nothing pending); 0 + g is g exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import torch

from hope.ops.captures import Captures, addresses


@dataclass
class SegmentOptions:
    """`enabled`: `ContinuumMemory` trains through `segments_forward` on CUDA (impl="auto", error
    "local"); off until a GPU measurement shows it pays (docs/PERFORMANCE.md). `cuda_graphs`: its
    backward replays captured segments."""

    enabled: bool = False
    cuda_graphs: bool = True


OPTIONS = SegmentOptions()


def _flatten(state: dict) -> list[torch.Tensor]:
    """A CMS state's fast weights, then its error sums (zeros where none is pending)."""
    pending = [
        [torch.zeros_like(w) for w in fast] if sums is None else list(sums)
        for fast, sums in zip(state["fast"], state["pending"])
    ]
    return [w for level in state["fast"] for w in level] + [g for level in pending for g in level]


def _unflatten(flat, sizes: list[int], pos: int) -> dict:
    fast, pending, at = [], [], 0
    for n in sizes:
        fast.append(list(flat[at : at + n]))
        at += n
    for n in sizes:
        pending.append(list(flat[at : at + n]))
        at += n
    return {"pos": pos, "fast": fast, "pending": pending}


def _step(module, segment, sizes, x_s: torch.Tensor, flat, pos: int):
    """One segment from the flat state at stream position `pos`: (y − x, next flat state)."""
    state = _unflatten(flat, sizes, pos)
    delta, grads = segment(x_s, state["fast"])
    return delta, _flatten(module.absorb(state, grads, x_s.shape[1]))


def _plan(module, pos: int, n_tokens: int) -> list[tuple[int, int, int]]:
    """(offset in x, tokens, stream position) of each segment, as `ContinuumMemory.forward` cuts them."""
    plan, t = [], 0
    while t < n_tokens:
        n = min(module.segment - (pos + t) % module.segment, n_tokens - t)
        plan.append((t, n, pos + t))
        t += n
    return plan


class _Recompute(torch.nn.Module):
    """One segment as a module call, so `torch.func.functional_call` can swap in stand-in parameters
    (the CMS layer is its only child)."""

    def __init__(self, module, segment, sizes, pos):
        super().__init__()
        self.module, self.segment, self.sizes, self.pos = module, segment, sizes, pos

    def forward(self, x_s, flat):
        return _step(self.module, self.segment, self.sizes, x_s, flat, self.pos)


def _segment_backward(module, segment, sizes, pos, x_s, flat, grad_delta, grad_next, params, stand_ins=None):
    """One segment recomputed from its start state with autograd: grads of its input, its start state
    and `params` (None where unused); `stand_ins` ({name: tensor}) replace the layer's parameters."""
    wanted = [p for p in params if p.requires_grad]
    with torch.enable_grad():
        x_s = x_s.detach().requires_grad_()
        start = [t.detach().requires_grad_() for t in flat]
        recompute = _Recompute(module, segment, sizes, pos)
        if stand_ins:
            swapped = {f"module.{name}": t for name, t in stand_ins.items()}
            delta, nxt = torch.func.functional_call(recompute, swapped, (x_s, start))
        else:
            delta, nxt = recompute(x_s, start)
        pairs = [(o, g) for o, g in zip([delta, *nxt], [grad_delta, *grad_next]) if o.requires_grad]
        grads = torch.autograd.grad(
            [o for o, _ in pairs], [x_s, *start, *wanted], [g for _, g in pairs], allow_unused=True
        )
    grad_start = [torch.zeros_like(t) if g is None else g for g, t in zip(grads[1 : 1 + len(start)], start)]
    by_id = dict(zip(map(id, wanted), grads[1 + len(start) :]))
    return grads[0], grad_start, [by_id.get(id(p)) for p in params]


class _SegmentGraph:
    """One segment's recompute + autograd captured as a CUDA graph, in the pool the CMS captures share.
    Inputs are copied into static buffers; the outputs are static buffers too, valid until the next
    replay. It differentiates with respect to detached aliases of the parameters (same storage), as
    `hope.ops.titans.fused` does."""

    def __init__(self, module, segment, sizes, pos, x_s, flat, grad_delta, params):
        self.device = x_s.device
        self.inputs = [t.detach().clone() for t in (x_s, grad_delta, *flat, *flat)]
        self.n_state = len(flat)
        aliases = [p.detach().requires_grad_(p.requires_grad) for p in params]
        names = [name for name, _ in module.named_parameters()]
        self.backward = partial(
            _segment_backward, module, segment, sizes, pos, params=aliases, stand_ins=dict(zip(names, aliases))
        )
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):  # warm-up off the capture: compilation, lazy backward graphs
            for _ in range(2):
                self._call()
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, pool=_CAPTURED.pool(self.device)):
            self.outputs = self._call()

    def _call(self):
        x_s, grad_delta, *rest = self.inputs
        return self.backward(x_s=x_s, flat=rest[: self.n_state], grad_delta=grad_delta, grad_next=rest[self.n_state :])

    def __call__(self, x_s, flat, grad_delta, grad_next):
        for static, value in zip(self.inputs, (x_s, grad_delta, *flat, *grad_next)):
            static.copy_(value)
        self.graph.replay()
        return self.outputs


# per CMS layer: {(segment shape, level steps, autocast, parameter addresses): its captured backward}
_CAPTURED = Captures("CMS", "hope.ops.cms.segments.OPTIONS.cuda_graphs")


def _key(module, pos: int, x_s: torch.Tensor, params) -> tuple:
    """What a capture depends on: the segment's shape, which levels step at its end, the autocast it
    runs under, and where the parameters live."""
    steps = tuple((pos + x_s.shape[1]) % c == 0 for c in module.chunk_sizes)
    device = x_s.device.type
    autocast = (torch.is_autocast_enabled(device), torch.get_autocast_dtype(device))
    return (x_s.shape, x_s.dtype, steps, autocast, addresses(params))


def _capture(module, segment, sizes, pos, x_s, flat, delta, params) -> None:
    """Capture the backward of segments like this one, once per layer and pattern, here in the forward:
    a capture inside autograd's backward thread would make the legacy stream wait on the capturing
    one (as `hope.ops.titans.fused` found)."""
    key = _key(module, pos, x_s, params)
    if _CAPTURED.wants(module, key):
        _CAPTURED.add(module, key, _SegmentGraph(module, segment, sizes, pos, x_s, flat, torch.zeros_like(delta), params))


class _Segments(torch.autograd.Function):
    @staticmethod
    def forward(ctx, module, segment, cuda_graphs, pos, n_state, x, *rest):
        flat, params = list(rest[:n_state]), list(rest[n_state:])
        sizes = [len(module.slow_weights(i)) for i in range(len(module.chunk_sizes))]
        plan = _plan(module, pos, x.shape[1])
        every = max(1, round(math.sqrt(len(plan))))
        checkpoints, outs = [], []
        for s, (t, n, at) in enumerate(plan):
            if s % every == 0:
                checkpoints.append(flat)
            delta, after = _step(module, segment, sizes, x[:, t : t + n], flat, at)
            if cuda_graphs:
                _capture(module, segment, sizes, at, x[:, t : t + n], flat, delta, params)
            outs.append(delta)
            flat = after
        ctx.module, ctx.segment, ctx.cuda_graphs = module, segment, cuda_graphs
        device = x.device.type  # the recompute runs under the forward's autocast, as checkpointing does
        ctx.autocast = (device, torch.get_autocast_dtype(device), torch.is_autocast_enabled(device))
        ctx.plan, ctx.every, ctx.sizes, ctx.params, ctx.checkpoints = plan, every, sizes, params, checkpoints
        ctx.save_for_backward(x)
        # an end state that is an input or a kept checkpoint (a level that has not stepped since) is
        # returned as a copy: the Function's outputs must be its own, and ctx must not hold them
        kept = {id(t) for t in rest} | {id(t) for state in checkpoints for t in state}
        return torch.cat(outs, dim=1), *(t.clone() if id(t) in kept else t for t in flat)

    @staticmethod
    def backward(ctx, grad_out, *grad_end):
        (x,) = ctx.saved_tensors
        grad_state = [torch.zeros_like(t) if g is None else g for g, t in zip(grad_end, ctx.checkpoints[0])]
        grad_out = torch.zeros_like(x) if grad_out is None else grad_out
        device, dtype, enabled = ctx.autocast
        with torch.autocast(device, dtype=dtype, enabled=enabled):
            grad_x, grad_state, grad_params = _backward_blocks(ctx, x, grad_out, grad_state)
        return None, None, None, None, None, grad_x, *grad_state, *grad_params


def _backward_blocks(ctx, x, grad_out, grad_state):
    """The checkpoint blocks in reverse: each block's segment starts recomputed, then its segments
    differentiated in reverse, from the end state's gradient to the start state's."""
    module, segment, sizes, params, plan = ctx.module, ctx.segment, ctx.sizes, ctx.params, ctx.plan
    grad_x = torch.zeros_like(x)
    grad_params: list[torch.Tensor | None] = [None] * len(params)
    for b in reversed(range(len(ctx.checkpoints))):
        block = range(b * ctx.every, min((b + 1) * ctx.every, len(plan)))
        starts, flat = [], ctx.checkpoints[b]
        with torch.no_grad():
            for s in block:
                starts.append(flat)
                t, n, at = plan[s]
                if s + 1 < block.stop:
                    flat = _step(module, segment, sizes, x[:, t : t + n], flat, at)[1]
        for s, flat in zip(reversed(block), reversed(starts)):
            t, n, at = plan[s]
            x_s, g_s = x[:, t : t + n], grad_out[:, t : t + n]
            graph = _CAPTURED.get(module, _key(module, at, x_s, params)) if ctx.cuda_graphs else None
            if graph is not None:
                gx, grad_state, gp = graph(x_s, flat, g_s, grad_state)
            else:
                gx, grad_state, gp = _segment_backward(module, segment, sizes, at, x_s, flat, g_s, grad_state, params)
            grad_x[:, t : t + n] = gx
            for i, g in enumerate(gp):
                if g is not None:
                    grad_params[i] = g.clone() if grad_params[i] is None else grad_params[i] + g
    if ctx.cuda_graphs:  # a replay's outputs live in the shared pool, which the next layer's replays reuse
        grad_state = [g.clone() for g in grad_state]
    return grad_x, grad_state, grad_params


def segments_forward(module, x: torch.Tensor, state: dict, segment, cuda_graphs: bool) -> tuple[torch.Tensor, dict]:
    """`ContinuumMemory.forward`'s walk over x (B, T, D) from `state` (module doc): (y − x, new state),
    the same numbers, with `segment` the per-segment function (`_segment`, or its compiled form)."""
    flat = _flatten(state)
    params = list(module.parameters())
    out, *end = _Segments.apply(module, segment, cuda_graphs, state["pos"], len(flat), x, *flat, *params)
    new = _unflatten(end, [len(level) for level in state["fast"]], state["pos"] + x.shape[1])
    # a level that has just stepped holds no error sum, as in the plain walk
    new["pending"] = [None if new["pos"] % c == 0 else sums for c, sums in zip(module.chunk_sizes, new["pending"])]
    return out, new
