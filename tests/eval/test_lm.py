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
    run = lambda piece: evaluate_lm(model, tokens, 70, 2, lengths, torch.device("cpu"), piece=piece)
    whole, streamed = run(None), run(23)  # uneven pieces, crossing chunk and CMS boundaries
    assert streamed["tokens"] == whole["tokens"] == 4 * 70
    assert streamed["loss"] == pytest.approx(whole["loss"], rel=1e-6)
    assert whole["loss"] > 0
