"""``hope bench-suite dissect``: the whole command at a toy size writes its tables, plots and finite
measurements; the study-size presets have the study's parameter counts; bad values are refused by name."""

import json
import math
from pathlib import Path

import pytest
import torch

import hope
from hope.analysis import cms_level_similarity
from hope.bench.dissect import PRESETS, SIZES, STUDY_PARAMS, DissectConfig, model_configs, study_config
from hope.cli import main
from hope.data.corpus import builtin_text


def _finite(tree) -> bool:
    if isinstance(tree, dict):
        return all(_finite(v) for v in tree.values())
    if isinstance(tree, list):
        return all(_finite(v) for v in tree)
    return tree is None or isinstance(tree, str) or math.isfinite(tree)


def test_the_command_end_to_end(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(builtin_text()[:200_000])
    out = tmp_path / "out"
    # hope-no-cms: one CMS level, so no inter-level similarity to plot (a None the plots must skip)
    argv = ["bench-suite", "dissect", "--size", "small", "--presets", "hope,hope-no-cms,transformer"]
    argv += [
        "--seeds",
        "1",
        "--steps",
        "10",
        "--measure-every",
        "5",
        "--train-length",
        "64",
        "--batch-size",
        "4",
    ]
    argv += ["--val-batches", "2", "--data", str(corpus), "--tokenizer", "bpe:300", "--device", "cpu"]
    argv += ["--out", str(out), "--model.d_model", "32", "--model.n_layers", "2", "--model.n_heads", "2"]
    assert main([*argv, "--model.impl", "chunked"]) == 0
    for name in ("config.json", "results.json", "results.md", "curves.png", "measurements.png"):
        assert (out / name).stat().st_size > 0, name
    results = json.loads((out / "results.json").read_text())
    assert results["complete"] and not results["failed"]
    config = results["config"]
    assert (config["lr"], config["context"], config["match"]) == (3e-4, 64, "none")  # the study's lr
    runs = {r["preset"]: r for r in results["runs"]}
    assert set(runs) == {"hope", "hope-no-cms", "transformer"}
    for run in runs.values():
        assert [c["step"] for c in run["checkpoints"]] == [0, 5, 10]
        assert len(run["train_loss"]) == 10 and _finite(run)
        assert run["final_val_loss"] == run["checkpoints"][-1]["val_loss"]
    last = runs["hope"]["checkpoints"][-1]
    assert last["cms"]["periods"] == [8, 32] and len(last["cms"]["similarity"]) == 2
    assert all(-1 <= s <= 1 for row in last["cms"]["similarity"] for s in row)
    assert all(n > 0 for row in last["cms"]["norm"] for n in row)
    assert all(d > 0 for row in last["cms"]["drift_prev"] for d in row)  # trained between checkpoints
    assert set(last["selfmod"][0]) == {"mem", "k", "v", "eta", "alpha"}
    assert all(v["abs"] > 0 for row in last["selfmod"] for v in row.values())
    assert all(v > 0 for row in last["fast_divergence"] for v in row.values())
    assert all(0 <= row["pass_rate"] <= 1 for row in last["surprise"])
    sweep = last["gate_sweep"]
    assert set(sweep) == {"absolute", "relative"} and len(sweep["absolute"]) == len(config["abs_thresholds"])
    absolute = [sum(v) / len(v) for v in sweep["absolute"].values()]
    assert absolute == sorted(absolute, reverse=True)  # a higher threshold passes no more tokens
    assert runs["hope"]["checkpoints"][0]["selfmod"][0]["mem"]["abs"] == 0  # step 0 is the initialisation
    assert "cms" not in runs["transformer"]["checkpoints"][-1]
    assert all(s is None for row in runs["hope-no-cms"]["checkpoints"][-1]["cms"]["similarity"] for s in row)
    table = (out / "results.md").read_text()
    assert "| Full HOPE | `hope` |" in table and "7.216" in table and "6.880" in table


def _tiny_study(tmp_path, out, presets: str) -> list[str]:
    """A study of one-layer width-16 models for two steps on a 100K-character corpus."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(builtin_text()[:100_000])
    argv = ["bench-suite", "dissect", "--size", "small", "--presets", presets, "--steps", "2"]
    argv += ["--measure-every", "2", "--train-length", "32", "--batch-size", "2", "--val-batches", "1"]
    argv += ["--data", str(corpus), "--tokenizer", "bpe:300", "--device", "cpu", "--out", str(out)]
    return [
        *argv,
        "--model.d_model",
        "16",
        "--model.n_layers",
        "1",
        "--model.n_heads",
        "2",
        "--model.impl",
        "chunked",
    ]


def test_resume_keeps_the_finished_models_and_trains_the_rest(tmp_path, monkeypatch):
    """A study spread over sessions: --resume with one more seed trains only that seed's models and
    keeps the first run's; other settings are refused by name, and without --resume the directory is."""
    from hope.bench import dissect

    out = tmp_path / "out"
    argv = _tiny_study(tmp_path, out, "transformer,titans")
    trained = []
    run_one = dissect.run_one
    monkeypatch.setattr(dissect, "run_one", lambda *a: trained.append((a[3], a[1])) or run_one(*a))
    assert main([*argv, "--seeds", "1"]) == 0
    first = json.loads((out / "results.json").read_text())["runs"]
    assert trained == [(0, "transformer"), (0, "titans")]
    assert main([*argv, "--seeds", "2", "--resume"]) == 0
    assert trained[2:] == [(1, "transformer"), (1, "titans")]
    results = json.loads((out / "results.json").read_text())
    assert results["complete"] and [(r["seed"], r["preset"]) for r in results["runs"]] == [
        (0, "transformer"), (0, "titans"), (1, "transformer"), (1, "titans")
    ]  # fmt: skip
    assert results["runs"][:2] == first
    assert main([*argv, "--seeds", "2", "--resume"]) == 0 and len(trained) == 4  # nothing left to train
    # slices of a longer study: no model starts once --max-minutes has passed
    assert main([*argv, "--seeds", "3", "--resume", "--max-minutes", "1e-6"]) == 0 and len(trained) == 4
    assert not json.loads((out / "results.json").read_text())["complete"]
    assert main([*argv, "--seeds", "3", "--resume", "--max-minutes", "1000"]) == 0
    assert trained[4:] == [(2, "transformer"), (2, "titans")]
    assert json.loads((out / "results.json").read_text())["complete"]
    assert main([*argv, "--seeds", "2", "--resume", "--steps", "3"]) == 1
    assert main([*argv, "--seeds", "2"]) == 1


def test_a_slice_of_other_presets_keeps_what_earlier_slices_finished(tmp_path, monkeypatch):
    """The study a few presets a call: each --resume slice adds its models to the results and to the
    recorded configs, and drops no other preset's."""
    from hope.bench import dissect

    out = tmp_path / "out"
    trained = []
    run_one = dissect.run_one
    monkeypatch.setattr(dissect, "run_one", lambda *a: trained.append((a[3], a[1])) or run_one(*a))
    assert main([*_tiny_study(tmp_path, out, "transformer"), "--seeds", "1"]) == 0
    first = json.loads((out / "results.json").read_text())["runs"][0]
    assert main([*_tiny_study(tmp_path, out, "titans"), "--seeds", "1", "--resume"]) == 0
    assert main([*_tiny_study(tmp_path, out, "transformer"), "--seeds", "2", "--resume"]) == 0
    assert trained == [(0, "transformer"), (0, "titans"), (1, "transformer")]
    results = json.loads((out / "results.json").read_text())
    assert [(r["seed"], r["preset"]) for r in results["runs"]] == [
        (0, "transformer"),
        (0, "titans"),
        (1, "transformer"),
    ]
    assert results["runs"][0] == first
    assert [row["preset"] for row in results["summary"]] == ["transformer", "titans"]
    config = json.loads((out / "config.json").read_text())
    assert set(config["models"]) == set(results["config"]["models"]) == {"transformer", "titans"}
    assert "Titans" in (out / "results.md").read_text()
    # a refused --resume (another shared setting) leaves the directory's files as they were
    before = {name: (out / name).read_bytes() for name in ("config.json", "results.json")}
    assert (
        main([*_tiny_study(tmp_path, out, "titans"), "--seeds", "2", "--resume", "--model.d_model", "8"]) == 1
    )
    assert before == {name: (out / name).read_bytes() for name in before}


@pytest.mark.parametrize("size", list(SIZES))
def test_study_sizes_have_the_study_parameter_counts(size):
    configs = model_configs(DissectConfig(size=size), vocab=32768)  # the default bpe:32768
    assert set(configs) == set(PRESETS)
    count = hope.count_parameters(configs["hope"])  # on the meta device: nothing allocated
    assert abs(count - STUDY_PARAMS[size]) <= 0.10 * STUDY_PARAMS[size], count
    d, layers = SIZES[size]["d_model"], SIZES[size]["n_layers"]
    for preset, cfg in configs.items():
        assert (cfg.d_model, cfg.n_layers, cfg.name) == (d, layers, preset)
    assert configs["hope"].cms.chunk_sizes == (8, 32)
    assert configs["hope-no-cms"].cms.chunk_sizes == (1,)  # the preset's own CMS, not the periods


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"size": "tiny"}, "dissect.size"),
        ({"presets": ("hope", "nope")}, "dissect.presets"),
        ({"steps": 0}, "dissect.steps"),
        ({"measure_every": -1}, "dissect.measure_every"),
        ({"context": 32}, "dissect.context"),  # not above the slow CMS period
        ({"lr": 0.0}, "dissect.lr"),
        ({"tokenizer": "bpe:1"}, "dissect.tokenizer"),
        ({"val_fraction": 0.9}, "dissect.val_fraction"),
        ({"abs_thresholds": ()}, "dissect.abs_thresholds"),
        ({"rel_thresholds": (math.nan,)}, "dissect.rel_thresholds"),
        ({"precision": "fp8"}, "dissect.precision"),
        ({"cuda_graphs": "yes"}, "dissect.cuda_graphs"),
        ({"cuda_graphs": True, "device": "cpu"}, "dissect.cuda_graphs"),
        ({"overrides": {"titans.chunk_size": 0}}, "titans.chunk_size"),
    ],
)
def test_bad_values_are_refused_by_name(changes, field):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        DissectConfig(**changes)


def test_the_cli_refuses_what_does_not_apply(capsys):
    with pytest.raises(SystemExit):
        main(["bench-suite", "dissect"])  # no study size given
    assert "--size small or --size scaled" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench-suite", "dissect", "--size", "small", "--n-tasks", "3"])
    assert "--n-tasks applies only to bench-suite continual" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench-suite", "formal", "--measure-every", "5"])
    assert "--measure-every applies only to bench-suite dissect" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench-suite", "continual", "--cuda-graphs"])
    assert "--cuda-graphs does not apply to bench-suite continual" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench-suite", "continual", "--partial-dir", "somewhere"])
    assert "--partial-dir does not apply to bench-suite continual" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench-suite", "formal", "--cuda-graphs", "--device", "cpu"])
    assert "bench.cuda_graphs needs a GPU" in capsys.readouterr().err


def test_cms_similarity_leaves_the_forward_alone():
    # Its hook used to return the CMS input, replacing the layer's output: a batch of 4 failed to unpack.
    torch.manual_seed(0)
    cfg = study_config("hope", "small", 64, {"d_model": 16, "n_layers": 2, "n_heads": 2, "impl": "chunked"})
    model = hope.build_model(cfg)
    ids = torch.randint(0, 64, (4, 40))
    before = model(ids)[0]
    sims = cms_level_similarity(model, ids)
    assert len(sims) == 2 and torch.equal(model(ids)[0], before)


def test_a_paused_model_continues_as_if_never_stopped(tmp_path, monkeypatch):
    """A model paused at a measurement (its deadline passed) keeps a checkpoint there; --resume continues
    it from that step, and it ends with the losses and measurements of a run never stopped. Settings
    other than the resumable ones are refused by name, and without --resume the paused run is."""
    import time

    from hope.bench import dissect

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(builtin_text()[:100_000])
    argv = ["bench-suite", "dissect", "--size", "small", "--presets", "hope", "--seeds", "1", "--steps", "4"]
    argv += ["--measure-every", "2", "--train-length", "40", "--batch-size", "2", "--val-batches", "1"]
    argv += ["--data", str(corpus), "--tokenizer", "bpe:300", "--device", "cpu"]
    argv += [
        "--model.d_model",
        "16",
        "--model.n_layers",
        "1",
        "--model.n_heads",
        "2",
        "--model.impl",
        "chunked",
    ]
    assert main([*argv, "--out", str(tmp_path / "whole")]) == 0
    whole = json.loads((tmp_path / "whole" / "results.json").read_text())["runs"][0]
    assert whole["measure_seconds"] > 0

    out = tmp_path / "paused"
    run_one, calls = dissect.run_one, []

    def first_call_late(*args):  # the deadline (of the last argument, a Partial) past on the first call
        calls.append(args[-1])
        if len(calls) == 1:
            args[-1].deadline = time.monotonic()
        return run_one(*args)

    monkeypatch.setattr(dissect, "run_one", first_call_late)
    assert main([*argv, "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert not results["complete"] and results["runs"] == []
    kept = out / "partial" / "hope-seed0" / "checkpoints"
    assert [p.name for p in kept.iterdir()] == ["step_00000002"]
    assert main([*argv, "--out", str(out)]) == 1  # not without --resume
    assert main([*argv, "--out", str(out), "--resume", "--lr", "2e-3"]) == 1  # nor with another lr
    assert len(calls) == 1
    assert main([*argv, "--out", str(out), "--resume"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["complete"] and not (out / "partial" / "hope-seed0").exists()
    resumed = results["runs"][0]
    for timing in ("seconds", "train_tokens_per_s", "measure_seconds"):
        whole.pop(timing), resumed.pop(timing)
    for run in (whole, resumed):
        for c in run["checkpoints"]:
            assert set(c.pop("seconds")) == {"val", "measure"}
    assert resumed == whole
    assert [c["step"] for c in resumed["checkpoints"]] == [0, 2, 4]


def test_the_probe_takes_the_kernels_only_on_cuda():
    """On a CPU the measurement copy runs the chunked path (the interpreter would crawl); its weights
    are its own (the gate sweep changes the copy's gates, never the model's)."""
    from hope.bench import dissect

    cfg = dissect.study_config("hope", "small", 64, {"d_model": 32, "n_layers": 1, "n_heads": 2})
    probe = dissect.build_probe(cfg, torch.device("cpu"))
    assert probe.config.impl == "chunked" and cfg.impl == "auto"


def test_a_model_that_cannot_finish_before_the_deadline_is_not_started(tmp_path, monkeypatch):
    """--max-minutes starts no model whose preset's earlier runs took longer than the time left (by
    their median): its save would live only in the /tmp of a device that may not stay warm."""
    from hope.bench import dissect

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(builtin_text()[:100_000])
    out = tmp_path / "out"
    argv = ["bench-suite", "dissect", "--size", "small", "--presets", "hope", "--steps", "2"]
    argv += ["--measure-every", "2", "--train-length", "40", "--batch-size", "2", "--val-batches", "1"]
    argv += ["--data", str(corpus), "--tokenizer", "bpe:300", "--device", "cpu", "--out", str(out)]
    argv += ["--model.d_model", "16", "--model.n_layers", "1", "--model.n_heads", "2"]
    argv += ["--model.impl", "chunked"]
    assert main([*argv, "--seeds", "1"]) == 0
    path = out / "results.json"
    results = json.loads(path.read_text())
    results["runs"][0]["seconds"] = 3600.0  # as if seed 0 had taken an hour
    path.write_text(json.dumps(results))
    started = []
    monkeypatch.setattr(dissect, "run_one", lambda *args: started.append(args) or pytest.fail("started"))
    assert main([*argv, "--seeds", "2", "--resume", "--max-minutes", "30"]) == 0
    assert started == [] and not (out / "partial" / "hope-seed1").exists()
    assert [r["seed"] for r in json.loads(path.read_text())["runs"]] == [0]
    monkeypatch.undo()
    assert main([*argv, "--seeds", "2", "--resume", "--max-minutes", "90"]) == 0  # an hour fits in 90 minutes
    assert [r["seed"] for r in json.loads(path.read_text())["runs"]] == [0, 1]


def test_fits_lets_a_saved_model_continue_and_a_new_preset_start():
    import time

    from hope.bench.resume import Partial, fits

    soon = time.monotonic() + 60
    nowhere = Partial(Path("/nonexistent/partial"), {}, soon)
    assert fits(None, nowhere, [1e9]) and fits(soon, nowhere, []) and fits(soon, nowhere, [10.0, 20.0, 1e9])
    assert not fits(soon, nowhere, [100.0, 200.0, 5.0])
