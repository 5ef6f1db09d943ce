"""benchmarks/optimizers.py end to end at toy sizes: both tasks write their results, the vision task
reports accuracies, and a run is deterministic for a seed."""

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "optimizers.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("optimizers_benchmark", _PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


VISION = ["--task", "vision", "--device", "cpu", "--steps", "4", "--seeds", "2", "--n-train", "64"]
VISION += ["--n-eval", "40", "--d-model", "16", "--n-layers", "1", "--eval-every", "2", "--batch-size", "8"]


def test_the_vision_task_compares_every_optimizer_and_writes_its_files(bench, tmp_path):
    bench.main([*VISION, "--out", str(tmp_path), "--lrs", "adamw=1e-3:3e-3,muon=1e-2,m3=1e-4,m3_orth=1e-3"])
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["summary"]) == {"adamw", "muon", "m3", "m3_orth"}
    assert len(results["runs"]) == (2 + 1 + 1 + 1) * 2
    for run in results["runs"]:
        assert len(run["train_loss"]) == 4 and [step for step, _ in run["val"]] == [2, 4]
        assert 0 <= run["final"]["test_accuracy"] <= 1 and run["opt_ms"] > 0
    adamw = results["summary"]["adamw"]
    by_lr = {
        lr: sum(
            r["final"]["val_accuracy"] for r in results["runs"] if r["optimizer"] == "adamw" and r["lr"] == lr
        )
        / 2
        for lr in (1e-3, 3e-3)
    }
    assert adamw["best_lr"] == max(by_lr, key=by_lr.get)  # the best LR has the highest validation accuracy
    assert "| m3_orth | 0.001 |" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "loss_curves.png").stat().st_size > 0


def test_a_run_is_deterministic_for_a_seed(bench):
    args = argparse.Namespace(
        task="vision",
        device="cpu",
        steps=3,
        batch_size=8,
        image_size=16,
        patch=4,
        n_train=32,
        n_eval=20,
        noise=0.15,
        d_model=16,
        n_layers=1,
        n_heads=2,
        adamw_lr=3e-3,
        weight_decay=0.0,
        eval_every=3,
    )
    task = bench.vision_task(args)
    first, second = (bench.run("m3", 1e-4, 0, task, args) for _ in range(2))
    assert first["train_loss"] == second["train_loss"] and first["final"] == second["final"]


def test_the_lm_task_still_runs(bench, tmp_path):
    bench.main(
        [
            "--task",
            "lm",
            "--device",
            "cpu",
            "--steps",
            "2",
            "--seeds",
            "1",
            "--batch-size",
            "2",
            "--seq-len",
            "16",
        ]
        + ["--d-model", "16", "--n-layers", "1", "--val-batches", "1", "--optimizers", "adamw,m3"]
        + ["--lrs", "adamw=1e-3,m3=1e-4", "--out", str(tmp_path)]
    )
    summary = json.loads((tmp_path / "results.json").read_text())["summary"]
    assert set(summary) == {"adamw", "m3"} and torch.isfinite(
        torch.tensor(summary["m3"]["metrics"]["val_loss"]["mean"])
    )


def test_bad_input_is_refused_by_name(bench, tmp_path, capsys):
    with pytest.raises(SystemExit):
        bench.main(["--task", "vision", "--patch", "5", "--out", str(tmp_path)])
    assert "--patch must divide --image-size (16); got 5" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main(["--task", "vision", "--optimizers", "adamw,sgd", "--out", str(tmp_path)])
    assert "--optimizers: unknown ['sgd']" in capsys.readouterr().err
