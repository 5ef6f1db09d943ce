"""The `hope` command: help for every subcommand, clear errors for bad values, train → generate → eval."""

import json
import subprocess
import sys

import pytest
from tiny_run import train_argv

from hope.cli import main
from hope.data import builtin_text

TINY = train_argv(sample_tokens=10)


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "shakespeare.txt"
    path.write_text(builtin_text()[:30_000])
    return path


@pytest.mark.parametrize(
    "argv, expected",
    [
        ([], ["train", "generate", "eval"]),
        (
            ["train"],
            [
                "--preset",
                "--titans.chunk_size",
                "--tokenizer",
                "--grad-accum",
                "--resume",
                "--fsdp",
                "--tokens",
            ],
        ),
        (["generate"], ["--run", "--prompt", "--temperature", "--top-k", "--top-p"]),
        (["eval"], ["lm"]),
        (["eval", "lm"], ["--run", "--data", "bits per byte"]),
    ],
)
def test_help(argv, expected, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--help"])
    assert exit_.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert all(word in out for word in expected), out


def test_python_dash_m_hope():
    result = subprocess.run(
        [sys.executable, "-m", "hope", "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0 and "generate" in result.stdout


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--seq-len", "0"], "--seq-len: must be a positive integer"),
        (["--steps", "2.5"], "--steps: must be an integer"),
        (["--precision", "fp16"], "invalid choice: 'fp16'"),
        (["--tokenizer", "bpe:10"], "bpe:N needs 257 <= N"),
        (["--preset", "gpt"], "train.preset must be one of"),
        (["--optimizer", "sgd"], "train.optimizer must be one of"),
        (["--batch-size", "6", "--grad-accum", "4"], "must be divisible by train.grad_accum"),
        (["--model.d_modle", "64"], "unknown config field 'd_modle'"),
        (["--titans.chunk_size", "0"], "titans.chunk_size"),
        (["--titans.chunk_size"], "--titans.chunk_size needs a value"),
        (["--bogus", "1"], "unrecognized argument '--bogus'"),
        (["--steps", "10", "--tokens", "100"], "alternatives"),
    ],
)
def test_bad_train_values_exit_2_with_a_clear_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", *argv])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_missing_data_is_a_clear_runtime_error(tmp_path, capsys):
    assert main(["train", *TINY, "--data", str(tmp_path / "nope.txt"), "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert "hope train: error: --data" in err and "nope.txt': no such file" in err


def test_train_generate_eval_resume(corpus, tmp_path, capsys):
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                *TINY,
                "--data",
                str(corpus),
                "--steps",
                "4",
                "--eval-every",
                "2",
                "--save-every",
                "2",
                "--out",
                str(run),
                "--titans.chunk_size",
                "16",
            ]
        )
        == 0
    )
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["titans"]["chunk_size"] == 16 and config["model"]["d_model"] == 32
    assert "--- sample ---" in capsys.readouterr().out

    assert (
        main(["generate", "--run", str(run), "--prompt", "ROMEO:", "--max-tokens", "20", "--top-k", "5"]) == 0
    )
    assert capsys.readouterr().out.startswith("ROMEO:")

    assert main(["eval", "lm", "--run", str(run), "--data", str(corpus), "--max-batches", "2"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["step"] == 4 and result["tokens"] == 2 * 8 * 32
    assert result["bpb"] == pytest.approx(result["loss"] / 0.6931471805599453)
    args = ["eval", "lm", "--run", str(run), "--data", str(corpus), "--max-batches", "2", "--piece", "7"]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["loss"] == pytest.approx(result["loss"], rel=1e-4)

    with pytest.raises(SystemExit):
        main(["train", "--resume", str(run), "--lr", "1"])
    assert "cannot change lr" in capsys.readouterr().err
    assert main(["train", "--resume", str(run), "--steps", "6"]) == 0
    assert json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 6
    assert main(["train", *TINY, "--data", str(corpus), "--out", str(run)]) == 1
    assert "already holds a run" in capsys.readouterr().err


def test_generate_and_eval_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["generate", "--run", str(tmp_path), "--prompt", "x"])
    assert exit_.value.code == 2 and "not a run directory" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["generate", "--run", str(tmp_path), "--prompt", "x", "--top-p", "1.5"])
    assert "must be in (0, 1]" in capsys.readouterr().err


def test_default_hope_preset_end_to_end(tmp_path, monkeypatch, capsys):
    """`hope train` as the quick start runs it (tiny HOPE, built-in corpus), cut to 2 steps."""
    monkeypatch.chdir(tmp_path)
    assert (
        main(["train", "--steps", "2", "--eval-batches", "1", "--sample-tokens", "8", "--device", "cpu"]) == 0
    )
    run = (tmp_path / "runs" / "latest").resolve()
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["block"] == "hope" and config["train"]["data"] == ["builtin"]
    capsys.readouterr()
    assert main(["generate", "--run", "runs/latest", "--prompt", "ROMEO:", "--max-tokens", "8"]) == 0
    assert capsys.readouterr().out.startswith("ROMEO:")
