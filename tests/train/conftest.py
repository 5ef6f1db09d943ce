import pytest

from hope.data import builtin_text
from hope.train import TrainConfig


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    # One token cache per test session: tests share the tokenised corpus and never touch ~/.cache.
    monkeypatch.setenv("HOPE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "hope-cache"))


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "shakespeare.txt"
    path.write_text(builtin_text()[:60_000])
    return path


@pytest.fixture
def tiny_cfg(corpus, tmp_path):
    """A TrainConfig for a tiny transformer that trains in about a second on a CPU."""

    def make(out="run", **changes) -> TrainConfig:
        fields = {
            "preset": "transformer",
            "model_overrides": {"d_model": 32, "n_layers": 1, "n_heads": 2},
            "data": [str(corpus)],
            "seq_len": 32,
            "batch_size": 4,
            "steps": 8,
            "lr": 3e-3,
            "eval_every": 4,
            "eval_batches": 2,
            "save_every": 4,
            "log_every": 1,
            "sample_tokens": 0,
            "device": "cpu",
            "out": str(tmp_path / out),
        }
        fields.update(changes)
        return TrainConfig(**fields)

    return make
