"""The dissection measurements report what they claim on models whose answer is known."""

import torch

import hope
from hope.analysis import cms_level_similarity, selfmod_drift, surprise_profile

TINY = {"vocab_size": 32, "d_model": 16, "n_heads": 2, "titans.chunk_size": 4, "cms.chunk_sizes": (4, 8)}


def _ids(t=24):
    return torch.randint(0, 32, (2, t), generator=torch.Generator().manual_seed(0))


def test_selfmod_drift_is_zero_without_updates_and_positive_with_them():
    torch.manual_seed(0)
    model = hope.build_model(hope.ModelConfig.preset("hope-no-surprise", **TINY))
    drift = selfmod_drift(model, _ids())
    assert len(drift) == 2 and set(drift[0]) == {"mem", "k", "v", "eta", "alpha"}
    assert all(v > 0 for layer in drift for v in layer.values())
    frozen = hope.build_model(
        hope.ModelConfig.preset(
            "hope", **TINY, **{"titans.surprise.mode": "absolute", "titans.surprise.threshold": 1e9}
        )
    )
    assert all(v == 0 for layer in selfmod_drift(frozen, _ids()) for v in layer.values())


def test_cms_similarity_is_one_for_identical_levels():
    torch.manual_seed(0)
    model = hope.build_model(hope.ModelConfig.preset("hope", **TINY, **{"cms.variant": "independent"}))
    with torch.no_grad():
        for block in model.blocks:
            block.ffn.w_up[1].copy_(block.ffn.w_up[0])
            block.ffn.w_down[1].copy_(block.ffn.w_down[0])
    sims = cms_level_similarity(model, _ids())
    assert len(sims) == 2 and all(abs(s[0] - 1) < 1e-5 for s in sims)
    torch.manual_seed(1)
    fresh = hope.build_model(hope.ModelConfig.preset("hope", **TINY, **{"cms.variant": "independent"}))
    assert all(abs(s[0]) < 0.9 for s in cms_level_similarity(fresh, _ids()))


def test_surprise_profile_matches_the_gate():
    torch.manual_seed(0)
    cfg = hope.ModelConfig.preset("hope", **TINY, **{"titans.surprise.mode": "absolute"})
    model = hope.build_model(cfg)
    profile = surprise_profile(model, _ids())
    median = profile[0]["q50"]
    assert profile[0]["q10"] <= median <= profile[0]["q90"]
    cfg = hope.ModelConfig.preset(
        "hope", **TINY, **{"titans.surprise.mode": "absolute", "titans.surprise.threshold": median}
    )
    torch.manual_seed(0)
    gated = surprise_profile(hope.build_model(cfg), _ids())
    assert 0.3 < gated[0]["pass_rate"] < 0.7  # a threshold at layer 0's median passes about half its tokens
    assert all(b.mixer.surprise_trace is None for b in model.blocks)
