"""BABILong through bench-suite (issue 17, item 3): streaming a prompt in pieces gives the logits and
answers of one call, and an attention model's lengths past its context are reported as such."""

import json

import numpy as np
import pytest
import torch

import hope
from hope.bench import run as R
from hope.bench.report import results_markdown
from hope.bench.run import BenchConfig
from hope.data.tokenizer import ByteTokenizer
from hope.eval.predict import predict, prompt_ids, stream_pieces
from hope.suites import babi


@pytest.mark.parametrize("preset", ["hope", "titans", "transformer"])
def test_streaming_in_pieces_equals_one_call(preset):
    torch.manual_seed(0)
    model = hope.build_model(hope.ModelConfig.preset(preset, "tiny")).eval()
    examples = babi.generate("qa1", 2, 320, 0, facts=4)
    ids = torch.from_numpy(np.stack([prompt_ids(ex, ByteTokenizer()) for ex in examples]))
    with torch.no_grad():
        whole, _ = model(ids)
    streamers = {}  # on the chunk grid (64, 320) memory models go through a Streamer, reset per call
    for piece, kept in [
        (64, None),
        (50, None),
        (320, None),
        (64, streamers),
        (64, streamers),
        (320, streamers),
    ]:
        # whole chunks, pieces cutting Titans and CMS chunks, one piece
        seen: list[torch.Tensor] = []
        last, _ = stream_pieces(
            model, ids, piece, torch.device("cpu"), "fp32", lambda _, x, to=seen: to.append(x), kept
        )
        torch.testing.assert_close(torch.cat(seen, 1), whole, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(last, whole[:, -1], rtol=1e-4, atol=1e-4)
    assert len(streamers) == (0 if preset == "transformer" else 2)
    one = predict(model, "babi", examples, piece=4096)
    streamed = predict(model, "babi", examples, piece=37, batch_size=1)
    assert streamed == one and babi.score(examples, streamed) == babi.score(examples, one)


def _bench(out, **changes) -> BenchConfig:
    settings = {
        "suite": "babi",
        "presets": ("transformer", "titans"),
        "tasks": ("qa1",),
        "steps": 1,
        "seeds": 1,
        "batch_size": 2,
        "n_test": 2,
        "train_length": 512,
        "lengths": (512, 1024),
        "device": "cpu",
        "out": str(out),
    }
    return BenchConfig(**{**settings, **changes})


def test_context_defaults_to_four_training_lengths_for_babi_and_applies_to_no_other_suite(tmp_path):
    assert _bench(tmp_path).resolved_context == 2048
    assert _bench(tmp_path, context=600).resolved_context == 600
    with pytest.raises(ValueError, match="bench.context does not apply to formal"):
        BenchConfig(suite="formal", context=100)
    with pytest.raises(ValueError, match="bench.context"):
        _bench(tmp_path, context=0)


def test_lengths_past_the_transformers_context_are_reported_beyond_context(tmp_path):
    results = R.run_bench(_bench(tmp_path, context=600), log=lambda _: None)
    by_preset = {r["preset"]: r for r in results["runs"]}
    transformer, titans = by_preset["transformer"], by_preset["titans"]
    assert transformer["context"] == 600 and titans["context"] is None
    assert [r["accuracy"] is None for r in transformer["results"]] == [False, True]
    assert transformer["results"][1]["beyond_context"] == 600 and transformer["results"][1]["chance"] > 0
    assert all(r["accuracy"] is not None and "beyond_context" not in r for r in titans["results"])
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["config"]["context"] == 600
    rows = {
        line.split("|")[1].strip(): [c.strip() for c in line.split("|")[3:-1]]
        for line in (tmp_path / "results.md").read_text().splitlines()
        if line.startswith(("| transformer", "| titans"))
    }
    assert rows["transformer"][0].endswith("(1 seed)")
    assert rows["transformer"][1:] == ["beyond context", "beyond context"]  # 1024 and beyond training
    assert "beyond context" not in " ".join(rows["titans"])
    assert "context of 600 tokens" in results_markdown(results)
    assert (tmp_path / "accuracy_vs_length.png").exists()
