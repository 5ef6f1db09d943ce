"""The language model and its presets: causality, streaming, reference equality, gradients, learning."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

import hope
from hope.config import PRESETS

D64 = torch.float64
V = 32
# Tiny shapes with CMS/Titans chunk sizes that put several boundaries inside 20 tokens.
TINY = {"vocab_size": V, "d_model": 16, "n_heads": 2, "titans.chunk_size": 3, "cms.chunk_sizes": (4, 8)}
CASES = [(name, {}) for name in PRESETS] + [
    ("hope", {"cms.error": "lm"}),
    ("hope-attention", {"cms.error": "lm"}),
]
IDS = [f"{n}-lm" if o else n for n, o in CASES]


def _model(name, impl="chunked", seed=0, **over):
    cfg = hope.ModelConfig.preset(name, impl=impl, **{**TINY, **over})
    torch.manual_seed(seed)
    return hope.build_model(cfg).double()


def _ids(t=20, seed=0):
    return torch.randint(0, V, (2, t), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name,over", CASES, ids=IDS)
@pytest.mark.parametrize("impl", ["reference", "chunked"])
def test_causal(name, over, impl):
    model, ids = _model(name, impl, **over), _ids()
    with torch.no_grad():
        logits, _ = model(ids)
        for t in (0, 7, 13):
            changed = ids.clone()
            changed[:, t + 1] = (changed[:, t + 1] + 1) % V
            logits2, _ = model(changed)
            torch.testing.assert_close(logits2[:, : t + 1], logits[:, : t + 1], rtol=0, atol=1e-12)
            assert (logits2[:, t + 1 :] - logits[:, t + 1 :]).abs().max() > 1e-8


@pytest.mark.parametrize("name,over", CASES, ids=IDS)
def test_streaming_any_split_equals_one_call(name, over):
    model, ids = _model(name, **over), _ids()
    with torch.no_grad():
        whole, s_whole = model(ids)
        for cuts in ([1, 9], [5, 6, 7, 15]):
            state, outs = None, []
            for a, b in zip([0] + cuts, cuts + [20]):
                y, state = model(ids[:, a:b], state)
                outs.append(y)
            torch.testing.assert_close(torch.cat(outs, 1), whole, rtol=0, atol=1e-10)
            more_a, _ = model(ids[:, :4], state)
            more_b, _ = model(ids[:, :4], s_whole)
            torch.testing.assert_close(more_a, more_b, rtol=0, atol=1e-10)  # the final states agree


@pytest.mark.parametrize("name,over", CASES, ids=IDS)
@pytest.mark.parametrize("chunk", [1, 4])
def test_chunked_equals_reference_whole_model(name, over, chunk):
    """C = 1: Eq. 88 exactly; C = 4: the reference token loop of Eq. 90 (13 tokens: a partial last chunk)."""
    over = {**over, "titans.chunk_size": chunk}
    fast, ref = _model(name, "chunked", **over), _model(name, "reference", **over)
    ids = _ids(13)
    with torch.no_grad():
        torch.testing.assert_close(fast(ids)[0], ref(ids)[0], rtol=0, atol=1e-10)


@pytest.mark.parametrize("name,over", CASES, ids=IDS)
def test_every_parameter_gets_a_finite_nonzero_gradient(name, over):
    model, ids = _model(name, **over), _ids(17)
    logits, _ = model(ids)
    F.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten()).backward()
    for pname, p in model.named_parameters():
        if not p.requires_grad:  # frozen by design: the zero initial memories of the DeltaNet family
            continue
        assert p.grad is not None, f"{pname} got no gradient"
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, f"{pname} got a zero gradient"


@pytest.mark.parametrize("name,over", CASES, ids=IDS)
def test_tiny_model_overfits_one_batch(name, over):
    cfg = hope.ModelConfig.preset(name, **{**TINY, "d_model": 32, **over})
    torch.manual_seed(0)
    model = hope.build_model(cfg)
    ids = _ids(24, seed=3)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(120):
        logits, _ = model(ids)
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if loss.item() < 0.1 * losses[0]:
            break
    assert losses[-1] < 0.1 * losses[0], (name, losses[0], losses[-1])


def test_out_of_range_ids_raise_a_clear_error():
    model = _model("transformer")
    with pytest.raises(ValueError, match="vocab_size=32"):
        model(torch.tensor([[1, 32]]))
    with pytest.raises(ValueError, match="vocab_size"):
        model(torch.tensor([[-1, 2]]))


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("impl", "triton-ish", "model.impl must be one of"),
        ("titans.chunk_size", 0, "titans.chunk_size must be an integer >= 1"),
        ("cms.chunk_sizes", (4, 6), "multiples of the smallest"),
        ("cms.error", "grad", "cms.error must be one of"),
        ("d_model", 15, "divisible"),
        ("titans.nonsense", 1, "unknown config field"),
    ],
)
def test_invalid_config_names_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        hope.ModelConfig.preset("hope", **{field: value})


def test_unknown_preset_and_size_list_the_accepted_values():
    with pytest.raises(ValueError, match="transformer"):
        hope.ModelConfig.preset("gpt")
    with pytest.raises(ValueError, match="125m"):
        hope.ModelConfig.preset("hope", size="huge")


def test_config_round_trips_through_a_dict():
    cfg = hope.ModelConfig.preset("hope", **{"cms.chunk_sizes": (8, 32), "titans.surprise.window": 9})
    assert hope.ModelConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("name", ["hope", "titans"])
def test_matched_transformer_is_within_five_percent(name):
    target = hope.ModelConfig.preset(name, size="small", vocab_size=256)
    matched = hope.matched_transformer(target)
    assert matched.block == "transformer"
    ratio = hope.count_parameters(matched) / hope.count_parameters(target)
    assert abs(ratio - 1) <= 0.05


def test_matched_transformer_takes_the_shared_overrides_and_chooses_its_own_shape():
    """Overrides meant for every preset (a bench's --model.d_model) reach the matched transformer,
    except the depth, heads and width that the matcher chooses."""
    target = hope.ModelConfig.preset("hope", size="small", vocab_size=256, d_model=96)
    matched = hope.matched_transformer(target, d_model=96, n_layers=1, init_std=0.01)
    assert matched.init_std == 0.01 and matched.n_layers == target.n_layers
    assert abs(hope.count_parameters(matched) / hope.count_parameters(target) - 1) <= 0.05


@pytest.mark.parametrize("name", ["hope", "titans", "transformer"])
def test_match_width_finds_the_closest_width(name):
    """The bisection equals a walk over every width (multiples of 2·n_heads up to 8× the width)."""
    cfg = hope.ModelConfig.preset(name, size="tiny", vocab_size=256)
    goal = int(1.7 * hope.count_parameters(cfg))
    step = 2 * cfg.n_heads
    widths = range(step, 8 * cfg.d_model + 1, step)
    best = min(
        widths, key=lambda w: (abs(hope.count_parameters(dataclasses.replace(cfg, d_model=w)) - goal), w)
    )
    assert hope.match_width(cfg, goal).d_model == best != cfg.d_model


@pytest.mark.parametrize("size", ["125m", "350m"])
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_at_gpu_sizes_match_the_transformer(name, size):
    """Comparisons are at matched parameters, so every preset at a GPU size is within ±5%."""

    def count(preset):
        return hope.count_parameters(hope.ModelConfig.preset(preset, size, vocab_size=32000))

    assert abs(count(name) / count("transformer") - 1) <= 0.05
