"""The continual-learning driver: its R matrix is what the saved stage models score when evaluated on
their own, its summaries are the metrics of those matrices, and bad input is refused by name."""

import json
import statistics

import pytest
import torch
from safetensors.torch import load_model

import hope
from hope.bench.continual import ContinualConfig, run_continual, run_sequence, scenario
from hope.eval.predict import evaluate
from hope.suites import continual


def _toy(out, **changes) -> ContinualConfig:
    """Two tasks of two classes, as small as a run gets."""
    settings = {
        "presets": ("transformer", "hope"),
        "n_tasks": 2,
        "length": 8,
        "lm_length": 16,
        "steps": 3,
        "seeds": 1,
        "batch_size": 8,
        "n_train": 16,
        "n_test": 8,
        "device": "cpu",
        "out": str(out),
        "overrides": {"impl": "chunked"},
    }
    return ContinualConfig(**{**settings, **changes})


def _reload(folder, name):
    model = hope.build_model(hope.ModelConfig.from_dict(json.loads((folder / "model.json").read_text())))
    load_model(model, str(folder / f"{name}.safetensors"))
    return model


def _own_score(model, examples, metric) -> float:
    """The task's score from its examples alone, in batches of a different size than the driver's."""
    return evaluate(model, "continual", examples, batch_size=3)[metric]


def test_r_matrix_entries_equal_direct_evaluations_of_the_saved_stage_models(tmp_path):
    results = run_continual(_toy(tmp_path, save_stages=True), log=lambda _: None)
    assert json.loads((tmp_path / "results.json").read_text())["runs"] == json.loads(
        json.dumps(results["runs"])
    )
    assert {(r["scenario"], r["preset"]) for r in results["runs"]} == {
        (s, p) for s in continual.tasks for p in ("transformer", "hope")
    }
    for run in results["runs"]:
        cfg = _toy(tmp_path)
        sc = scenario(cfg, run["scenario"])
        group = {"class-incremental": "task_id", "domain-lm": "domain", "languages": "language"}[
            run["scenario"]
        ]
        tasks = [
            [ex for ex in sc.test if ex.meta[group] == value]
            for value in dict.fromkeys(ex.meta[group] for ex in sc.test)
        ]
        assert len(tasks) == len(run["R"]) == 2 and run["stages"] == sc.stages
        folder = tmp_path / "stages" / run["scenario"] / f"{run['preset']}-seed0"
        for row, name in [(run["baseline"], "init"), *((run["R"][i], f"stage{i}") for i in range(2))]:
            model = _reload(folder, name)
            direct = [_own_score(model, examples, run["metric"]) for examples in tasks]
            assert row == pytest.approx(direct, abs=1e-6), (run["scenario"], run["preset"], name)
        # Training moved the weights: the stages are different models, so the comparison above has teeth.
        init, last = (dict(_reload(folder, name).named_parameters()) for name in ("init", "stage1"))
        assert any(not torch.equal(init[k], last[k]) for k in init)
        assert (run["acc"], run["bwt"], run["fwt"]) == pytest.approx(
            (continual.acc(run["R"]), continual.bwt(run["R"]), continual.fwt(run["R"], run["baseline"]))
        )


def test_the_summary_is_mean_and_std_over_seeds_and_the_files_are_written(tmp_path):
    cfg = _toy(tmp_path, presets=("transformer",), scenarios=("class-incremental",), seeds=2)
    results = run_continual(cfg, log=lambda _: None)
    (summary,) = results["summary"]
    runs = results["runs"]
    assert [r["seed"] for r in runs] == [0, 1] and results["complete"]
    for key in ("acc", "bwt", "fwt"):
        values = [r[key] for r in runs]
        assert summary[key] == pytest.approx(
            {"mean": statistics.fmean(values), "std": statistics.stdev(values)}
        )
    assert summary["R_mean"][1][0] == pytest.approx((runs[0]["R"][1][0] + runs[1]["R"][1][0]) / 2)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["n_tasks"] == 2 and set(config["models"]["class-incremental"]) == {"transformer"}
    table = (tmp_path / "results.md").read_text()
    assert f"| transformer | {summary['params']:,} | 2 | {summary['acc']['mean']:.3f} ± " in table
    assert (tmp_path / "r_matrix.png").stat().st_size > 0
    with pytest.raises(FileExistsError, match="already holds results"):
        run_continual(cfg, log=lambda _: None)


def test_a_stage_sequence_is_deterministic_for_a_seed(tmp_path):
    cfg = _toy(tmp_path, presets=("transformer",))
    sc = scenario(cfg, "domain-lm")
    model_cfg = hope.ModelConfig.preset("transformer", "tiny", vocab_size=sc.vocab)
    first, second = (
        run_sequence(cfg, sc, "transformer", model_cfg, 0, torch.device("cpu"), tmp_path) for _ in range(2)
    )
    assert first["R"] == second["R"] and first["train_loss"] == second["train_loss"]
    assert first["R"][0][0] < first["baseline"][0]  # training on A lowered A's loss


def test_the_languages_scenario_trains_l1_then_l2_and_scores_each_on_its_own_test_sentences(tmp_path):
    cfg = _toy(tmp_path, presets=("transformer",), scenarios=("languages",))
    sc = scenario(cfg, "languages")
    assert sc.stages == ["L1", "L2"] and sc.keys == ["accuracy/L1", "accuracy/L2"]
    assert [{ex.meta["language"] for ex in stage} for stage in sc.train] == [{"L1"}, {"L2"}]
    (run,) = run_continual(cfg, log=lambda _: None)["runs"]
    assert run["metric"] == "accuracy" and len(run["R"]) == 2
    assert all(0 <= v <= 1 for row in run["R"] for v in row)
    assert (
        "## languages (accuracy, higher is better; BWT < 0 is forgetting)"
        in (tmp_path / "results.md").read_text()
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"n_tasks": 1}, r"continual.n_tasks must be an integer >= 2, got 1"),
        (
            {"presets": ("hope", "nope")},
            r"continual.presets must be one of \[.*'hope', .*'titans'.*\], got 'nope'",
        ),
        (
            {"scenarios": ("domain",)},
            r"continual.scenarios must be one of \['class-incremental', 'domain-lm', 'languages'\], got 'domain'",
        ),
        ({"steps": 0}, r"continual.steps must be an integer >= 1, got 0"),
    ],
)
def test_bad_input_is_refused_naming_the_value_and_the_accepted_ones(tmp_path, changes, message):
    with pytest.raises(ValueError, match=message):
        _toy(tmp_path, **changes)


def test_the_command_runs_continual_and_takes_model_fields_as_dotted_options(tmp_path):
    from hope.cli import main

    argv = ["bench-suite", "continual", "--presets", "transformer", "--tasks", "class-incremental"]
    argv += ["--n-tasks", "2", "--n-train", "8", "--steps", "2", "--seeds", "1", "--batch-size", "4"]
    argv += ["--n-test", "4", "--device", "cpu", "--out", str(tmp_path), "--titans.chunk_size", "4"]
    assert main(argv) == 0
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["n_tasks"] == 2 and config["overrides"] == {"titans.chunk_size": 4}
    assert len(json.loads((tmp_path / "results.json").read_text())["runs"][0]["R"]) == 2


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--n-tasks", "1"], "continual.n_tasks must be an integer >= 2, got 1"),
        (
            ["--presets", "hope,nope"],
            "continual.presets must be one of ['deltanet', 'gated-deltanet', 'hope', ",
        ),
        (
            ["--tasks", "domain"],
            "continual.scenarios must be one of ['class-incremental', 'domain-lm', 'languages'], got 'domain'",
        ),
        (["--lengths", "64"], "--lengths does not apply to bench-suite continual"),
        (["--jobs", "2"], "--jobs does not apply to bench-suite continual"),
        (["--resume"], "--resume does not apply to bench-suite continual"),
    ],
)
def test_the_command_refuses_bad_input_by_name(tmp_path, capsys, options, message):
    from hope.cli import main

    with pytest.raises(SystemExit) as exit:
        main(["bench-suite", "continual", "--device", "cpu", "--out", str(tmp_path), *options])
    assert exit.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "config.json").exists()
