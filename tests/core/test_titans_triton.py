"""impl="triton" (hope.ops.titans) equals impl="chunked": outputs, end states, every gradient.

On a machine without a GPU the kernel runs in Triton's interpreter (tests/conftest.py); on the GPU
the same tests run the compiled kernel. Shapes are the smallest the kernel takes (chunk, head width
and hidden width 16 or 32), with a tail shorter than a chunk so both paths meet in one call.
"""

import warnings

import pytest
import torch

from hope.config import ModelConfig
from hope.layers.self_ref_titans import SelfReferentialTitans
from hope.models.lm import LanguageModel

pytest.importorskip("triton")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# float64 in the interpreter; float32 with IEEE products on the GPU
DTYPE = torch.float64 if DEVICE == "cpu" else torch.float32
TOL = 1e-10 if DTYPE == torch.float64 else 2e-4

VARIANTS = {
    "hope": ("hope", {}),
    "no-selfmod": ("hope-no-selfmod", {}),
    "no-surprise-no-clip-no-sgv": (
        "hope-no-surprise",
        {"titans.error_clip": 0.0, "titans.self_generated_values": False},
    ),
    "matrix": ("hope", {"titans.memory": "matrix", "titans.memory_depth": 1}),
    "gd-dot-silu": (
        "hope",
        {"titans.update_rule": "gd", "titans.objective": "dot", "titans.activation": "silu"},
    ),
    "absolute-gate-decay-to-zero": (
        "hope",
        {"titans.surprise.mode": "absolute", "titans.surprise.threshold": 0.3, "titans.decay_to": "zero"},
    ),
    "titans-lmm": ("titans", {}),
    "momentum-selfmod-matrix-decay-to-zero": (
        "hope",
        {
            "titans.update_rule": "momentum",
            "titans.memory": "matrix",
            "titans.memory_depth": 1,
            "titans.decay_to": "zero",
        },
    ),
    "linear-attention": ("linear-attention", {}),
    "deltanet": ("deltanet", {}),
    "gated-deltanet": ("gated-deltanet", {}),
    "titans-inclusive-read": ("titans", {"titans.retrieval": "inclusive"}),
    "static-matrix-short-window": (
        "hope-no-selfmod",
        {"titans.memory": "matrix", "titans.memory_depth": 1, "titans.surprise.window": 16},
    ),
}


def _layer(preset, **over):
    cfg = ModelConfig.preset(preset, d_model=32, n_heads=2, **{"titans.chunk_size": 16, **over})
    torch.manual_seed(0)
    layer = SelfReferentialTitans(cfg).to(DEVICE, DTYPE)
    with torch.no_grad():  # non-trivial η and α read-outs, so the generation path matters
        for name, p in layer.named_parameters():
            if "readout" in name or any(k in name for k in ("eta_proj", "alpha_proj", "beta_proj")):
                p.normal_(0, 0.5)
    return layer


def _run(layer, x, impl, pieces=(None,)):
    """Forward in pieces, a loss on outputs and end state, backward; returns everything compared."""
    layer.zero_grad()
    x = x.clone().requires_grad_()
    outs, state, t = [], None, 0
    for n in pieces:
        y, state = layer(x[:, t : None if n is None else t + n], state, impl=impl)
        outs.append(y)
        t += 0 if n is None else n
    y = torch.cat(outs, dim=1)
    probe = torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=y.dtype).to(y.device)
    end = state["weights"] + (state["momentum"] or [])
    loss = (y * probe).sum() + sum((w * w).sum() for w in end)
    loss.backward()
    grads = {n: p.grad for n, p in layer.named_parameters() if p.grad is not None}
    return y.detach(), [w.detach() for w in end], state["surprise_hist"], x.grad, grads


def _assert_same(a, b):
    y_a, w_a, h_a, gx_a, g_a = a
    y_b, w_b, h_b, gx_b, g_b = b
    torch.testing.assert_close(y_b, y_a, atol=TOL, rtol=TOL)
    for wa, wb in zip(w_a, w_b, strict=True):
        torch.testing.assert_close(wb, wa, atol=TOL, rtol=TOL)
    torch.testing.assert_close(h_b, h_a, atol=TOL, rtol=TOL)
    torch.testing.assert_close(gx_b, gx_a, atol=TOL, rtol=TOL)
    assert g_a.keys() == g_b.keys()
    for name in g_a:
        torch.testing.assert_close(g_b[name], g_a[name], atol=TOL, rtol=TOL, msg=name)
    if "init_weights.0" in g_a:  # the meta-learned initial memories learn (frozen zeros need not)
        assert g_a["init_weights.0"].abs().sum() > 0


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_triton_equals_chunked(variant, monkeypatch):
    """The kernel forward with the PyTorch chunk backward (KERNEL.backward="vjp": a chunk's recompute
    and backward as one torch.func.vjp, the way a layer whose backward kernels do not fit goes);
    `test_kernel_backward_equals_chunked` checks the default, the backward kernels."""
    from hope.ops.titans import fused

    monkeypatch.setattr(fused.KERNEL, "backward", "vjp")
    preset, over = VARIANTS[variant]
    layer = _layer(preset, **over)
    x = torch.randn(1, 40, 32, dtype=DTYPE, device=DEVICE)
    _assert_same(_run(layer, x, "chunked"), _run(layer, x, "triton"))


@pytest.mark.parametrize("every", [2, 3])
def test_triton_keeping_every_kth_boundary_equals_chunked(every, monkeypatch):
    """The backward replays the chunks between kept boundaries with the forward's gate: same gradients
    (here through the PyTorch chunk backward; the kernels' own test is
    `test_kernel_backward_over_replayed_boundaries_and_batch_equals_chunked`)."""
    from hope.ops.titans import fused

    monkeypatch.setattr(fused.KERNEL, "backward", "vjp")
    layer = _layer("hope", **{"titans.boundary_every": every})
    x = torch.randn(1, 5 * 16 + 3, 32, dtype=DTYPE, device=DEVICE)
    _assert_same(_run(layer, x, "chunked"), _run(layer, x, "triton"))


def test_triton_streamed_in_pieces_equals_chunked_whole():
    """Pieces that start mid-chunk: the PyTorch path realigns, the kernel takes the whole chunks."""
    layer = _layer("hope")
    x = torch.randn(1, 56, 32, dtype=DTYPE, device=DEVICE)
    _assert_same(_run(layer, x, "chunked"), _run(layer, x, "triton", pieces=(5, 35, None)))


def test_triton_without_grad_equals_chunked():
    """Inference keeps two weight slots instead of one per chunk boundary; same numbers."""
    layer = _layer("hope")
    x = torch.randn(1, 48, 32, dtype=DTYPE, device=DEVICE)
    with torch.no_grad():
        y_a, s_a = layer(x, None, impl="chunked")
        y_b, s_b = layer(x, None, impl="triton")
    torch.testing.assert_close(y_b, y_a, atol=TOL, rtol=TOL)
    for wa, wb in zip(s_a["weights"], s_b["weights"], strict=True):
        torch.testing.assert_close(wb, wa, atol=TOL, rtol=TOL)


@pytest.mark.parametrize("backward", ["vjp", "triton"])
def test_triton_whole_model_equals_chunked(backward, monkeypatch):
    from hope.ops.titans import fused

    monkeypatch.setattr(fused.KERNEL, "backward", backward)
    cfg = ModelConfig.preset(
        "hope", d_model=32, n_heads=2, **{"titans.chunk_size": 16, "cms.chunk_sizes": (16, 32)}
    )
    torch.manual_seed(0)
    model = LanguageModel(cfg).to(DEVICE, DTYPE)
    ids = torch.randint(0, cfg.vocab_size, (1, 40), device=DEVICE)
    results = []
    for impl in ("chunked", "triton"):
        model.config.impl = impl
        model.zero_grad()
        logits, _ = model(ids)
        logits.logsumexp(-1).sum().backward()
        results.append((logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    torch.testing.assert_close(results[1][0], results[0][0], atol=TOL, rtol=TOL)
    for name, g in results[0][1].items():
        torch.testing.assert_close(results[1][1][name], g, atol=TOL, rtol=TOL, msg=name)


def test_triton_refuses_what_it_cannot_run_and_auto_says_why():
    layer = _layer("hope", **{"titans.memory_depth": 3})
    x = torch.randn(1, 16, 32, dtype=DTYPE, device=DEVICE)
    with pytest.raises(ValueError, match="memory_depth=3"):
        layer(x, None, impl="triton")
    odd = _layer("hope", **{"titans.chunk_size": 12})
    with pytest.raises(ValueError, match="titans.chunk_size=12"):
        odd(x, None, impl="triton")
    if DEVICE == "cuda":
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            layer(x, None, impl="auto")
        assert any("memory_depth=3" in str(w.message) for w in caught)


def test_a_kernel_too_large_for_the_device_is_refused_by_name(monkeypatch):
    """Triton reports shared-memory overflow only at launch; the layer then refuses (triton) or falls
    back (auto) naming it, and never tries that configuration again."""
    from hope.ops.titans import fused

    def too_large(layer, static, *args, **kwargs):
        fused._TOO_LARGE.add(fused._key(layer, static[0]))
        raise fused.KernelTooLarge("out of resource: shared memory")

    monkeypatch.setattr(fused, "chunk_forward", too_large)
    monkeypatch.setattr(fused, "_TOO_LARGE", set())
    layer = _layer("hope")
    x = torch.randn(1, 32, 32, dtype=DTYPE, device=DEVICE)
    with pytest.raises(ValueError, match="more shared memory than this device has"):
        layer(x, None, impl="triton")
    assert fused.unsupported_reason(layer, x) is not None


def test_wide_momentum_memories_are_refused_up_front_only_by_the_one_launch_kernel(monkeypatch):
    """64 x 128 MLP memories with momentum overflow the one-launch kernel's shared memory (measured);
    the split kernel holds one memory a program, so it is tried (and falls back if it does not fit)."""
    from hope.ops.titans import fused

    cfg = ModelConfig.preset("titans", size="small", vocab_size=64, impl="triton")
    layer = SelfReferentialTitans(cfg)
    assert (layer.head_dim, layer.spec.hidden, cfg.titans.update_rule) == (64, 128, "momentum")
    x = torch.randn(1, 16, cfg.d_model, device=DEVICE)
    assert fused.unsupported_reason(layer, x) is None
    monkeypatch.setattr(fused.KERNEL, "split", False)
    assert "exceeds shared memory" in fused.unsupported_reason(layer, x)


def test_chunk_backward_through_stand_in_parameters_equals_the_real_ones():
    """The CUDA-graph backward differentiates one chunk with respect to detached aliases of the
    parameters (the capture must not touch the real ones' autograd nodes): same gradients, and they
    follow the parameters' current values because the aliases share storage."""
    from hope.ops.titans import fused

    layer = _layer("hope")
    params = list(layer.parameters())
    torch.manual_seed(3)
    x_c = torch.randn(2, 16, 32, dtype=DTYPE, device=DEVICE)
    start = [w.expand(2, *w.shape).detach().clone() for w in layer.init_weights]
    start = [s + 0.1 * torch.randn_like(s) for s in start]
    gate = torch.ones(2, 2, 16, dtype=DTYPE, device=DEVICE)
    grad_o = torch.randn(2, 2, 16, layer.head_dim, dtype=DTYPE, device=DEVICE)
    grad_end = [torch.randn_like(s) for s in start]
    aliases = [p.detach().requires_grad_(p.requires_grad) for p in params]
    stand_ins = dict(zip([n for n, _ in layer.named_parameters()], aliases))

    static_c = layer._static(x_c)

    def backward(wrt, **kwargs):
        return fused._chunk_backward(
            layer, layer._segment, static_c, start, gate, grad_o, grad_end, wrt, **kwargs
        )

    real, stand = backward(params), backward(aliases, stand_ins=stand_ins)
    for a, b in zip([*stand[0], *stand[1], *stand[2]], [*real[0], *real[1], *real[2]], strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, atol=TOL, rtol=TOL)
    assert sum(g is not None for g in stand[2]) > len(layer.init_weights)
    with torch.no_grad():  # an in-place update of the real parameter reaches the alias
        layer.eta_readout.add_(0.5)
    assert not torch.allclose(backward(aliases, stand_ins=stand_ins)[0][0], stand[0][0])


def test_a_layer_whose_parameters_keep_moving_stops_capturing(monkeypatch):
    """Each move of the parameters (FSDP resharding) forces a new CUDA-graph capture; after a few
    the layer warns once and its backward runs without graphs, instead of capturing every step."""
    from hope.ops.titans import fused

    captured = []
    monkeypatch.setattr(fused, "_ChunkGraph", lambda layer, *args: captured.append(layer) or object())
    layer = _layer("hope")
    with torch.no_grad():
        xc = layer._static(torch.randn(1, 32, 32, dtype=DTYPE, device=DEVICE))
    state = [w.expand(1, *w.shape) for w in layer.init_weights]
    gate = torch.ones(1, 2, 32, dtype=DTYPE, device=DEVICE)
    params = list(layer.parameters())
    fused._capture_chunk_backward(layer, xc, state, gate, params)
    fused._capture_chunk_backward(layer, xc, state, gate, params)  # same addresses: kept
    assert len(captured) == 1

    def moved():
        return [p.detach().clone() for p in params]  # the same values at new addresses

    moves = fused._CAPTURED.max_moves
    for _ in range(moves - 1):
        fused._capture_chunk_backward(layer, xc, state, gate, moved())
    assert len(captured) == moves
    with pytest.warns(UserWarning, match="Titans layer moved .* without CUDA graphs"):
        fused._capture_chunk_backward(layer, xc, state, gate, moved())
    fused._capture_chunk_backward(layer, xc, state, gate, moved())
    assert len(captured) == moves
    assert not fused._CAPTURED.of(layer)  # the stale capture is gone and no new one is made


def _tensors(tree):
    if isinstance(tree, torch.Tensor):
        return [tree]
    if isinstance(tree, dict):
        return [t for key in sorted(tree) for t in _tensors(tree[key])]
    if isinstance(tree, list):
        return [t for v in tree for t in _tensors(v)]
    return []


# every switch of the step kernel in CI (the interpreter takes ~0.6 s a step); the rest with -m slow
STEP_VARIANTS = {
    "hope", "no-selfmod", "titans-lmm", "gd-dot-silu", "absolute-gate-decay-to-zero", "matrix",
    "titans-inclusive-read",
}  # fmt: skip


@pytest.mark.parametrize(
    "variant",
    [v if v in STEP_VARIANTS else pytest.param(v, marks=pytest.mark.slow) for v in sorted(VARIANTS)],
)
def test_triton_step_equals_the_pytorch_step(variant):
    """The one-token kernel (`fused_recurrent`) equals `decode_step`'s PyTorch path over a stream that
    crosses a chunk boundary: every output and every buffer (weights, anchors, momenta, history)."""
    preset, over = VARIANTS[variant]
    layer = _layer(preset, **over)
    x = torch.randn(2, 5 + 14, 32, dtype=DTYPE, device=DEVICE)
    results = []
    with torch.no_grad():
        _, prompt = layer(x[:, :5], None, impl="chunked")
        for impl in ("chunked", "triton"):
            layer.config.impl = impl
            state = layer.static_state(prompt, 2, 0, DTYPE)
            ys = torch.cat([layer.decode_step(x[:, t : t + 1], state) for t in range(5, x.shape[1])], dim=1)
            results.append([ys, *_tensors(state)])
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(b, a, atol=TOL, rtol=TOL)


@pytest.mark.parametrize(
    "options, variants, tol",
    [
        ({"share_inverse": False}, ("hope", "matrix", "no-selfmod"), TOL),
        (
            {"split": False},
            (
                "hope",
                "matrix",
                "no-selfmod",
                "titans-lmm",
                "momentum-selfmod-matrix-decay-to-zero",
                "absolute-gate-decay-to-zero",
                "gd-dot-silu",
                "titans-inclusive-read",
            ),
            TOL,
        ),  # fmt: skip
        # bfloat16 operands round every product to 8 bits of mantissa; Triton's interpreter has no
        # bfloat16 arithmetic (it multiplies the raw bits), so this one runs on the GPU only
        pytest.param(
            {"dots": "bf16", "num_warps": 8},
            ("hope",),
            5e-2,
            marks=pytest.mark.skipif(DEVICE == "cpu", reason="the interpreter has no bfloat16 arithmetic"),
        ),
    ],
    ids=["separate_inverses", "one_launch", "bf16_dots"],
)
def test_kernel_variants_equal_chunked(options, variants, tol, monkeypatch):
    """The kernel's tuning variants (`fused.KERNEL`) compute the same chunks as the default."""
    from hope.ops.titans import fused

    for name, value in options.items():
        monkeypatch.setattr(fused.KERNEL, name, value)
    for variant in variants:
        preset, over = VARIANTS[variant]
        layer = _layer(preset, **over)
        x = torch.randn(1, 40, 32, dtype=DTYPE, device=DEVICE)
        with torch.no_grad():
            y_ref, s_ref = layer(x, None, impl="chunked")
            y, s = layer(x, None, impl="triton")
        torch.testing.assert_close(y, y_ref, atol=tol, rtol=tol, msg=variant)
        for w, w_ref in zip(s["weights"], s_ref["weights"], strict=True):
            torch.testing.assert_close(w, w_ref, atol=tol, rtol=tol, msg=variant)


def test_one_launch_kernel_trains_like_chunked(monkeypatch):
    """The one-launch forward (`chunk_fwd`, split off) also replays the groups between kept boundaries
    with the forward's gate in the backward: outputs, end state and every gradient equal `chunked`'s."""
    from hope.ops.titans import fused

    monkeypatch.setattr(fused.KERNEL, "split", False)
    layer = _layer("hope", **{"titans.boundary_every": 2})
    x = torch.randn(1, 4 * 16 + 3, 32, dtype=DTYPE, device=DEVICE)
    _assert_same(_run(layer, x, "chunked"), _run(layer, x, "triton"))


def test_bad_kernel_options_are_refused(monkeypatch):
    from hope.ops.titans import fused

    monkeypatch.setattr(fused.KERNEL, "dots", "fp8")
    layer = _layer("hope")
    with pytest.raises(ValueError, match="KERNEL.dots must be one of"):
        layer(torch.randn(1, 16, 32, dtype=DTYPE, device=DEVICE), None, impl="triton")


def _chunk_inputs(layer, batch=2):
    torch.manual_seed(3)
    x_c = torch.randn(batch, 16, 32, dtype=DTYPE, device=DEVICE)
    start = [w.expand(batch, *w.shape).detach().clone() for w in layer.init_weights]
    if layer.titans.update_rule == "momentum":
        start += [torch.zeros_like(s) for s in start]
    start = [s + 0.1 * torch.randn_like(s) for s in start]
    gate = (torch.rand(batch, layer.n_heads, 16, device=DEVICE) > 0.3).to(DTYPE)
    grad_o = torch.randn(batch, layer.n_heads, 16, layer.head_dim, dtype=DTYPE, device=DEVICE)
    with torch.no_grad():
        static_c = layer._static(x_c)
    return static_c, start, gate, grad_o, [torch.randn_like(s) for s in start]


@pytest.mark.parametrize("variant", ["hope", "no-selfmod", "titans-lmm", "matrix", "gd-dot-silu"])
def test_chunk_backward_as_one_vjp_equals_autograd(variant):
    """KERNEL.backward="vjp" (recompute and backward as one torch.func.vjp) gives autograd's gradients
    of the input, start state and parameters, None where autograd has None, also under no_grad (as in
    autograd's backward) and through stand-in parameters (the captured path)."""
    from hope.ops.titans import fused

    preset, over = VARIANTS[variant]
    layer = _layer(preset, **over)
    params = list(layer.parameters())
    inputs = _chunk_inputs(layer)
    ref = fused._chunk_backward(layer, layer._segment, *inputs, params)
    aliases = [p.detach().requires_grad_(p.requires_grad) for p in params]
    stand_ins = dict(zip([n for n, _ in layer.named_parameters()], aliases))
    with torch.no_grad():
        got = fused._chunk_vjp(layer, fused._vjp, *inputs, params)
        stand = fused._chunk_vjp(layer, fused._vjp, *inputs, aliases, stand_ins=stand_ins)
    for out in (got, stand):
        for a, b in zip([*out[0], *out[1], *out[2]], [*ref[0], *ref[1], *ref[2]], strict=True):
            assert (a is None) == (b is None)
            if a is not None:
                torch.testing.assert_close(a, b, atol=TOL, rtol=TOL)
    assert sum(g is not None for g in got[2]) >= len(layer.init_weights)


def test_the_one_vjp_compiles_as_one_graph():
    """The vjp traces without a graph break (fullgraph=True), so on CUDA it is one compiled graph; here
    through aot_eager, the compiler's front end without code generation."""
    from hope.ops.titans import fused

    layer = _layer("hope")
    params = list(layer.parameters())
    inputs = _chunk_inputs(layer)
    ref = fused._chunk_backward(layer, layer._segment, *inputs, params)
    compiled = torch.compile(fused._vjp, backend="aot_eager", fullgraph=True, dynamic=False)
    got = fused._chunk_vjp(layer, compiled, *inputs, params)
    for a, b in zip([*got[0], *got[2]], [*ref[0], *ref[2]], strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, atol=TOL, rtol=TOL)


def test_the_compiled_chunk_recompute_takes_the_static_inputs():
    """The chunk recompute the CUDA path compiles (`chunk_step(compiled=True)`: `_segment` with the
    tokens' static inputs in place of the tokens) gives the eager gradients; through aot_eager."""
    from functools import partial

    from hope.ops.titans import fused

    layer = _layer("hope")
    params = list(layer.parameters())
    inputs = _chunk_inputs(layer)
    ref = fused._chunk_backward(layer, layer._segment, *inputs, params)
    segment = torch.compile(SelfReferentialTitans._segment, backend="aot_eager", dynamic=False)
    got = fused._chunk_backward(layer, partial(segment, layer), *inputs, params)
    for a, b in zip([*got[0], *got[1], *got[2]], [*ref[0], *ref[1], *ref[2]], strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, atol=TOL, rtol=TOL)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_kernel_backward_equals_chunked(variant, monkeypatch):
    """KERNEL.backward="triton" (`ops.titans.chunk_bwd`: the chunk backward as kernels, nothing of
    PyTorch's per chunk) gives the chunked path's output gradients, end-state and parameter gradients."""
    from hope.ops.titans import chunk_bwd, fused

    monkeypatch.setattr(fused.KERNEL, "backward", "triton")
    preset, over = VARIANTS[variant]
    layer = _layer(preset, **over)
    assert fused._kernel_backward(layer, torch.empty(1, dtype=DTYPE, device=DEVICE))
    called = []
    real = chunk_bwd.backward_chunks
    monkeypatch.setattr(chunk_bwd, "backward_chunks", lambda *a, **kw: called.append(1) or real(*a, **kw))
    x = torch.randn(1, 40, 32, dtype=DTYPE, device=DEVICE)
    _assert_same(_run(layer, x, "chunked"), _run(layer, x, "triton"))
    assert called  # the kernels took it back, not the PyTorch fallback


@pytest.mark.parametrize("preset,every", [("hope", 1), ("hope", 3), ("titans", 3)])
def test_kernel_backward_over_replayed_boundaries_and_batch_equals_chunked(preset, every, monkeypatch):
    """Boundaries replayed between kept ones, two sequences a batch (gradients of W_0 and of the
    read-outs summed over it), mid-chunk pieces before and after."""
    from hope.ops.titans import fused

    monkeypatch.setattr(fused.KERNEL, "backward", "triton")
    layer = _layer(preset, **{"titans.boundary_every": every})
    x = torch.randn(2, 5 * 16 + 3, 32, dtype=DTYPE, device=DEVICE)
    _assert_same(_run(layer, x, "chunked"), _run(layer, x, "triton", pieces=(5, None)))


@pytest.mark.parametrize("variant", ["hope", "no-surprise-no-clip-no-sgv", "absolute-gate-decay-to-zero"])
def test_triton_records_the_surprise_trace_of_chunked(variant):
    """`surprise_trace` (hope.analysis.surprise_profile) on the kernel path: M_mem's per-token ‖∇ℓ‖, as
    the chunked path records it chunk by chunk (here whole chunks only, so token for token)."""
    preset, over = VARIANTS[variant]
    layer = _layer(preset, **over)
    x = torch.randn(2, 48, 32, dtype=DTYPE, device=DEVICE)
    traces = {}
    for impl in ("chunked", "triton"):
        layer.surprise_trace = []
        with torch.no_grad():
            layer(x, None, impl=impl)
        traces[impl] = torch.cat(layer.surprise_trace, dim=-1)
    layer.surprise_trace = None
    assert traces["triton"].shape == (2, 2, 48)
    torch.testing.assert_close(traces["triton"], traces["chunked"], atol=TOL, rtol=TOL)


def test_kernel_backward_too_large_for_the_device_falls_back_to_the_vjp(monkeypatch):
    """Shared memory is checked at a kernel's first launch: the backward then takes the PyTorch chunk
    path for this configuration, warns once, and does not try the kernels again."""
    from triton.runtime.errors import OutOfResources

    from hope.ops.titans import chunk_bwd, fused

    monkeypatch.setattr(fused.KERNEL, "backward", "triton")
    monkeypatch.setattr(fused, "_TOO_LARGE_BACKWARD", set())
    tries = []

    def too_large(*args, **kwargs):
        tries.append(1)
        raise OutOfResources(360448, 232448, "shared memory")

    monkeypatch.setattr(chunk_bwd, "backward_chunks", too_large)
    layer = _layer("hope")
    x = torch.randn(1, 40, 32, dtype=DTYPE, device=DEVICE)
    expected = _run(layer, x, "chunked")
    with pytest.warns(UserWarning, match="do not fit this device"):
        _assert_same(expected, _run(layer, x, "triton"))
    _assert_same(expected, _run(layer, x, "triton"))
    assert len(tries) == 1
