"""The DeltaNet family as presets: each layer equals its textbook recurrence, token by token."""

import pytest
import torch
import torch.nn.functional as F

from hope.config import ModelConfig
from hope.layers.self_ref_titans import SelfReferentialTitans


def _textbook(name, q, k, v, alpha, beta):
    """Linear attention S_t = S_{t-1} + v kᵀ; DeltaNet S_t = S_{t-1}(I − β kkᵀ) + β v kᵀ; Gated
    DeltaNet (Yang et al. 2024) S_t = α S_{t-1}(I − β kkᵀ) + β v kᵀ; o_t = S_t q_t for all three."""
    b, h, t, d = q.shape
    s = torch.zeros(b, h, d, d, dtype=q.dtype)
    eye = torch.eye(d, dtype=q.dtype)
    outs = []
    for i in range(t):
        kk = k[:, :, i, :, None] * k[:, :, i, None, :]
        write = v[:, :, i, :, None] * k[:, :, i, None, :]
        a, bt = alpha[:, :, i, None, None], beta[:, :, i, None, None]
        if name == "linear-attention":
            s = s + write
        else:
            s = a * s @ (eye - bt * kk) + bt * write
        outs.append((s @ q[:, :, i, :, None])[..., 0])
    return torch.stack(outs, dim=2)


@pytest.mark.parametrize("impl", ["reference", "chunked"])
@pytest.mark.parametrize("name", ["linear-attention", "deltanet", "gated-deltanet"])
def test_layer_is_the_textbook_recurrence(name, impl):
    cfg = ModelConfig.preset(name, d_model=16, n_heads=2, **{"titans.chunk_size": 4})
    torch.manual_seed(0)
    layer = SelfReferentialTitans(cfg).double()
    with torch.no_grad():  # non-trivial β and α
        for proj in ("eta_proj", "alpha_proj"):
            if hasattr(layer, proj):
                getattr(layer, proj).weight.normal_(0, 0.5)
    x = torch.randn(2, 19, 16, dtype=torch.float64)
    y, _ = layer(x, None, impl=impl)

    xc, _ = layer.conv(x, None)
    q = F.normalize(layer._heads(layer.q_proj(xc)), dim=-1)
    k = F.normalize(layer._heads(layer.k_proj(xc)), dim=-1)
    v = layer._heads(layer.v_proj(xc))
    ones = torch.ones_like(q[..., 0])
    eta = torch.sigmoid(layer.eta_proj(xc)).transpose(1, 2) if hasattr(layer, "eta_proj") else ones
    alpha = torch.sigmoid(layer.alpha_proj(xc)).transpose(1, 2) if hasattr(layer, "alpha_proj") else ones
    # Our gated form is the delta rule in DGD form, S(αI − η kkᵀ) + η v kᵀ: Yang et al.'s recurrence
    # with β = η/α and values αv, term by term.
    o = _textbook(name, q, k, alpha[..., None] * v, alpha, eta / alpha)
    expected = layer.o_proj(o.transpose(1, 2).reshape(x.shape))
    torch.testing.assert_close(y, expected, rtol=0, atol=1e-10)


def test_fixed_alpha_and_eta_need_static_projections():
    with pytest.raises(ValueError, match="titans.decay=False needs titans.self_modifying=False"):
        ModelConfig.preset("hope", **{"titans.decay": False})
