"""The `swiglu` CMS level (cms.level): its formula, its local-error step (Eq. 71), the lm error, and that
`hope.convert` (§7.3) turns a Transformer++ into a HOPE-Attention model that computes the same logits."""

import pytest
import torch
import torch.nn.functional as F

import hope
from hope.config import ModelConfig
from hope.convert import convert_model
from hope.layers.cms import ContinuumMemory

D64 = torch.float64
LR = 0.1


def _cms(**over):
    cfg = ModelConfig.preset(
        "hope-attention",
        d_model=8,
        n_heads=2,
        **{"cms.level": "swiglu", "cms.chunk_sizes": (3, 6), "cms.lr": LR, "cms.expansion": 1.5, **over},
    )
    torch.manual_seed(0)
    cms = ContinuumMemory(cfg).double()
    with torch.no_grad():  # a visible read-out, so that every level's output depends on its weights
        for w in cms.w_down:
            w.normal_(0, 0.3)
    return cms


def _x(t):
    return torch.randn(2, t, 8, dtype=D64, generator=torch.Generator().manual_seed(1))


def _swiglu(weights, z):
    """The level written out: M(z) = z + W_d(silu(W_g z) ⊙ W_u z)."""
    w_gate, w_up, w_down = weights
    return z + (F.silu(z @ w_gate.mT) * (z @ w_up.mT)) @ w_down.mT


def test_forward_is_the_swiglu_chain():
    cms, x = _cms(**{"cms.error": "none"}), _x(5)
    y, _ = cms(x)
    levels = [[cms.w_gate[i], cms.w_up[i], cms.w_down[i]] for i in range(2)]
    torch.testing.assert_close(y, _swiglu(levels[1], _swiglu(levels[0], x)) - x, rtol=0, atol=1e-12)
    assert cms.w_gate[0].shape == (12, 8) and cms.w_down[0].shape == (8, 12)  # hidden = 1.5 · 8


def _autograd_step(cms, level, weights, z):
    """lr × mean over tokens of ∇θ ½‖M(k̂_t) − v̂_t‖², each token's gradient taken by autograd alone."""
    keys = F.normalize(z @ cms.key_readout[level].mT, dim=-1).detach()
    values = F.normalize(z @ cms.value_readout[level].mT, dim=-1).detach()
    total = [torch.zeros_like(w) for w in weights]
    for t in range(z.shape[1]):
        leaves = [w.detach().clone().requires_grad_() for w in weights]
        with torch.enable_grad():
            loss = 0.5 * (_swiglu(leaves, keys[:, t : t + 1]) - values[:, t : t + 1]).pow(2).sum()
            grads = torch.autograd.grad(loss, leaves)
        for acc, g in zip(total, grads):
            acc += g
    return [LR * g / z.shape[1] for g in total]


@pytest.mark.parametrize("variant", ["sequential", "independent"])
def test_local_step_is_lr_times_mean_per_token_gradient(variant):
    """Eq. 71: after C_ℓ tokens, θ_ℓ ← θ_ℓ − lr · (1/C_ℓ) Σ_t ∇ℓ_t, every ℓ_t at the weights it read."""
    cms, x = _cms(**{"cms.variant": variant}), _x(6)
    start = cms.init_state(2)["fast"]
    with torch.no_grad():
        _, after3 = cms(x[:, :3])
        _, after6 = cms(x[:, 3:], after3)
        # Level 0 reads x (first in the chain, or side by side); level 1 reads M_0(x), or x.
        z0 = x[:, :3]
        expected0 = _autograd_step(cms, 0, start[0], z0)
        z1 = (
            x
            if variant == "independent"
            else torch.cat([_swiglu(start[0], x[:, :3]), _swiglu(after3["fast"][0], x[:, 3:])], 1)
        )
        expected1 = _autograd_step(cms, 1, start[1], z1)
    for w, w0, step in zip(after3["fast"][0], start[0], expected0):
        torch.testing.assert_close(w0 - w, step, rtol=1e-10, atol=1e-12)
    for w, w0, step in zip(after6["fast"][1], start[1], expected1):
        torch.testing.assert_close(w0 - w, step, rtol=1e-10, atol=1e-12)
    assert all((a - b).abs().max() > 1e-6 for a, b in zip(after6["fast"][1], start[1]))


def test_lm_error_streams_and_trains_every_level():
    cfg = ModelConfig.preset(
        "hope-attention",
        d_model=16,
        n_heads=2,
        n_layers=1,
        vocab_size=32,
        **{"cms.level": "swiglu", "cms.error": "lm", "cms.chunk_sizes": (4, 8)},
    )
    torch.manual_seed(0)
    model = hope.build_model(cfg).double()
    ids = torch.randint(0, 32, (2, 13), generator=torch.Generator().manual_seed(2))
    whole, s_whole = model(ids)
    first, state = model(ids[:, :6])
    rest, state = model(ids[:, 6:], state)
    torch.testing.assert_close(torch.cat([first, rest], 1), whole, rtol=0, atol=1e-10)
    whole.sum().backward()
    ffn = model.blocks[0].ffn
    assert all(w.grad is not None and w.grad.abs().max() > 0 for i in range(2) for w in ffn.slow_weights(i))
    stepped = s_whole["blocks"][0]["ffn"]["fast"][1]
    assert all((a - b).abs().max() > 0 for a, b in zip(stepped, ffn.slow_weights(1)))


def test_level_choice_is_validated():
    with pytest.raises(ValueError, match=r"cms.level must be one of \['residual', 'swiglu'\], got 'gated'"):
        ModelConfig.preset("hope-attention", **{"cms.level": "gated"})


# ---- §7.3 conversion -------------------------------------------------------------------------------
def _transformer(**over):
    cfg = ModelConfig.preset("transformer", d_model=32, n_heads=2, n_layers=2, vocab_size=50, **over)
    torch.manual_seed(3)
    model = hope.build_model(cfg)
    with torch.no_grad():  # trained-looking weights: every parameter away from its initial value
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.double()


def _target(transformer, **cms):
    over = {"cms.level": "swiglu", "cms.expansion": 128 / 32, **{f"cms.{k}": v for k, v in cms.items()}}
    keep = {k: getattr(transformer.config, k) for k in ("d_model", "n_heads", "n_layers", "vocab_size")}
    return ModelConfig.preset("hope-attention", **keep, **over)


def _ids(t):
    return torch.randint(0, 50, (3, t), generator=torch.Generator().manual_seed(4))


@pytest.mark.parametrize(
    ("cms", "variant"),
    [
        ({"error": "none"}, "sequential"),
        ({"error": "none"}, "nested"),
        ({"error": "local", "lr": 0.0}, "sequential"),
        ({"error": "lm", "lr": 0.0}, "independent"),
    ],
)
def test_converted_model_computes_the_transformers_logits_without_in_context_steps(cms, variant):
    transformer = _transformer()
    converted = convert_model(
        transformer, _target(transformer, chunk_sizes=(4, 8, 16), variant=variant, **cms)
    ).double()
    ids = _ids(40)
    with torch.no_grad():
        expected = transformer(ids)[0]
        torch.testing.assert_close(converted(ids)[0], expected, rtol=0, atol=1e-12)
    ffn = converted.blocks[0].ffn
    assert torch.equal(ffn.w_down[2], transformer.blocks[0].ffn.down.weight)
    assert all(torch.equal(ffn.w_down[i], torch.zeros_like(ffn.w_down[i])) for i in range(2))


@pytest.mark.parametrize("error", ["local", "lm"])
def test_converted_model_equals_the_transformer_until_the_first_step(error):
    """With in-context steps on, tokens before the fastest level's first boundary read the initial
    weights, at which the faster levels are the identity: the same logits there, different after."""
    transformer = _transformer()
    converted = convert_model(
        transformer, _target(transformer, chunk_sizes=(8, 16), error=error, lr=1.0)
    ).double()
    ids = _ids(24)
    with torch.no_grad():
        expected, got = transformer(ids)[0], converted(ids)[0]
    torch.testing.assert_close(got[:, :8], expected[:, :8], rtol=0, atol=1e-12)
    assert (got[:, 8:] - expected[:, 8:]).abs().max() > 1e-6


def test_convert_model_refuses_what_it_cannot_convert():
    transformer = _transformer()
    with pytest.raises(ValueError, match="needs a transformer model"):
        convert_model(hope.build_model(ModelConfig.preset("titans")), _target(transformer))
    with pytest.raises(ValueError, match="cms.level 'swiglu'"):
        convert_model(transformer, _target(transformer, level="residual"))
    with pytest.raises(ValueError, match="keep the transformer's d_model"):
        convert_model(
            transformer,
            ModelConfig.preset(
                "hope-attention", d_model=64, n_heads=2, n_layers=2, vocab_size=50, **{"cms.level": "swiglu"}
            ),
        )
    with pytest.raises(ValueError, match="CMS hidden width 64 differs from the transformer MLP's 128"):
        convert_model(transformer, _target(transformer, expansion=2.0))


def test_level_similarity_reads_swiglu_levels():
    """hope.analysis's CMS redundancy measure applies each level's own formula."""
    from hope.analysis.dissect import cms_level_similarity

    cfg = ModelConfig.preset(
        "hope-attention", d_model=16, n_heads=2, n_layers=1, vocab_size=32, **{"cms.level": "swiglu"}
    )
    torch.manual_seed(0)
    model = hope.build_model(cfg).double()
    ffn = model.blocks[0].ffn
    with torch.no_grad():
        for w in ffn.w_down:
            w.normal_(0, 0.3)
    ids = torch.randint(0, 32, (2, 9), generator=torch.Generator().manual_seed(2))
    inputs = []
    handle = ffn.register_forward_hook(lambda mod, args, out: inputs.append(args[0]))
    with torch.no_grad():
        model(ids)
    handle.remove()
    x = inputs[0]
    first = _swiglu(ffn.slow_weights(0), x)
    second = _swiglu(ffn.slow_weights(1), first)
    expected = float(F.cosine_similarity(first - x, second - first, dim=-1).mean())
    assert cms_level_similarity(model, ids) == [[pytest.approx(expected, rel=1e-9)]]
