"""The CMS walks a sequence level by level (every impl but `reference`), and that equals Eq. 71 as it
reads, a segment of the shortest period at a time with every level (impl="reference"): outputs, end
state, and the gradients of the input, every parameter and the start state, in float64."""

import dataclasses

import pytest
import torch

from hope.config import ModelConfig
from hope.layers.cms import ContinuumMemory

D64 = torch.float64


def _pair(**over) -> tuple[ContinuumMemory, ContinuumMemory]:
    """(level walk, reference walk) on the same weights."""
    cfg = ModelConfig.preset(
        "hope", d_model=8, n_heads=2, impl="chunked",
        **{"cms.chunk_sizes": (3, 6, 12), "cms.error": "local", "cms.lr": 0.5, **over},
    )  # fmt: skip
    torch.manual_seed(0)
    levels = ContinuumMemory(cfg).double()
    reference = ContinuumMemory(dataclasses.replace(cfg, impl="reference")).double()
    reference.load_state_dict(levels.state_dict())
    return levels, reference


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


def _run(module, x, state):
    """(output, end state, grads of x, of every parameter, of the start state's tensors)."""
    module.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_()
    start, leaves = _leaves(state) if state is not None else (module.init_state(x.shape[0]), [])
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
            torch.testing.assert_close(u.expand_as(v), v.expand_as(u), **close)
    for a, b in zip(end["pending"], end0["pending"], strict=True):
        assert (a is None) == (b is None)
        for u, v in zip(a or [], b or [], strict=True):
            torch.testing.assert_close(u, v, **close)
    torch.testing.assert_close(gx, gx0, **close)
    for a, b in zip(gp, gp0, strict=True):
        assert (a is None) == (b is None)
        if b is not None:
            torch.testing.assert_close(a, b, **close)
    for a, b in zip(gs, gs0, strict=True):
        torch.testing.assert_close(a, b, **close)


@pytest.mark.parametrize("level", ["residual", "swiglu"])
@pytest.mark.parametrize("variant", ["sequential", "nested", "independent"])
def test_level_walk_equals_the_segment_walk(variant, level):
    # 40 tokens: 13 segments of 3 and a partial one; the 6- and 12-token levels step and end pending
    levels, reference = _pair(**{"cms.variant": variant, "cms.level": level})
    x = torch.randn(2, 40, 8, dtype=D64, generator=torch.Generator().manual_seed(1))
    _assert_same(_run(levels, x, None), _run(reference, x, None))


@pytest.mark.parametrize("variant", ["sequential", "nested", "independent"])
def test_level_walk_from_a_state_mid_segment_with_pending_sums(variant):
    """The stream is at token 7: inside a 3-token segment, the slower levels' error sums pending."""
    levels, reference = _pair(**{"cms.variant": variant})
    with torch.no_grad():
        _, state = reference(torch.randn(2, 7, 8, dtype=D64, generator=torch.Generator().manual_seed(2)))
    assert state["pending"][1] is not None and state["pending"][2] is not None and state["pos"] % 3
    x = torch.randn(2, 23, 8, dtype=D64, generator=torch.Generator().manual_seed(3))
    _assert_same(_run(levels, x, state), _run(reference, x, state))


def test_the_nested_restart_takes_the_faster_level_after_its_own_step():
    """chunk sizes (2, 4, 6): at token 12 all three step; at 6 the third restarts from the second's
    weights of token 4 (its last step), at 12 from those of token 12 itself."""
    levels, reference = _pair(**{"cms.variant": "nested", "cms.chunk_sizes": (2, 4, 6)})
    x = torch.randn(1, 14, 8, dtype=D64, generator=torch.Generator().manual_seed(4))
    _assert_same(_run(levels, x, None), _run(reference, x, None))


@pytest.mark.parametrize("level", ["residual", "swiglu"])
def test_a_level_whose_step_no_token_reads_leaves_its_read_outs_without_a_gradient(level):
    """12 tokens: the 12-token level steps only after the last one, so a loss on the output gives its
    key/value read-outs no gradient at all (None, as the reference walk), which DDP's unused-parameter
    list relies on (LanguageModel.unused_parameters)."""
    levels, reference = _pair(**{"cms.level": level})
    x = torch.randn(2, 12, 8, dtype=D64, generator=torch.Generator().manual_seed(8))
    for module in (levels, reference):
        module.zero_grad(set_to_none=True)
        y, _ = module(x.clone().requires_grad_())
        y.square().sum().backward()
        idle = {n for n, p in module.named_parameters() if p.grad is None}
        assert idle == {"key_readout.2", "value_readout.2"}


def test_a_level_that_just_stepped_holds_no_error_sum():
    levels, _ = _pair()
    x = torch.randn(1, 12, 8, dtype=D64)
    with torch.no_grad():
        _, end = levels(x)
        assert end["pending"] == [None, None, None]  # 12 is a boundary of every level
        _, end = levels(x[:, :9])
    assert end["pending"][0] is None and end["pending"][1] is not None and end["pending"][2] is not None


# One graph per level, piece length and mix (hope.ops.compiling raises the limit so too). torch's own
# config patch, not pytest's monkeypatch: pytest 9.2 undoes a patch of an attribute that the module
# serves through __getattr__ by deleting it, which removes the option from torch's config.
@pytest.mark.parametrize("variant", ["sequential", "nested"])
@torch._dynamo.config.patch(cache_size_limit=128)
def test_a_level_chunk_compiles_as_one_graph_with_its_step(variant):
    """A level's chunk (read, error gradients, error sum and step: `_level_chunk`) traces without a
    graph break, for every mix of a pending sum and a step; through aot_eager, the compiler's front
    end, the walk still equals the reference from a state mid-segment."""
    levels, reference = _pair(**{"cms.variant": variant})
    compiled = torch.compile(ContinuumMemory._level_chunk, backend="aot_eager", fullgraph=True, dynamic=False)
    levels._level_chunk = lambda *args: compiled(levels, *args)
    with torch.no_grad():
        _, state = reference(torch.randn(2, 7, 8, dtype=D64, generator=torch.Generator().manual_seed(2)))
    x = torch.randn(2, 23, 8, dtype=D64, generator=torch.Generator().manual_seed(3))
    _assert_same(_run(levels, x, state), _run(reference, x, state))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the compiled level walk runs on CUDA")
def test_compiled_level_walk_on_cuda_equals_the_reference():
    """impl='auto' on CUDA (each level's piece compiled) against the reference walk on the same weights,
    in pieces that start and end inside chunks, two steps, so the state carries."""
    torch.manual_seed(0)
    cfg = ModelConfig.preset("hope", size="tiny", impl="auto", **{"cms.chunk_sizes": (8, 32)})
    auto = ContinuumMemory(cfg).cuda()
    reference = ContinuumMemory(dataclasses.replace(cfg, impl="reference")).cuda()
    reference.load_state_dict(auto.state_dict())
    x = torch.randn(2, 100, cfg.d_model, device="cuda")
    results = []
    for layer in (auto, reference):
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
