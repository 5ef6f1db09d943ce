"""`hope bench-suite` and `hope eval SUITE` end to end on CPU, and bad arguments fail clearly."""

import json
import math
import statistics

import pytest
from tiny_run import train_argv

from hope.bench.run import BenchConfig
from hope.cli import main
from hope.data import builtin_text
from hope.suites import get_suite


def test_bench_suite_formal_end_to_end(tmp_path, capsys):
    out = tmp_path / "bench"
    argv = [
        "bench-suite",
        "formal",
        "--presets",
        "transformer,hope",
        "--steps",
        "5",
        "--seeds",
        "2",
        "--size",
        "tiny",
        "--tasks",
        "parity",
        "--train-length",
        "10",
        "--lengths",
        "10,20",
        "--n-test",
        "8",
        "--batch-size",
        "8",
        "--device",
        "cpu",
        "--out",
        str(out),
        "--titans.chunk_size",
        "4",
    ]
    assert main(argv) == 0
    assert "[4/4]" in capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    assert results["complete"] and results["suite"] == "formal" and results["metric"] == "accuracy"
    assert [(r["preset"], r["seed"]) for r in results["runs"]] == [  # seed-major
        ("transformer", 0),
        ("hope", 0),
        ("transformer", 1),
        ("hope", 1),
    ]
    run = results["runs"][0]
    assert [(r["min_length"], r["length"]) for r in run["results"]] == [(1, 10), (11, 20)]
    assert all(r["n"] == 8 and 0 <= r["accuracy"] <= 1 and r["chance"] == 0.5 for r in run["results"])
    # Parameter counts matched to hope within 5%.
    params = {r["preset"]: r["params"] for r in results["runs"]}
    assert abs(params["transformer"] - params["hope"]) <= 0.05 * params["hope"]
    # Mean and std over seeds, per preset x test point, plus the beyond-training aggregate.
    summary = {(s["preset"], s["label"]): s for s in results["summary"]}
    assert set(summary) == {
        (p, x) for p in ("transformer", "hope") for x in ("1-10", "11-20", "beyond training")
    }
    hope_runs = [r for r in results["runs"] if r["preset"] == "hope"]
    accs = [r["results"][1]["accuracy"] for r in hope_runs]
    assert summary["hope", "11-20"]["mean"] == pytest.approx(statistics.fmean(accs))
    assert summary["hope", "11-20"]["std"] == pytest.approx(statistics.stdev(accs))
    assert summary["hope", "beyond training"]["mean"] == pytest.approx(statistics.fmean(accs))
    table = (out / "results.md").read_text()
    assert "| preset | params | 1-10 | 11-20 | beyond training |" in table
    row = next(line for line in table.splitlines() if line.startswith("| hope |"))
    assert f"{summary['hope', '11-20']['mean']:.3f} ± {summary['hope', '11-20']['std']:.3f}" in row
    assert (out / "accuracy_vs_length.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    config = json.loads((out / "config.json").read_text())
    assert config["train_length"] == 10 and config["lengths"] == [10, 20] and config["seeds"] == 2
    assert config["models"]["5"]["hope"]["name"] == "hope"  # formal parity: vocabulary 2 + 3
    assert config["models"]["5"]["hope"]["titans"]["chunk_size"] == 4
    assert main(argv) == 1 and "already holds results" in capsys.readouterr().err


def test_eval_suite_on_a_trained_run(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(builtin_text()[:20_000])
    run = tmp_path / "run"
    assert main(["train", *train_argv(steps=2, eval_batches=1, data=[str(corpus)], out=str(run))]) == 0
    capsys.readouterr()
    for argv, labels in [
        (["formal", "--tasks", "parity,dyck-1", "--lengths", "10,20"], ["1-10", "11-20", "1-10", "11-20"]),
        (["niah", "--tasks", "s-niah-1", "--lengths", "700", "--piece", "100"], ["700"]),
        (["continual", "--tasks", "domain-lm", "--lengths", "40"], ["40"]),
    ]:
        assert main(["eval", *argv, "--run", str(run), "--n", "3", "--device", "cpu"]) == 0
        result = json.loads(capsys.readouterr().out)
        assert result["step"] == 2 and result["suite"] == argv[0]
        assert [r["label"] for r in result["results"]] == labels
        metric = "loss" if argv[0] == "continual" else "accuracy"
        assert all(math.isfinite(r[metric]) and "chance" in r for r in result["results"])


@pytest.mark.parametrize(
    "argv, message",
    [
        (["bench-suite", "copying"], "invalid choice: 'copying'"),
        (["bench-suite", "formal", "--presets", "hope,gpt"], "bench.presets must be one of"),
        (["bench-suite", "formal", "--tasks", "parity,dyck-3"], "bench.tasks must be one of ['parity'"),
        (
            ["bench-suite", "formal", "--lengths", "10,0"],
            "--lengths: must be a comma-separated list of positive",
        ),
        (["bench-suite", "mad", "--train-length", "64"], "bench.train_length does not apply to mad"),
        (["bench-suite", "niah", "--size", "huge"], "invalid choice: 'huge'"),
        (["bench-suite", "niah", "--steps", "0"], "--steps: must be a positive integer"),
        (
            ["bench-suite", "niah", "--titans.chunk_sise", "8"],
            "unknown config field 'titans.chunk_sise'",
        ),
        (["bench-suite", "niah", "--titans.chunk_size"], "--titans.chunk_size needs a value"),
        (["bench-suite", "niah", "--chunk", "8"], "unrecognized argument '--chunk'"),
        (["bench-suite", "formal", "--n-tasks", "3"], "--n-tasks applies only to bench-suite continual"),
        (["bench-suite", "mad", "--save-stages"], "--save-stages applies only to bench-suite continual"),
        (["eval", "formal", "--run", "nowhere", "--titans.chunk_size", "8"], "unrecognized arguments"),
        (["eval", "formal", "--run", "nowhere"], "no run directory at nowhere"),
        (["eval", "mad", "--run", "nowhere", "--tasks", "recall"], "--tasks must be from in-context-recall"),
    ],
)
def test_bad_arguments_exit_2_naming_the_field(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_bad_bench_config_values_and_impossible_lengths(tmp_path, capsys):
    with pytest.raises(ValueError, match="bench.batch_size must be an integer >= 1"):
        BenchConfig(suite="formal", batch_size=0)
    with pytest.raises(ValueError, match="bench.lr must be a finite number > 0"):
        BenchConfig(suite="formal", lr=0.0)
    # A test bin with no valid string is refused before any model trains.
    argv = [
        "bench-suite",
        "formal",
        "--tasks",
        "anbncn",
        "--lengths",
        "30,31",
        "--device",
        "cpu",
        "--out",
        str(tmp_path / "b"),
    ]
    assert main(argv) == 1
    assert "holds no length where anbncn" in capsys.readouterr().err
    assert not (tmp_path / "b" / "results.json").exists()


def test_help_lists_the_new_commands(capsys):
    with pytest.raises(SystemExit):
        main(["bench-suite", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert all(
        w in out
        for w in ("--presets", "--seeds", "--lengths", "--train-length", "--size", "formal, niah, mad")
    )
    assert get_suite("formal").tasks[0] in out
