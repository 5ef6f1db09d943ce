"""Streaming in fixed pieces on static buffers (hope.models.stream) equals model(ids, state)."""

import pytest
import torch

from hope import ModelConfig, build_model
from hope.models.decode import Decoder, state_tensors
from hope.models.stream import Streamer

VOCAB = 61


def _model(preset: str, **overrides):
    overrides.setdefault("impl", "chunked")
    config = ModelConfig.preset(preset, size="tiny", vocab_size=VOCAB, **overrides)
    torch.manual_seed(0)
    return build_model(config).double().eval()


def _check(model, ids, prompt: int, piece: int):
    """A prompt through model(ids), then pieces through the Streamer: every piece's logits and the
    final state equal one forward over the whole sequence; the state continues a Decoder."""
    with torch.no_grad():
        full, end = model(ids)
        state = model(ids[:, :prompt])[1] if prompt else None
    streamer = Streamer(model, state, batch_size=ids.shape[0], piece=piece)
    for t in range(prompt, ids.shape[1], piece):
        logits = streamer(ids[:, t : t + piece])
        torch.testing.assert_close(logits, full[:, t : t + piece], rtol=1e-9, atol=1e-9, msg=f"piece at {t}")
    with torch.no_grad():  # the streamed state goes on as the forward's would
        more = torch.randint(0, VOCAB, (ids.shape[0], 5), generator=torch.Generator().manual_seed(9))
        want, _ = model(more, end)
        got, _ = model(more, streamer.state())
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
    decoder = Decoder(model, streamer.state(), batch_size=ids.shape[0], max_len=ids.shape[1] + 5)
    torch.testing.assert_close(decoder.step(more[:, 0])[:, 0], want[:, 0], rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("preset", ["hope", "hope-no-surprise", "titans", "hope-no-cms", "gated-deltanet"])
def test_streamed_pieces_equal_one_forward(preset):
    # tiny: Titans chunks of 16, CMS levels of 16 and 64 tokens; 32-token pieces cross both levels'
    # boundaries in every pattern the stream position gives
    ids = torch.randint(0, VOCAB, (2, 160), generator=torch.Generator().manual_seed(1))
    _check(_model(preset), ids, prompt=0, piece=32)


@pytest.mark.parametrize("variant", ["nested", "independent"])
def test_streaming_from_a_prompt_with_pending_cms_sums(variant):
    """The prompt ends between the slower level's boundaries, so its error sum is pending."""
    ids = torch.randint(0, VOCAB, (1, 144), generator=torch.Generator().manual_seed(2))
    _check(_model("hope", **{"cms.variant": variant}), ids, prompt=48, piece=16)


def test_streaming_leaves_the_given_state_alone():
    model = _model("hope")
    ids = torch.randint(0, VOCAB, (1, 64))
    with torch.no_grad():
        _, state = model(ids[:, :32])
    before = [w.clone() for w in state["blocks"][0]["mixer"]["weights"]]
    streamer = Streamer(model, state, batch_size=1, piece=32)
    streamer(ids[:, 32:])
    for w, b in zip(state["blocks"][0]["mixer"]["weights"], before):
        assert torch.equal(w, b)


@pytest.mark.parametrize("preset", ["hope", "titans"])
def test_reset_starts_a_new_stream(preset):
    """After a stream whose pieces moved the surprise count and every level, `reset` streams a new
    sequence as a fresh model does (the host's counters included, not only the buffers)."""
    model = _model(preset)
    first, second = torch.randint(0, VOCAB, (2, 2, 96), generator=torch.Generator().manual_seed(3))
    streamer = Streamer(model, None, batch_size=2, piece=32)
    for t in range(0, 96, 32):
        streamer(first[:, t : t + 32])
    streamer.reset()
    with torch.no_grad():
        want, end = model(second)
    for t in range(0, 96, 32):
        torch.testing.assert_close(streamer(second[:, t : t + 32]), want[:, t : t + 32], rtol=1e-9, atol=1e-9)
    with torch.no_grad():  # the state goes on as the fresh forward's would
        more = torch.randint(0, VOCAB, (2, 16), generator=torch.Generator().manual_seed(4))
        torch.testing.assert_close(
            model(more, streamer.state())[0], model(more, end)[0], rtol=1e-9, atol=1e-9
        )


def test_bad_streamer_inputs_are_refused():
    model = _model("hope")
    with pytest.raises(ValueError, match="piece=24 must be a multiple of 16"):
        Streamer(model, None, batch_size=1, piece=24)
    with torch.no_grad():
        _, state = model(torch.randint(0, VOCAB, (2, 20)))
    with pytest.raises(ValueError, match="ends at token 20, off the grid"):
        Streamer(model, state, batch_size=2, piece=16)
    with pytest.raises(ValueError, match="holds 2 sequences, but batch_size=1"):
        Streamer(model, state, batch_size=1, piece=16)
    with pytest.raises(ValueError, match="attends over a cache"):
        Streamer(_model("transformer"), None, batch_size=1, piece=16)
    with pytest.raises(ValueError, match="cms.error='lm'"):
        Streamer(_model("hope", **{"cms.error": "lm"}), None, batch_size=1, piece=16)
    streamer = Streamer(model, None, batch_size=1, piece=16)
    with pytest.raises(ValueError, match="ids must have shape \\(1, 16\\)"):
        streamer(torch.zeros(1, 8, dtype=torch.long))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="needs the model on CUDA"):
            Streamer(model, None, batch_size=1, piece=16, cuda_graph=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
@pytest.mark.parametrize("preset", ["hope", "titans"])
@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16-autocast"])
def test_cuda_graph_pieces_equal_eager_pieces(preset, bf16):
    model = _model(preset, impl="auto").float().cuda()
    ids = torch.randint(0, VOCAB, (2, 192), device="cuda")
    precision = torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16)
    with precision:
        eager = Streamer(model, None, batch_size=2, piece=32, cuda_graph=False)
        graphed = Streamer(model, None, batch_size=2, piece=32, cuda_graph=True)
    tol = 3e-2 if bf16 else 1e-5
    for t in range(0, 192, 32):
        got, want = graphed(ids[:, t : t + 32]), eager(ids[:, t : t + 32])
        torch.testing.assert_close(got.float(), want.float(), rtol=tol, atol=tol, msg=f"piece at {t}")
    for a, b in zip(state_tensors(graphed.state()), state_tensors(eager.state()), strict=True):
        torch.testing.assert_close(a.float(), b.float(), rtol=tol, atol=tol)
    graphed.reset()  # the graphs replay on the reset buffers
    eager.reset()
    for t in range(0, 64, 32):
        got, want = graphed(ids[:, t : t + 32]), eager(ids[:, t : t + 32])
        torch.testing.assert_close(
            got.float(), want.float(), rtol=tol, atol=tol, msg=f"after reset, piece at {t}"
        )
