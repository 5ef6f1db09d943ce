"""evaluate_lm: streaming each window in pieces gives the loss of the whole window."""

import numpy as np
import pytest
import torch

from hope import ModelConfig, build_model
from hope.eval.lm import evaluate_lm


@pytest.mark.parametrize("preset", ["hope", "transformer"])
def test_streamed_windows_give_the_whole_windows_loss(preset):
    torch.manual_seed(0)
    model = build_model(ModelConfig.preset(preset, size="tiny", vocab_size=256, impl="chunked")).double()
    tokens = np.random.default_rng(0).integers(0, 256, 4 * 70 + 1).astype(np.int64)
    lengths = np.ones(256, dtype=np.int64)

    def run(piece):
        return evaluate_lm(model, tokens, 70, 2, lengths, torch.device("cpu"), piece=piece)

    whole, streamed = run(None), run(23)  # uneven pieces, crossing chunk and CMS boundaries
    assert streamed["tokens"] == whole["tokens"] == 4 * 70
    assert streamed["loss"] == pytest.approx(whole["loss"], rel=1e-6)
    assert whole["loss"] > 0


@pytest.mark.parametrize("preset", ["hope", "titans"])
def test_whole_pieces_stream_through_the_streamer_with_the_same_loss(preset, monkeypatch):
    # tiny: 16-token Titans chunks and CMS segments, so 32-token pieces are on the Streamer's grid;
    # 80-token windows leave a 16-token tail for model(ids, state), and 5 windows in batches of 2
    # leave a batch of 1 (a second Streamer) after one Streamer is reset for a new window
    from hope.models.stream import Streamer

    torch.manual_seed(0)
    model = build_model(ModelConfig.preset(preset, size="tiny", vocab_size=256, impl="chunked")).double()
    tokens = np.random.default_rng(1).integers(0, 256, 5 * 80 + 1).astype(np.int64)
    lengths = np.ones(256, dtype=np.int64)
    pieces = []
    streamed_call = Streamer.__call__

    def counted(self, ids):
        pieces.append(tuple(ids.shape))
        return streamed_call(self, ids)

    monkeypatch.setattr(Streamer, "__call__", counted)

    def run(piece):
        return evaluate_lm(model, tokens, 80, 2, lengths, torch.device("cpu"), piece=piece)

    whole, streamed = run(None), run(32)
    assert pieces == [(2, 32)] * 4 + [(1, 32)] * 2
    assert streamed["tokens"] == whole["tokens"] == 5 * 80
    assert streamed["loss"] == pytest.approx(whole["loss"], rel=1e-6)  # float32 cross-entropy sums
