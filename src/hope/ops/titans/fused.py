"""`impl="triton"` for `SelfReferentialTitans`: the Triton forward (`chunk_split`, or the one-launch
`chunk_fwd`) behind autograd.

The Function's inputs are the sequence's static inputs (`layer._static`: q, and x̂ or the static
k, v, η, α; no memory makes them), the initial state and the layer's parameters; the projections
that make the static inputs stay outside, so autograd differentiates them once for the sequence.

Forward: the Triton kernels run every whole chunk of the sequence and keep the memories' state
at every `titans.boundary_every`-th chunk boundary (and each token's surprise gate). Backward: group
by group in reverse, the kernel replays the group from its kept boundary with the forward's gate to
recover the boundaries inside it; then chunk by chunk, last first, the backward kernels of `chunk_bwd`
take the output and end-state gradients back to the chunk's start (`KERNEL.backward="triton"`, the
default). Where those kernels do not fit the device, or with `KERNEL.backward="vjp"` / "autograd",
the layer's own PyTorch `_segment` recomputes one chunk from its start state and static inputs with
the forward's gate and is differentiated, as one `torch.func.vjp` ("vjp") or through autograd
("autograd"); on CUDA compiled, and replayed per chunk from one captured graph (`titans.cuda_graphs`).
Memory grows with T / (C · boundary_every), not with the chunks' activations.
"""

from __future__ import annotations

import dataclasses
import warnings
from functools import partial

import torch

from hope.checks import check_choice
from hope.ops import triton_reason
from hope.ops.captures import Captures, addresses
from hope.ops.compiling import compiled as compiled_fn


class KernelTooLarge(RuntimeError):
    """The compiled kernel needs more shared memory than the device has (raised before any work)."""


@dataclasses.dataclass
class KernelOptions:
    """How the chunk kernel computes (`benchmarks/titans_layer.py --kernel` sweeps these; the layer runs
    `KERNEL`). A variant becomes the default once a GPU run has timed it against the old one.

    dots: "auto" takes tf32 or ieee products as PyTorch's float32 matmul precision says; "bf16"
    bfloat16 operands (float32 accumulation). share_inverse: dgd's first layers share one (I + A)⁻¹
    across the memories of a layer (on: the same products, 9% off the forward kernel at 125m on an
    H200, 2026-12-01). num_warps: None picks 4 or 8 by the memories' size (4 when split). split
    (on): the memories spread over programs, three launches a chunk (`chunk_split`), instead of
    one program per (batch, head) walking the whole sequence (`chunk_fwd`); at 125m on an H200
    (2026-12-01) the forward took 33.5 ms against 45.9 at batch 8, 9.4 against 24.1 at batch 1.
    backward: how a chunk's recompute is differentiated: "autograd" records the compiled `_segment`
    and runs autograd's backward through it (two graphs, autograd's engine between them); "vjp" makes
    recompute and backward one function (`torch.func.vjp`), which compiles to one graph, so the
    compiler may fuse across the two: hope study-small graphed on an H200 (2026-12-02) trained at
    19,941 tok/s against 18,632 with "autograd". "triton" (the default): the backward kernels of
    `chunk_bwd`, three launches a chunk; hope study-small graphed on an H200 (2026-12-02) trained at
    36,779 tok/s against 21,572 with "vjp", titans at 119,625 against 52,792. A layer whose backward
    kernels do not fit the device's shared memory goes the "vjp" way, with a warning."""

    dots: str = "auto"
    share_inverse: bool = True
    num_warps: int | None = None
    split: bool = True
    backward: str = "triton"

    def validate(self) -> None:
        check_choice("KERNEL.dots", self.dots, ("auto", "bf16"))
        check_choice("KERNEL.backward", self.backward, ("autograd", "vjp", "triton"))
        if self.num_warps is not None:
            check_choice("KERNEL.num_warps", self.num_warps, (1, 2, 4, 8, 16))


KERNEL = KernelOptions()

# configurations whose kernel did not fit the device, so later calls fall back without compiling
_TOO_LARGE: set = set()


def _key(layer, x: torch.Tensor) -> tuple:
    return (dataclasses.astuple(layer.titans), dataclasses.astuple(KERNEL), layer.head_dim, x.dtype, x.device)


def _power_of_two(n: int) -> bool:
    return n >= 16 and n & (n - 1) == 0


def _shared_reason(layer, x: torch.Tensor, sizes: dict) -> str | None:
    """What both kernels (the chunk forward and the one-token step) need; `sizes` must be powers of two."""
    titans = layer.titans
    reason = triton_reason(x)
    if reason is not None:
        return reason
    if titans.memory == "mlp" and titans.memory_depth != 2:
        return f"titans.memory_depth={titans.memory_depth} (the kernel has 2-layer MLP memories)"
    if titans.retrieval == "chunk_start":
        return "titans.retrieval='chunk_start' has no Triton kernel"
    sizes = {**sizes, "head_dim": layer.head_dim}
    if titans.memory == "mlp":
        sizes["memory hidden width"] = layer.spec.hidden
    for name, n in sizes.items():
        if not _power_of_two(n):
            return f"{name}={n} (the kernel needs a power of two >= 16)"
    window = titans.surprise.window
    if titans.surprise.mode != "none" and window & (window - 1):
        return f"titans.surprise.window={window} (the kernel needs a power of two)"
    return None


def step_unsupported_reason(layer, x: torch.Tensor) -> str | None:
    """Why the one-token Triton step (`fused_recurrent`) cannot run this layer (None: it can)."""
    if layer.surprise_trace is not None:
        return "a surprise trace is being recorded"
    return _shared_reason(layer, x, {})


def unsupported_reason(layer, x: torch.Tensor) -> str | None:
    """Why the Triton path cannot run this layer on this input (None: it can)."""
    titans = layer.titans
    reason = _shared_reason(layer, x, {"titans.chunk_size": titans.chunk_size})
    if reason is not None:
        return reason
    if layer.surprise_trace is not None and not KERNEL.split:
        return "a surprise trace is being recorded (the split kernel records it: KERNEL.split)"
    if (
        not KERNEL.split
        and titans.update_rule == "momentum"
        and titans.memory == "mlp"
        and layer.head_dim * layer.spec.hidden > 4096
    ):
        # the one-launch kernel, measured on the H200 (2026-12-01): 272 KB at 64 x 128, over the 227 KB a
        # Hopper SM has. The split kernel holds one memory a program; it is tried, and a configuration
        # that does not fit falls back once, by the OutOfResources its compilation raises.
        return "titans.update_rule='momentum' with MLP memories wider than 64 x 64 exceeds shared memory"
    if _key(layer, x) in _TOO_LARGE:
        return "its kernel needs more shared memory than this device has"
    return None


def _dot_precision(dtype: torch.dtype) -> str:
    """tf32 exactly where PyTorch itself would use it for float32 matmuls."""
    if dtype == torch.float32 and torch.get_float32_matmul_precision() != "highest":
        return "tf32"
    return "ieee"


def chunk_forward(layer, static: tuple, state, hist: torch.Tensor, count: int, keep_every: int, gate=None):
    """Run the kernel over the whole chunks of tokens whose `layer._static` is `static` (n tokens, a
    multiple of the chunk size).

    `state` is the memory layers' weights, then (momentum rule) their momenta. The kernel keeps the
    state at every `keep_every`-th chunk boundary; a given `gate` (B, H, n) replays a forward with
    it. Returns o (B, H, n, d_h), the slots of each state tensor (slot i < n/C // keep_every + 1 is
    boundary i·keep_every), the index of the end state's slot, the gate and the new surprise history.
    A layer recording its surprise (`surprise_trace` a list) gets M_mem's (B, H, n) appended (split kernel).
    """
    from triton.runtime.errors import OutOfResources

    from hope.ops.titans.chunk_fwd import titans_chunk_fwd_kernel

    KERNEL.validate()
    titans, spec = layer.titans, layer.spec
    h, d, chunk = layer.n_heads, layer.head_dim, titans.chunk_size
    q, xh, k, v, eta, log_alpha, log_beta = static
    b, n = q.shape[0], q.shape[2]
    n_chunks = n // chunk
    mlp = spec.kind == "mlp"
    f = spec.hidden if mlp else d
    n_comp = len(layer.components)
    like = q  # the dtype and device of everything made here
    dummy = q.new_empty(1)
    q, xh, k, v, eta, log_alpha, log_beta = (
        dummy if t is None else t.detach().contiguous() for t in (q, xh, k, v, eta, log_alpha, log_beta)
    )
    readouts = (
        [layer.eta_readout, layer.eta_bias, layer.alpha_readout, layer.alpha_bias]
        if titans.self_modifying
        else [dummy] * 4
    )
    momentum = titans.update_rule == "momentum"
    n_kept = n_chunks // keep_every + 1
    slots = [like.new_empty(n_kept + 2, *w.shape) for w in state]
    for slot, w in zip(slots, state):
        slot[0].copy_(w)
    n_layers = len(layer.spec.shapes)
    w1, w2 = slots[0], (slots[1] if mlp else dummy)
    s1, s2 = (slots[n_layers], slots[n_layers + 1] if mlp else dummy) if momentum else (dummy, dummy)
    base = (
        [w.detach().contiguous() for w in layer.init_weights] if titans.decay_to == "init" else [dummy, dummy]
    )
    w1_0, w2_0 = base[0], (base[1] if mlp else dummy)
    if hist is None:  # a replay (given gate) never reads the history
        hist = like.new_zeros(b, h, titans.surprise.window)
    hist = hist.detach().to(like.dtype).contiguous().clone()
    o = torch.empty(b, h, n, d, device=like.device, dtype=like.dtype)
    replay = gate is not None
    # M_mem's surprise per token, for a layer recording it (hope.analysis); a replay records nothing
    trace = like.new_empty(b, h, n) if layer.surprise_trace is not None and not replay else None
    gate = gate.contiguous() if replay else torch.empty(b, h, n, device=like.device, dtype=like.dtype)
    modes = {"none": 0, "absolute": 1, "relative": 2}
    mode = 3 if replay else modes[titans.surprise.mode]
    shape = dict(
        H=h,
        P=n_comp,
        BT=chunk,
        D=d,
        F=f,
        MLP=mlp,
        SGV=titans.self_generated_values,
        L2=titans.objective == "l2",
        RULE=("gd", "dgd", "momentum").index(titans.update_rule),
        BASE=titans.decay_to == "init",
        ACT=0 if spec.activation == "gelu" else 1,
        CLIP=float(titans.error_clip),
        WINDOW=titans.surprise.window,
        READ=2 if titans.retrieval == "inclusive" else 1,
        SHARE_INV=KERNEL.share_inverse and titans.update_rule == "dgd",
        PREC="bf16" if KERNEL.dots == "bf16" else _dot_precision(like.dtype),
    )
    readouts = [t.detach().contiguous() for t in readouts]
    threshold, eta_max = float(titans.surprise.threshold), float(titans.eta_max)
    try:
        if KERNEL.split:
            from hope.ops.titans.chunk_split import forward_chunks

            forward_chunks(
                xh, q, k, v, eta, log_alpha, log_beta, w1, w2, s1, s2, w1_0, w2_0, readouts, hist, o, gate,
                n_chunks=n_chunks, keep_every=keep_every, count=count, threshold=threshold,
                eta_max=eta_max, mode=mode, self_mod=titans.self_modifying, shape=shape,
                num_warps=KERNEL.num_warps or 4, trace=trace,
            )  # fmt: skip
        else:
            scratch = torch.empty(b * h, chunk * max(f, d), device=like.device, dtype=like.dtype)
            titans_chunk_fwd_kernel[(b * h,)](
                xh, q, k, v, eta, log_alpha, log_beta, w1, w2, s1, s2, w1_0, w2_0, *readouts,
                hist, o, gate, scratch, n, n_chunks, keep_every, count, threshold, eta_max,
                SELF_MOD=titans.self_modifying, MODE=mode, **shape,
                num_warps=KERNEL.num_warps or (4 if d * f <= 4096 else 8),
            )  # fmt: skip
    except OutOfResources as err:
        _TOO_LARGE.add(_key(layer, like))
        raise KernelTooLarge(str(err)) from err
    end = n_chunks // keep_every if n_chunks % keep_every == 0 else n_kept + n_chunks % 2
    if trace is not None:
        layer.surprise_trace.append(trace)
    return o, slots, end, gate, hist


class _FusedTitans(torch.autograd.Function):
    """Inputs: the tokens' `layer._static` (N_STATIC slots, None where a slot does not apply), the
    layer's initial state (weights, then momenta), then its parameters."""

    @staticmethod
    def forward(ctx, layer, hist, count, n_state, *tensors):
        static, state = tensors[:N_STATIC], tensors[N_STATIC : N_STATIC + n_state]
        params = tensors[N_STATIC + n_state :]
        every = layer.titans.boundary_every
        o, slots, end, gate, new_hist = chunk_forward(layer, static, state, hist, count, every)
        ctx.layer, ctx.params = layer, params
        ctx.present = [t is not None for t in static]
        if o.is_cuda and layer.titans.cuda_graphs and not _kernel_backward(layer, o):
            _capture_chunk_backward(layer, static, state, gate, params)
        ctx.save_for_backward(gate, *(t for t in static if t is not None), *slots)
        ctx.mark_non_differentiable(gate, new_hist)
        return (o, gate, new_hist, *(s[end] for s in slots))

    @staticmethod
    def backward(ctx, grad_o, _grad_gate, _grad_hist, *grad_end):
        """Last chunk first, from each chunk's start state (`chunk_starts_reversed`): with
        `KERNEL.backward="triton"` the backward kernels take every chunk back (`chunk_bwd`); else each
        chunk is recomputed through the layer's PyTorch `_segment` and differentiated. The gradients of
        the static inputs are gathered for the whole sequence, so that autograd takes the projections
        that made them back once."""
        layer, params = ctx.layer, ctx.params
        gate, *rest = ctx.saved_tensors
        given = iter(rest[: sum(ctx.present)])
        static = [next(given) if present else None for present in ctx.present]
        slots = rest[sum(ctx.present) :]
        chunk, every = layer.titans.chunk_size, layer.titans.boundary_every
        grad_s = [torch.zeros_like(s[0]) if g is None else g for g, s in zip(grad_end, slots)]
        if _kernel_backward(layer, gate):
            from triton.runtime.errors import OutOfResources

            from hope.ops.titans.chunk_bwd import backward_chunks

            try:
                starts = chunk_starts_reversed(layer, static, slots, gate, every)
                precision = "bf16" if KERNEL.dots == "bf16" else _dot_precision(gate.dtype)
                grad_static, grad_s, grad_params = backward_chunks(
                    layer,
                    static,
                    starts,
                    gate,
                    grad_o,
                    grad_s,
                    precision=precision,
                    num_warps=KERNEL.num_warps,
                )
                return (None, None, None, None, *grad_static, *grad_s, *grad_params)
            except OutOfResources as err:  # raised compiling the first launch, before any result is written
                _TOO_LARGE_BACKWARD.add(_key(layer, gate))
                warnings.warn(f"the Titans backward kernels do not fit this device ({err}); using 'vjp'")
        grad_static = [None if t is None else torch.zeros_like(t) for t in static]
        grad_params = [None] * len(params)
        chunk_backward = _chunk_backward_for(layer, gate.is_cuda)
        for c, start in chunk_starts_reversed(layer, static, slots, gate, every):
            piece = slice(c * chunk, (c + 1) * chunk)
            grads_c, grad_s, grads = chunk_backward(
                _tokens(static, piece), start, gate[..., piece], grad_o[:, :, piece], grad_s, params
            )
            for full, g in zip(grad_static, grads_c):
                if full is not None and g is not None:
                    full[:, :, piece] = g
            for i, g in enumerate(grads):
                if g is not None:
                    grad_params[i] = g.clone() if grad_params[i] is None else grad_params[i].add_(g)
        # a graph's outputs are its static buffers, overwritten by its next replay
        return (None, None, None, None, *grad_static, *(g.clone() for g in grad_s), *grad_params)


def chunk_starts_reversed(layer, static, slots, gate, every: int):
    """(c, the state at chunk c's start) for every chunk, last first, from the forward's slots kept at
    every `every`-th boundary: the kernel replays each group from its kept boundary with the forward's
    gate to recover the boundaries inside it."""
    chunk = layer.titans.chunk_size
    n_chunks = gate.shape[-1] // chunk
    for first in reversed(range(0, n_chunks, every)):
        last = min(first + every, n_chunks)
        kept = [s[first // every] for s in slots]
        if last - first > 1:
            span = slice(first * chunk, last * chunk)
            _, replayed, *_ = chunk_forward(
                layer, _tokens(static, span), kept, None, 0, 1, gate=gate[..., span]
            )
            bounds = [[s[c] for s in replayed] for c in range(last - first)]
        else:
            bounds = [kept]
        for c in reversed(range(first, last)):
            yield c, bounds[c - first]


def _kernel_backward(layer, like: torch.Tensor) -> bool:
    """Whether the chunks go back through the backward kernels (`KERNEL.backward="triton"`); a layer
    whose kernels did not fit the device goes the "vjp" way."""
    return KERNEL.backward == "triton" and _key(layer, like) not in _TOO_LARGE_BACKWARD


# configurations whose backward kernels did not fit the device
_TOO_LARGE_BACKWARD: set = set()


N_STATIC = 7
"""Slots of `SelfReferentialTitans._static`: q, x̂, k, v, η, log α, log β."""


def _tokens(static, span: slice) -> tuple:
    """The tokens `span` of `static` (every slot has the token axis third)."""
    return tuple(None if t is None else t[:, :, span] for t in static)


def _chunk_backward_for(layer, cuda: bool):
    """The per-chunk backward: `_segment` through autograd, compiled on CUDA and there replayed from
    the CUDA graph the forward captured for this layer and chunk shape (`titans.cuda_graphs`)."""
    backward = _backward_of(layer, compiled=cuda)
    graphs = _CAPTURED.of(layer)

    def replay(static_c, start, gate, grad_o, grad_end, params):
        graph = graphs.get(_graph_key(static_c, params))
        if graph is None:  # the parameters moved since the forward
            return backward(static_c, start, gate, grad_o, grad_end, params)
        return graph(static_c, start, gate, grad_o, grad_end)

    return replay if graphs and layer.titans.cuda_graphs else backward


def _graph_key(static_c, params) -> tuple:
    q = static_c[0]
    return (q.shape, q.dtype, q.device, addresses(params))


def _capture_chunk_backward(layer, static, state, gate, params) -> None:
    """Capture the chunk backward once per layer and chunk shape, here in the forward: a capture
    inside autograd's backward thread would make the legacy stream wait on the capturing one."""
    chunk = layer.titans.chunk_size
    static_c = _tokens(static, slice(0, chunk))
    key = _graph_key(static_c, params)
    if not _CAPTURED.wants(layer, key):
        return
    grad_o = torch.zeros_like(static_c[0])  # q's shape is the output's: (B, H, C, d_h)
    _CAPTURED.add(layer, key, _ChunkGraph(layer, static_c, state, gate[..., :chunk], grad_o, params))


# per layer: {(chunk shape, dtype, device, parameter addresses): its captured chunk backward}
_CAPTURED = Captures("Titans", "titans.cuda_graphs")


class _ChunkGraph:
    """One chunk's recompute + autograd captured as a CUDA graph: a replay per chunk instead of the
    compiled graph's few hundred launches and autograd's Python. Inputs are copied into static
    buffers; the outputs are static buffers too, valid until the next replay.

    It differentiates with respect to detached aliases of the parameters (same storage, so a replay
    reads their current values): the real ones carry the outer graph's AccumulateGrad nodes, and
    touching those in a capture makes the legacy stream wait on the capturing one."""

    def __init__(self, layer, static_c, start, gate, grad_o_like, params):
        self.device = gate.device
        self.present = [t is not None for t in static_c]
        given = [t for t in static_c if t is not None]
        self.inputs = [t.detach().clone() for t in (*given, gate, grad_o_like, *start, *start)]
        self.n_static, self.n_state = len(given), len(start)
        aliases = [p.detach().requires_grad_(p.requires_grad) for p in params]
        names = [name for name, _ in layer.named_parameters()]
        backward = partial(_backward_of(layer, compiled=True), stand_ins=dict(zip(names, aliases)))
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):  # warm-up off the capture: compilation, lazy backward graphs
            for _ in range(2):
                self._call(backward, aliases)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, pool=_CAPTURED.pool(self.device)):
            self.outputs = self._call(backward, aliases)

    def _static(self, given) -> tuple:
        given = iter(given)
        return tuple(next(given) if present else None for present in self.present)

    def _call(self, backward, params):
        given, (gate, grad_o, *rest) = self.inputs[: self.n_static], self.inputs[self.n_static :]
        start, grad_end = rest[: self.n_state], rest[self.n_state :]
        return backward(self._static(given), start, gate, grad_o, grad_end, params)

    def __call__(self, static_c, start, gate, grad_o, grad_end):
        values = (*(t for t in static_c if t is not None), gate, grad_o, *start, *grad_end)
        for buffer, value in zip(self.inputs, values, strict=True):
            buffer.copy_(value)
        self.graph.replay()
        return self.outputs


class _Recompute(torch.nn.Module):
    """One chunk's `_segment` as a module call, so `torch.func.functional_call` can swap in stand-in
    parameters (the layer is its only child)."""

    def __init__(self, layer, segment):
        super().__init__()
        self.layer, self.segment = layer, segment

    def forward(self, static_c, w_c, m_c, gate):
        return self.segment(None, w_c, m_c, w_c, None, 0, True, gate=gate, static=static_c)


def _chunk_backward(layer, segment, static_c, start, gate, grad_o, grad_end, params, stand_ins=None):
    """One chunk recomputed from its start state with autograd: grads of its static inputs (a tuple as
    `layer._static`'s, None where a slot is None), start state and `params`; `stand_ins` ({parameter
    name: tensor}) replace the layer's parameters for the recompute."""
    n_layers = len(layer.spec.shapes)
    wanted = [p for p in params if p.requires_grad]
    with torch.enable_grad():
        static_c = tuple(None if t is None else t.detach().requires_grad_() for t in static_c)
        given = [t for t in static_c if t is not None]
        s_c = [s.detach().requires_grad_() for s in start]
        w_c, m_c = s_c[:n_layers], (s_c[n_layers:] or None)
        recompute = _Recompute(layer, segment)
        if stand_ins:  # the captured path; the plain one runs the layer as it is, per chunk
            swapped = {f"layer.{name}": t for name, t in stand_ins.items()}
            o_c, w_next, m_next, *_ = torch.func.functional_call(
                recompute, swapped, (static_c, w_c, m_c, gate)
            )
        else:
            o_c, w_next, m_next, *_ = recompute(static_c, w_c, m_c, gate)
        grads = torch.autograd.grad(
            [o_c, *w_next, *(m_next or [])], [*given, *s_c, *wanted], [grad_o, *grad_end], allow_unused=True
        )
    grads_given = iter(grads[: len(given)])
    grad_static = tuple(None if t is None else next(grads_given) for t in static_c)
    rest = grads[len(given) :]
    grad_start = [torch.zeros_like(s) if g is None else g for g, s in zip(rest[: len(s_c)], s_c)]
    by_id = dict(zip(map(id, wanted), rest[len(s_c) :]))
    return grad_static, grad_start, [by_id.get(id(p)) for p in params]


def _backward_of(layer, compiled: bool):
    """The chunk backward `KERNEL.backward` names, for `layer`: (x_c, start, gate, grad_o, grad_end,
    params, stand_ins=None) → (grad x_c, grads of the start state, grad of each parameter or None)."""
    if KERNEL.backward == "vjp":
        return partial(_chunk_vjp, layer, compiled_fn(_vjp, fullgraph=True) if compiled else _vjp)
    return partial(_chunk_backward, layer, layer.chunk_step(compiled=compiled))


def _vjp(recompute, static_c, start, gate, grad_o, grad_end, wanted: dict):
    """One chunk's recompute and its vector-Jacobian product in one function of tensors: grads of the
    static inputs present (`static_c` without its None slots), of the start state and of the
    parameters in `wanted` ({name: tensor})."""
    n_layers = len(recompute.layer.spec.shapes)
    present = [t is not None for t in static_c]

    def chunk(given, s_c, p):
        it = iter(given)
        static = tuple(next(it) if here else None for here in present)
        w_c, m_c = s_c[:n_layers], (s_c[n_layers:] or None)
        swapped = {f"layer.{name}": t for name, t in p.items()}
        o_c, w_next, m_next, *_ = torch.func.functional_call(recompute, swapped, (static, w_c, m_c, gate))
        return o_c, [*w_next, *(m_next or [])]

    given = [t for t in static_c if t is not None]
    _, pull = torch.func.vjp(chunk, given, list(start), wanted)
    return pull((grad_o, list(grad_end)))


def _chunk_vjp(layer, vjp, static_c, start, gate, grad_o, grad_end, params, stand_ins=None):
    """`_chunk_backward` by `vjp` (`_vjp`, or it compiled). The vjp returns zeros for a parameter the
    chunk does not reach where autograd returns None, and a parameter nothing else reaches must keep
    no gradient (as in eager); so the first call per layer runs autograd once to learn which it reaches."""
    names = [name for name, _ in layer.named_parameters()]
    if "_chunk_reach" not in layer.__dict__:
        probe = _chunk_backward(
            layer, layer._segment, static_c, start, gate, grad_o, grad_end, params, stand_ins
        )
        # kept outside the module tree (no registration): the _Recompute holds the layer as its child,
        # and one module per layer lets a compiled vjp see the same module every call
        object.__setattr__(layer, "_chunk_reach", dict(zip(names, (g is not None for g in probe[2]))))
        object.__setattr__(layer, "_chunk_recompute", _Recompute(layer, layer._segment))
    given = stand_ins or dict(layer.named_parameters())
    wanted = {n: given[n] for n, p in zip(names, params) if p.requires_grad and layer._chunk_reach[n]}
    static_c = tuple(None if t is None else t.detach() for t in static_c)
    grad_given, grad_start, grad_params = vjp(
        layer._chunk_recompute, static_c, [s.detach() for s in start], gate, grad_o, grad_end, wanted
    )
    it = iter(grad_given)
    grad_static = tuple(None if t is None else next(it) for t in static_c)
    return grad_static, list(grad_start), [grad_params.get(n) for n in names]


def fused_segment(layer, xc: torch.Tensor, weights, momentum, hist: torch.Tensor, count: int):
    """Whole chunks of xc through the kernel; (o, end weights, end momenta, new hist, new count,
    gate pass rate)."""
    n = xc.shape[1]
    state = [*weights, *(momentum or [])]
    static = layer._static(xc)  # autograd takes these projections back once, for the whole sequence
    if torch.is_grad_enabled():
        params = list(layer.parameters())
        o, gate, new_hist, *end = _FusedTitans.apply(layer, hist, count, len(state), *static, *state, *params)
    else:
        o, slots, last, gate, new_hist = chunk_forward(layer, static, state, hist, count, keep_every=n + 1)
        end = [s[last] for s in slots]
    end_w, end_m = end[: len(weights)], (end[len(weights) :] if momentum is not None else None)
    if layer.titans.surprise.mode == "none":
        new_hist = hist
    else:
        count = min(count + n, layer.titans.surprise.window)
    return o, end_w, end_m, new_hist.to(hist.dtype), count, gate.mean()
