import pytest

from hope.data import builtin_text
from hope.train import TrainConfig, train


@pytest.fixture(scope="session")
def bpe_run(tmp_path_factory):
    """A one-step tiny Transformer++ run with a BPE tokeniser (a run directory as `hope train` writes it)."""
    root = tmp_path_factory.mktemp("hf-run")
    corpus = root / "corpus.txt"
    corpus.write_text(builtin_text()[:20_000])
    cfg = TrainConfig(
        preset="transformer",
        model_overrides={"d_model": 32, "n_layers": 1},
        data=[str(corpus)],
        tokenizer="bpe:300",
        seq_len=32,
        batch_size=2,
        steps=1,
        eval_batches=1,
        sample_tokens=0,
        device="cpu",
        out=str(root / "run"),
    )
    with (
        pytest.MonkeyPatch.context() as mp
    ):  # session-scoped: tests/conftest.py's cache fixture is not yet set
        mp.setenv("HOPE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "hope-cache"))
        train(cfg)
    return root / "run"
