"""The CMS's recomputing training path (hope.ops.cms.segments) equals the plain segment walk:
outputs, end state, and the gradients of the input, every parameter and the start state."""

import dataclasses

import pytest
import torch

from hope.config import ModelConfig
from hope.layers.cms import ContinuumMemory
from hope.ops.cms import segments
from hope.ops.cms.segments import segments_forward

D64 = torch.float64


def _cms(**over) -> ContinuumMemory:
    cfg = ModelConfig.preset(
        "hope", d_model=8, n_heads=2, **{"cms.chunk_sizes": (3, 6), "cms.error": "local", "cms.lr": 0.5, **over}
    )
    torch.manual_seed(0)
    return ContinuumMemory(cfg).double()


def _leaves(state):
    """The state's tensors as fresh leaves that require grad (None kept), and the list of them."""
    leaves = []

    def leaf(t):
        t = t.detach().clone().requires_grad_()
        leaves.append(t)
        return t

    new = {
        "pos": state["pos"],
        "fast": [[leaf(w) for w in level] for level in state["fast"]],
        "pending": [None if sums is None else [leaf(g) for g in sums] for sums in state["pending"]],
    }
    return new, leaves


def _run(module, x, state, recompute: bool):
    """(output, end state, grads of x, of every parameter, of the start state's tensors)."""
    module.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_()
    start, leaves = _leaves(state) if state is not None else (module.init_state(x.shape[0]), [])
    if recompute:
        y, end = segments_forward(module, x, start, module._segment, cuda_graphs=False)
    else:
        y, end = module(x, start)
    # a loss that reads the output and every end-state tensor, so all of their gradients flow
    weights = torch.Generator().manual_seed(5)
    loss = (y * torch.randn(y.shape, generator=weights, dtype=y.dtype)).sum()
    for level in (*end["fast"], *(p for p in end["pending"] if p is not None)):
        for w in level:
            loss = loss + (w * torch.randn(w.shape, generator=weights, dtype=w.dtype)).sum()
    loss.backward()
    grads = [None if p.grad is None else p.grad.clone() for p in module.parameters()]
    return y.detach(), end, x.grad.clone(), grads, [t.grad for t in leaves]


def _assert_same(got, want):
    y, end, gx, gp, gs = got
    y0, end0, gx0, gp0, gs0 = want
    close = dict(rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(y, y0, **close)
    assert end["pos"] == end0["pos"]
    for a, b in zip(end["fast"], end0["fast"], strict=True):
        for u, v in zip(a, b, strict=True):
            torch.testing.assert_close(u, v.expand_as(u), **close)
    for a, b in zip(end["pending"], end0["pending"], strict=True):
        assert (a is None) == (b is None)
        for u, v in zip(a or [], b or [], strict=True):
            torch.testing.assert_close(u, v, **close)
    torch.testing.assert_close(gx, gx0, **close)
    for a, b in zip(gp, gp0, strict=True):
        if b is None:
            assert a is None or not a.abs().any()
        else:
            torch.testing.assert_close(a, b, **close)
    for a, b in zip(gs, gs0, strict=True):
        torch.testing.assert_close(a, b, **close)


@pytest.mark.parametrize("level", ["residual", "swiglu"])
@pytest.mark.parametrize("variant", ["sequential", "nested", "independent"])
def test_recomputed_segments_equal_the_plain_walk(variant, level):
    # 40 tokens: 14 segments of 3 (√14 → checkpoints every 4, the last block shorter), both levels step
    module = _cms(**{"cms.variant": variant, "cms.level": level})
    x = torch.randn(2, 40, 8, dtype=D64, generator=torch.Generator().manual_seed(1))
    _assert_same(_run(module, x, None, recompute=True), _run(module, x, None, recompute=False))


@pytest.mark.parametrize("variant", ["sequential", "nested"])
def test_recomputed_segments_from_a_state_mid_segment_with_pending_sums(variant):
    """The stream is at token 7: inside a 3-token segment, the 6-token level's error sum pending."""
    module = _cms(**{"cms.variant": variant})
    with torch.no_grad():
        _, state = module(torch.randn(2, 7, 8, dtype=D64, generator=torch.Generator().manual_seed(2)))
    assert state["pending"][1] is not None and state["pos"] % 3
    x = torch.randn(2, 23, 8, dtype=D64, generator=torch.Generator().manual_seed(3))
    _assert_same(_run(module, x, state, recompute=True), _run(module, x, state, recompute=False))


def test_a_level_that_just_stepped_holds_no_error_sum():
    module = _cms()
    x = torch.randn(1, 12, 8, dtype=D64)
    _, end = segments_forward(module, x, module.init_state(1), module._segment, cuda_graphs=False)
    assert end["pending"] == [None, None]  # 12 is a boundary of both levels
    _, end = segments_forward(module, x[:, :9], module.init_state(1), module._segment, cuda_graphs=False)
    assert end["pending"][0] is None and end["pending"][1] is not None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the captured backward needs a GPU")
@pytest.mark.parametrize("graphs", [False, True], ids=["eager", "cuda-graphs"])
def test_recomputing_training_path_on_cuda_equals_the_plain_walk(graphs, monkeypatch):
    """impl='auto' on CUDA with the path switched on: the compiled segment, its backward recomputed
    (and captured) per segment, against the eager walk on the same weights; two steps of pieces that
    start and end inside segments, so the captures are replayed and the state carries."""
    monkeypatch.setattr(segments, "OPTIONS", segments.SegmentOptions(enabled=True, cuda_graphs=graphs))
    torch.manual_seed(0)
    cfg = ModelConfig.preset("hope", size="tiny", impl="auto", **{"cms.chunk_sizes": (8, 32)})
    auto = ContinuumMemory(cfg).cuda()
    plain = ContinuumMemory(dataclasses.replace(cfg, impl="chunked")).cuda()
    plain.load_state_dict(auto.state_dict())
    x = torch.randn(2, 100, cfg.d_model, device="cuda")
    for _ in range(2):
        results = []
        for layer in (auto, plain):
            layer.zero_grad(set_to_none=True)
            xi = x.clone().requires_grad_()
            state, ys = None, []
            for piece in (xi[:, :13], xi[:, 13:77], xi[:, 77:]):
                y, state = layer(piece, state)
                ys.append(y)
            y = torch.cat(ys, 1)
            (y.square().sum() + sum(w.square().sum() for level in state["fast"] for w in level)).backward()
            results.append((y.detach(), xi.grad, [p.grad for p in layer.parameters()]))
        (y, gx, gp), (y0, gx0, gp0) = results
        torch.testing.assert_close(y, y0, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(gx, gx0, rtol=1e-3, atol=1e-4)
        for a, b in zip(gp, gp0, strict=True):
            if b is not None:
                torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)


def test_the_captured_path_differentiates_stand_ins_of_the_parameters():
    """What a CUDA graph records: one segment's backward with detached aliases swapped in for the
    parameters gives the gradients the parameters themselves get."""
    module = _cms()
    state = module.init_state(2)
    flat = [t.detach().clone() for t in segments._flatten(state)]
    sizes = [2, 2]
    x_s = torch.randn(2, 3, 8, dtype=D64, generator=torch.Generator().manual_seed(6))
    grad_delta = torch.randn_like(x_s)
    grad_next = [torch.randn_like(t) for t in flat]
    params = list(module.parameters())
    aliases = [p.detach().requires_grad_() for p in params]
    names = [n for n, _ in module.named_parameters()]
    args = (module, module._segment, sizes, 0, x_s, flat, grad_delta, grad_next)
    want = segments._segment_backward(*args, params)
    got = segments._segment_backward(*args, aliases, stand_ins=dict(zip(names, aliases)))
    torch.testing.assert_close(got[0], want[0])
    for a, b in zip(got[1], want[1], strict=True):
        torch.testing.assert_close(a, b)
    assert sum(g is not None for g in want[2]) == 4  # the key and value read-outs of both levels
    for a, b in zip(got[2], want[2], strict=True):
        assert (a is None) == (b is None)
        if b is not None:
            torch.testing.assert_close(a, b)


def test_the_recompute_runs_under_the_forwards_autocast():
    """Under (CPU) bf16 autocast the recomputed segments take the forward's bf16 products, so the
    gradients are the plain walk's, not those of a float32 recompute."""
    module = _cms().float()
    x = torch.randn(2, 20, 8, generator=torch.Generator().manual_seed(7))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, want = _run(module, x, None, recompute=True), _run(module, x, None, recompute=False)
    for a, b in zip(got[3], want[3], strict=True):  # a float32 recompute is 0.3-1.2% off here
        if b is not None:
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # the input's gradient sums its bf16 contributions in another order: 0.2% (0.8% in float32)
    assert (got[2] - want[2]).norm() < 4e-3 * want[2].norm()


class _EagerGraph:
    """Stands in for `_SegmentGraph` on the CPU: records its capture, and each replay runs the eager
    segment backward it would have recorded."""

    made: list = []

    def __init__(self, module, segment, sizes, pos, x_s, flat, grad_delta, params):
        self.args, self.params, self.replays = (module, segment, sizes, pos), params, 0
        _EagerGraph.made.append(self)

    def __call__(self, x_s, flat, grad_delta, grad_next):
        self.replays += 1
        return segments._segment_backward(*self.args, x_s, flat, grad_delta, grad_next, self.params)


def test_captures_happen_in_the_forward_once_per_pattern_and_the_backward_replays_them(monkeypatch):
    monkeypatch.setattr(segments, "_SegmentGraph", _EagerGraph)
    monkeypatch.setattr(_EagerGraph, "made", [])
    module = _cms()
    x = torch.randn(2, 40, 8, dtype=D64, generator=torch.Generator().manual_seed(8))

    def run():
        xi = x.clone().requires_grad_()
        y, _ = segments_forward(module, xi, module.init_state(2), module._segment, cuda_graphs=True)
        return y, xi

    y, xi = run()
    # 13 segments of 3 tokens (ending on a boundary of the 6-token level or not) and a last one of 1
    assert len(_EagerGraph.made) == 3 and all(g.replays == 0 for g in _EagerGraph.made)
    y.square().sum().backward()
    assert sum(g.replays for g in _EagerGraph.made) == 14
    plain = x.clone().requires_grad_()
    module(plain)[0].square().sum().backward()
    torch.testing.assert_close(xi.grad, plain.grad, rtol=1e-10, atol=1e-12)
    run()
    assert len(_EagerGraph.made) == 3  # the same parameters: the captures are kept


def test_a_cms_layer_whose_parameters_keep_moving_stops_capturing(monkeypatch):
    monkeypatch.setattr(segments, "_SegmentGraph", _EagerGraph)
    monkeypatch.setattr(_EagerGraph, "made", [])
    module = _cms()
    x_s = torch.randn(2, 3, 8, dtype=D64)
    flat = segments._flatten(module.init_state(2))
    params = list(module.parameters())

    def capture(at):
        segments._capture(module, module._segment, [2, 2], 0, x_s, flat, x_s, at)

    capture(params)
    capture(params)  # the same addresses: kept
    moves = segments._CAPTURED.max_moves
    for _ in range(moves - 1):  # the same values at new addresses (FSDP resharding)
        capture([p.clone() for p in params])
    assert len(_EagerGraph.made) == moves
    with pytest.warns(UserWarning, match="CMS layer moved .* without CUDA graphs"):
        capture([p.clone() for p in params])
    capture(params)
    assert len(_EagerGraph.made) == moves and not segments._CAPTURED.of(module)
