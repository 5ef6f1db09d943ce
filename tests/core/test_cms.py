"""Continuum Memory System: steps exactly at C_ℓ boundaries, streams exactly, variants."""

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


@pytest.mark.parametrize("variant", ["sequential", "nested", "independent"])
def test_streaming_token_by_token_equals_whole(variant):
    cms, x = _cms(**{"cms.variant": variant}), _x(14)
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
