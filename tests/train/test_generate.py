import numpy as np
import torch

import hope
from hope.data import ByteTokenizer
from hope.generate import sample_next, stream


def _model():
    torch.manual_seed(0)
    return hope.build_model(
        hope.ModelConfig.preset("transformer", vocab_size=256, d_model=32, n_layers=1)
    ).eval()


def test_prompt_is_read_once_then_one_token_per_step():
    model, calls = _model(), []
    forward, decode_step = model.forward, model.decode_step

    def spy_forward(ids, state=None):
        calls.append(("forward", ids.shape[1], state is None))
        return forward(ids, state=state)

    def spy_step(ids, state, steps):
        calls.append(("step", ids.shape[1], state is None))
        return decode_step(ids, state, steps)

    model.forward, model.decode_step = spy_forward, spy_step
    "".join(stream(model, ByteTokenizer(), "ROMEO:", 5, temperature=0))
    assert calls == [("forward", 6, True)] + [("step", 1, False)] * 4


def test_greedy_streaming_matches_rereading_the_whole_sequence():
    model, tok = _model(), ByteTokenizer()
    ids = torch.as_tensor(tok.encode("To be, or not").astype(np.int64))[None]
    with torch.no_grad():
        for _ in range(12):
            logits, _ = model(ids)
            ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    expected = bytes(ids[0, -12:].tolist()).decode("utf-8", errors="ignore")  # as stream shows it
    assert "".join(stream(model, tok, "To be, or not", 12, temperature=0)) == expected


def test_top_k_and_top_p_restrict_the_support():
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0]]).repeat(2000, 1)
    g = torch.Generator().manual_seed(0)
    assert set(sample_next(logits, 1.0, 2, None, g).tolist()) == {0, 1}
    probs = logits[0].softmax(-1)  # top token holds ~0.64 of the mass, top two ~0.87
    assert set(sample_next(logits, 1.0, None, 0.5, g).tolist()) == {0}
    assert set(sample_next(logits, 1.0, None, 0.8, g).tolist()) == {0, 1}
    assert probs[:2].sum() > 0.8
    assert set(sample_next(logits, 1.0, None, None, g).tolist()) == {0, 1, 2, 3, 4}


class _Scripted(torch.nn.Module):
    """A model that emits a fixed byte sequence, whatever it reads."""

    def __init__(self, script):
        super().__init__()
        self.script = list(script)

    def forward(self, ids, state=None):
        step = 0 if state is None else state
        logits = torch.full((1, ids.shape[1], 256), -1e9)
        logits[0, -1, self.script[min(step, len(self.script) - 1)]] = 0.0
        return logits, step + 1


def test_generated_bytes_that_form_no_character_are_never_shown():
    # "é" split across two tokens, then a stray continuation byte, a lead byte cut short by "A", and a
    # last character left incomplete
    script = [0xC3, 0xA9, 0x80, 0xE2, 0x41, 0xE2, 0x82]
    pieces = list(stream(_Scripted(script), ByteTokenizer(), "x", len(script), temperature=0))
    assert "".join(pieces) == "éA"
    assert all("\ufffd" not in p for p in pieces)
