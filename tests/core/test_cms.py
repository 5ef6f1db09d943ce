"""Continuum Memory System: steps exactly at C_ℓ boundaries, streams exactly, variants."""

import dataclasses
import itertools

import pytest
import torch

from hope.config import ModelConfig
from hope.layers.cms import ContinuumMemory

D64 = torch.float64


def _cms(**over):
    cfg = ModelConfig.preset(
        "hope",
        d_model=8,
        n_heads=2,
        **{"cms.chunk_sizes": (3, 6), "cms.error": "local", "cms.lr": 0.1, **over},
    )
    torch.manual_seed(0)
    return ContinuumMemory(cfg).double()


def _x(t):
    return torch.randn(2, t, 8, dtype=D64, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("variant", ["sequential", "nested", "independent"])
def test_fast_weights_change_exactly_at_boundaries(variant):
    cms, x = _cms(**{"cms.variant": variant}), _x(13)
    state, history = None, []
    for t in range(13):  # token by token: the per-token reference of Eq. 71
        _, state = cms(x[:, t : t + 1], state)
        history.append([[w.clone() for w in level] for level in state["fast"]])
    for t in range(1, 13):
        pos = t + 1
        for level, chunk in enumerate((3, 6)):
            changed = any((a - b).abs().max() > 0 for a, b in zip(history[t][level], history[t - 1][level]))
            assert changed == (pos % chunk == 0), (variant, level, pos)


@pytest.mark.parametrize("level", ["residual", "swiglu"])
@pytest.mark.parametrize("variant", ["sequential", "nested", "independent"])
def test_streaming_token_by_token_equals_whole(variant, level):
    cms, x = _cms(**{"cms.variant": variant, "cms.level": level}), _x(14)
    whole, s_whole = cms(x)
    state, outs = None, []
    for a, b in [(0, 1), (1, 5), (5, 6), (6, 13), (13, 14)]:
        y, state = cms(x[:, a:b], state)
        outs.append(y)
    torch.testing.assert_close(torch.cat(outs, 1), whole, rtol=0, atol=1e-12)
    for la, lb in zip(state["fast"], s_whole["fast"]):
        for a, b in zip(la, lb):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_tokens_read_weights_of_last_completed_boundary():
    """Output at t depends only on tokens before the last boundary ≤ t (through the weights) and x_t."""
    cms, x = _cms(), _x(12)
    y, _ = cms(x)
    x2 = x.clone()
    x2[:, 4] += 1.0  # inside the second 3-chunk [3, 6): affects weights from position 6 on
    y2, _ = cms(x2)
    same = [t for t in range(12) if t != 4 and torch.equal(y[:, t], y2[:, t])]
    assert same == [0, 1, 2, 3, 5]


def test_none_is_a_plain_mlp():
    cms = _cms(**{"cms.error": "none", "cms.chunk_sizes": (4,)})
    x = _x(5)
    y, _ = cms(x)
    expected = torch.nn.functional.gelu(x @ cms.w_up[0].T) @ cms.w_down[0].T
    torch.testing.assert_close(y, expected, rtol=0, atol=1e-12)


# ---- each variant pinned by its definition ------------------------------------------------------
def _mlp(weights, z):
    """A residual MLP level written out: M(z) = z + W_down σ(W_up z)."""
    w_up, w_down = weights
    return z + torch.nn.functional.gelu(z @ w_up.transpose(-1, -2)) @ w_down.transpose(-1, -2)


def _defined_output(variant, fast, x):
    """y − x by the definitions: sequential M_K(… M_1(x)) (Eq. 70); independent x + Σ_ℓ (M_ℓ(x) − x);
    nested reads like sequential (it differs in how a slower level restarts)."""
    if variant == "independent":
        return sum(_mlp(w, x) - x for w in fast)
    z = x
    for w in fast:
        z = _mlp(w, z)
    return z - x


def _level_inputs(variant, fast, x):
    inputs, z = [], x
    for w in fast:
        inputs.append(x if variant == "independent" else z)
        z = _mlp(w, z)
    return inputs


def _token_by_token(cms, x):
    """States before each token (index t) and after the last, and each token's output."""
    state, before, outs = cms.init_state(x.shape[0]), [], []
    for t in range(x.shape[1]):
        before.append(state)
        y, state = cms(x[:, t : t + 1], state)
        outs.append(y)
    return before + [state], torch.cat(outs, 1)


@pytest.mark.parametrize("variant", ["sequential", "nested", "independent"])
def test_each_token_reads_the_variant_formula_at_the_current_fast_weights(variant):
    cms, x = _cms(**{"cms.variant": variant}), _x(13)
    states, y = _token_by_token(cms, x)
    for t in range(13):
        expected = _defined_output(variant, states[t]["fast"], x[:, t : t + 1])
        torch.testing.assert_close(y[:, t : t + 1], expected, rtol=0, atol=1e-12)
    assert any((a - b).abs().max() > 0 for a, b in zip(states[-1]["fast"][1], states[0]["fast"][1]))


@pytest.mark.parametrize("variant", ["sequential", "nested", "independent"])
def test_each_level_steps_by_lr_times_its_chunk_mean_gradient(variant):
    """Eq. 71 with the local objective, by autograd: at its boundary, level ℓ becomes start − lr ·
    mean_t ∇θ ½‖M_ℓ(k̂_t) − v̂_t‖² over its chunk, start its own weights — or, nested (Eq. 72–73),
    the faster level's weights of that moment."""
    cms, x = _cms(**{"cms.variant": variant}), _x(12)
    states, _ = _token_by_token(cms, x)
    checked = 0
    for level, chunk in enumerate(cms.chunk_sizes):
        for end in range(chunk, 13, chunk):
            theta = [w.detach().clone().requires_grad_() for w in states[end - chunk]["fast"][level]]
            loss = 0.0
            for t in range(end - chunk, end):
                z = _level_inputs(variant, states[t]["fast"], x[:, t : t + 1])[level]
                keys = torch.nn.functional.normalize(z @ cms.key_readout[level].T, dim=-1)
                values = torch.nn.functional.normalize(z @ cms.value_readout[level].T, dim=-1)
                loss = loss + 0.5 * ((_mlp(theta, keys) - values) ** 2).sum()
            grads = torch.autograd.grad(loss, theta)
            nested = variant == "nested" and level > 0
            start = states[end]["fast"][level - 1] if nested else states[end - chunk]["fast"][level]
            for w_new, w_start, g in zip(states[end]["fast"][level], start, grads):
                torch.testing.assert_close(w_new, w_start - cms.cms.lr / chunk * g, rtol=0, atol=1e-12)
            checked += 1
    assert checked == 4 + 2  # level 0: boundaries 3, 6, 9, 12; level 1: 6, 12


def test_nested_restarts_a_slower_level_only_at_its_own_boundary():
    cms, x = _cms(**{"cms.variant": "nested"}), _x(12)
    states, _ = _token_by_token(cms, x)
    for pos in range(1, 13):
        before, after = states[pos - 1]["fast"][1], states[pos]["fast"][1]
        changed = any((a - b).abs().max() > 0 for a, b in zip(before, after))
        assert changed == (pos % 6 == 0), pos


def _in_pieces(module, x, cuts):
    """module's outputs for x fed in pieces split at `cuts`, the state carried between calls."""
    state, outs, edges = None, [], [0, *cuts, x.shape[1]]
    for a, b in itertools.pairwise(edges):
        y, state = module(x[:, a:b], state)
        outs.append(y)
    return torch.cat(outs, 1)


@pytest.mark.parametrize("error", ["local", "none"])
@pytest.mark.parametrize("variant", ["sequential", "nested", "independent"])
def test_streaming_equals_one_call_for_every_variant_and_error(variant, error):
    cms, x = _cms(**{"cms.variant": variant, "cms.error": error}), _x(14)
    torch.testing.assert_close(_in_pieces(cms, x, (2, 7)), cms(x)[0], rtol=0, atol=1e-12)


@pytest.mark.parametrize("variant", ["nested", "independent"])
def test_streaming_equals_one_call_with_the_lm_error(variant):
    """With `lm` the model drives the levels segment by segment; pieces across boundaries agree."""
    import hope

    cfg = hope.ModelConfig.preset(
        "hope",
        d_model=8,
        n_heads=2,
        vocab_size=32,
        **{"cms.chunk_sizes": (3, 6), "cms.error": "lm", "cms.variant": variant, "titans.chunk_size": 4},
    )
    torch.manual_seed(0)
    model = hope.build_model(cfg).double()
    ids = torch.randint(0, 32, (2, 14), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(_in_pieces(model, ids, (4, 5)), model(ids)[0], rtol=0, atol=1e-10)


def test_unknown_variant_names_the_accepted_ones():
    with pytest.raises(
        ValueError, match=r"cms.variant must be one of \['sequential', 'nested', 'independent'\]"
    ):
        _cms(**{"cms.variant": "parallel"})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="impl='auto' compiles the CMS level pieces on CUDA")
def test_compiled_cms_pieces_equal_the_eager_ones():
    """impl='auto' on CUDA runs each level's chunk piece compiled: the same outputs and fast weights as
    the eager walk, over pieces that start and end inside a chunk."""
    torch.manual_seed(0)
    cfg = ModelConfig.preset("hope", size="tiny", impl="auto")
    auto = ContinuumMemory(cfg).cuda()
    eager = ContinuumMemory(dataclasses.replace(cfg, impl="chunked")).cuda()
    eager.load_state_dict(auto.state_dict())
    x = torch.randn(2, 90, cfg.d_model, device="cuda")
    with torch.no_grad():
        outs = []
        for layer in (auto, eager):
            state, ys = None, []
            for piece in (x[:, :7], x[:, 7:50], x[:, 50:]):
                y, state = layer(piece, state)
                ys.append(y)
            outs.append((torch.cat(ys, 1), [w for lvl in state["fast"] for w in lvl]))
    torch.testing.assert_close(outs[0][0], outs[1][0], rtol=1e-4, atol=1e-5)
    for a, b in zip(outs[0][1], outs[1][1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
