import pytest
from tiny_run import TINY

from hope.data import builtin_text
from hope.train import TrainConfig


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
            **TINY,
            "model_overrides": dict(TINY["model_overrides"]),
            "data": [str(corpus)],
            "steps": 8,
            "lr": 3e-3,
            "eval_every": 4,
            "save_every": 4,
            "log_every": 1,
            "out": str(tmp_path / out),
        }
        fields.update(changes)
        return TrainConfig(**fields)

    return make
