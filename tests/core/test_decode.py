"""One-token decoding on static buffers (hope.models.decode) equals one forward over the same tokens."""

import pytest
import torch

from hope import ModelConfig, build_model
from hope.models.decode import Decoder

PRESETS = [
    "hope",
    "hope-no-cms",
    "hope-no-surprise",
    "hope-no-selfmod",
    "hope-attention",
    "titans",
    "transformer",
    "linear-attention",
    "deltanet",
    "gated-deltanet",
]
VOCAB = 61


def _model(preset: str, **overrides):
    config = ModelConfig.preset(preset, size="tiny", vocab_size=VOCAB, impl="chunked", **overrides)
    torch.manual_seed(0)
    return build_model(config).double().eval()


def _check_decoding(model, ids, prompt_len: int):
    """Prompt through forward, the rest one token at a time: every step's logits equal the full forward's."""
    with torch.no_grad():
        full, _ = model(ids)
        state = model(ids[:, :prompt_len])[1] if prompt_len else None
    decoder = Decoder(model, state, batch_size=ids.shape[0], max_len=ids.shape[1])
    for t in range(prompt_len, ids.shape[1]):
        logits = decoder.step(ids[:, t])
        torch.testing.assert_close(logits[:, 0], full[:, t], rtol=1e-8, atol=1e-8, msg=f"token {t}")


@pytest.mark.parametrize("preset", PRESETS)
def test_decoding_equals_one_forward(preset):
    # tiny sizes: Titans chunks of 16, CMS levels of 16 and 64 tokens; the prompt ends inside a chunk
    ids = torch.randint(0, VOCAB, (2, 41), generator=torch.Generator().manual_seed(1))
    _check_decoding(_model(preset), ids, prompt_len=13)


@pytest.mark.parametrize("variant", ["sequential", "nested", "independent"])
@pytest.mark.parametrize("prompt_len", [0, 20])
def test_decoding_across_every_cms_level_boundary(variant, prompt_len):
    """Both tiny CMS levels (16 and 64 tokens) step while decoding, the slower one with the faster one
    at token 63, from a prompt whose error sums are still pending: each level's chunk is summed in one
    product at its boundary, and that equals the forward's per-token sums."""
    ids = torch.randint(0, VOCAB, (2, 70), generator=torch.Generator().manual_seed(2))
    _check_decoding(_model("hope", **{"cms.variant": variant}), ids, prompt_len=prompt_len)


def test_level_steps_name_the_levels_whose_chunk_a_token_completes():
    model = _model("hope")  # CMS levels of 16 and 64 tokens
    assert [model.level_steps(p) for p in (0, 14, 15, 62, 63)] == [
        (False, False), (False, False), (True, False), (False, False), (True, True)
    ]  # fmt: skip
    assert _model("transformer").level_steps(15) == ()
    assert _model("hope", **{"cms.error": "none"}).level_steps(15) == ()


@pytest.mark.parametrize(
    "overrides",
    [
        {"cms.variant": "nested"},
        {"cms.variant": "independent"},
        {"cms.level": "swiglu"},
        {"titans.surprise.mode": "absolute", "titans.surprise.threshold": 0.05},
        {"titans.decay_to": "init"},
        {"titans.update_rule": "gd", "titans.objective": "dot"},
    ],
    ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()),
)
def test_decoding_options(overrides):
    ids = torch.randint(0, VOCAB, (1, 35), generator=torch.Generator().manual_seed(2))
    _check_decoding(_model("hope", **overrides), ids, prompt_len=16)


def test_decoding_from_the_start_of_a_stream():
    ids = torch.randint(0, VOCAB, (2, 20), generator=torch.Generator().manual_seed(3))
    _check_decoding(_model("hope"), ids, prompt_len=0)
    _check_decoding(_model("transformer"), ids, prompt_len=0)


@pytest.mark.parametrize("preset", ["hope", "hope-no-cms", "transformer"])
def test_autocast_decoder_casts_weights_once_and_gives_autocasts_numbers(preset):
    """Built under autocast, the decoder multiplies by weights cast once (the CMS fast weights as read
    copies that follow every level step): bit for bit the numbers of casting them every token, and it
    keeps its autocast when stepped outside one. The Titans memories and projections stay float32."""
    model = _model(preset).float()
    ids = torch.randint(0, VOCAB, (2, 50), generator=torch.Generator().manual_seed(4))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        _, state = model(ids[:, :13])
        decoder = Decoder(model, state, batch_size=2, max_len=50)
        plain = model.static_state(state, 2, 50)  # no read copies: autocast casts every token
    assert decoder.weights and all(w.dtype == torch.bfloat16 for w in decoder.weights.values())
    assert not any(".mixer." in name for name in decoder.weights) or preset == "transformer"
    if preset == "hope":
        ffn = decoder.state["blocks"][0]["ffn"]
        assert ffn["read"][0][0].dtype == torch.bfloat16 and ffn["fast"][0][0].dtype == torch.float32
    for t in range(13, 50):  # the faster tiny CMS level steps at 15, 31 and 47
        logits = decoder.step(ids[:, t])
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            expected = model.decode_step(ids[:, t : t + 1], plain, model.level_steps(t))
        assert torch.equal(logits, expected), f"token {t}"


def test_decoding_leaves_the_given_state_alone():
    model = _model("hope")
    ids = torch.randint(0, VOCAB, (1, 12))
    with torch.no_grad():
        _, state = model(ids)
    before = [w.clone() for w in state["blocks"][0]["mixer"]["weights"]]
    decoder = Decoder(model, state, batch_size=1, max_len=20)
    for t in range(5):
        decoder.step(ids[:, t])
    for w, b in zip(state["blocks"][0]["mixer"]["weights"], before):
        assert torch.equal(w, b)


def test_bad_decoder_inputs_are_refused():
    model = _model("transformer")
    ids = torch.randint(0, VOCAB, (2, 10))
    with torch.no_grad():
        _, state = model(ids)
    with pytest.raises(ValueError, match="holds 2 sequences, but batch_size=3"):
        Decoder(model, state, batch_size=3, max_len=20)
    with pytest.raises(ValueError, match="more than the cache's max_len=8"):
        Decoder(model, state, batch_size=2, max_len=8)
    decoder = Decoder(model, state, batch_size=2, max_len=11)
    decoder.step(ids[:, 0])
    with pytest.raises(ValueError, match="max_len=11"):
        decoder.step(ids[:, 0])
    with pytest.raises(ValueError, match="blocks"):
        Decoder(_model("transformer", n_layers=3), state, batch_size=2, max_len=20)
    with pytest.raises(ValueError, match="must have shape"):
        Decoder(_model("transformer", d_model=32, n_heads=2), state, batch_size=2, max_len=20)
    with pytest.raises(ValueError, match="max_len must be an integer"):
        Decoder(model, None, batch_size=2, max_len=0)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="needs the model on CUDA"):
            Decoder(model, None, batch_size=2, max_len=4, cuda_graph=True)


def test_lm_error_cms_is_refused_with_the_way_out():
    model = _model("hope", **{"cms.error": "lm"})
    with pytest.raises(ValueError, match="model\\(ids, state\\)"):
        Decoder(model, None, batch_size=1, max_len=8)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
@pytest.mark.parametrize("preset", ["hope", "titans", "transformer"])
@pytest.mark.parametrize("compile", [False, True])
@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16-autocast"])
def test_cuda_graph_step_equals_the_eager_step(preset, compile, bf16):
    """Under bf16 autocast the graph also replays the step on the weights cast once; compiled kernels
    round differently from eager ones there, hence the wider tolerance."""
    model = _model(preset).float().cuda()
    ids = torch.randint(0, VOCAB, (2, 30), device="cuda")
    precision = torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16)
    with torch.no_grad(), precision:
        _, state = model(ids[:, :11])
        eager = Decoder(model, state, batch_size=2, max_len=30, cuda_graph=False)
        graphed = Decoder(model, state, batch_size=2, max_len=30, cuda_graph=True, compile=compile)
    tol = 3e-2 if bf16 else 1e-5
    for t in range(11, 30):
        got, want = graphed.step(ids[:, t]), eager.step(ids[:, t])
        torch.testing.assert_close(got.float(), want.float(), rtol=tol, atol=tol)
