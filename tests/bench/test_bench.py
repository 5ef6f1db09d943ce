"""The bench runner: deterministic runs, parameter matching by width, --max-minutes, parallel jobs,
a failing model reported beside the others, and MAD's bottleneck read-out."""

import json

import numpy as np
import pytest
import torch

import hope
from hope.bench import run as R
from hope.bench.readout import BottleneckReadout
from hope.bench.run import BenchConfig
from hope.data.tokenizer import ByteTokenizer
from hope.eval.predict import evaluate, training_pair
from hope.suites import get_suite
from hope.suites.common import IGNORE


def _mad_bench(out, **changes) -> BenchConfig:
    """Transformer and Titans on MAD compression, as small as a bench run gets."""
    settings = {
        "suite": "mad",
        "presets": ("transformer", "titans"),
        "tasks": ("compression",),
        "steps": 2,
        "seeds": 2,
        "batch_size": 4,
        "n_test": 4,
        "device": "cpu",
        "out": str(out),
    }
    return BenchConfig(**{**settings, **changes})


def test_bench_runs_are_deterministic_and_titans_is_matched_by_width(tmp_path):
    cfg = _mad_bench(tmp_path, steps=3, seeds=1)
    (setting,) = R._settings(cfg)
    assert setting.train_length == 32 and [t[:2] for t in setting.tests] == [
        (None, 32)
    ]  # MAD's default, named
    configs = R.model_configs(cfg, setting.vocab)
    goal = hope.count_parameters(hope.ModelConfig.preset("hope", "tiny", vocab_size=setting.vocab))
    assert abs(hope.count_parameters(configs["titans"]) - goal) <= 0.05 * goal
    first, second = (
        R._one_run(cfg, setting, "transformer", configs["transformer"], 0, torch.device("cpu"))
        for _ in range(2)
    )
    assert first["train_loss"] == second["train_loss"] and first["results"] == second["results"]


def _late_from(monkeypatch, call: int) -> list:
    """Run models normally until the `call`-th, whose deadline (its Partial's) is already past: it
    pauses at its first save, as --max-minutes would pause it. Returns the (seed, preset) trained."""
    import time

    trained = []
    one_run = R._one_run

    def run(*args):
        trained.append((args[4], args[2]))
        if len(trained) == call:
            args[-1].deadline = time.monotonic()
        return one_run(*args)

    monkeypatch.setattr(R, "_one_run", run)
    return trained


def test_max_minutes_pauses_a_model_and_still_writes_the_tables(tmp_path, monkeypatch):
    trained = _late_from(monkeypatch, 2)
    results = R.run_bench(_mad_bench(tmp_path, steps=4), log=lambda _: None)
    assert trained == [(0, "transformer"), (0, "titans")]  # none starts after the pause
    assert not results["complete"] and len(results["runs"]) == 1
    assert json.loads((tmp_path / "results.json").read_text())["complete"] is False
    kept = tmp_path / "partial" / "titans-compression-32-seed0" / "checkpoints"
    assert [c.name for c in kept.iterdir()] == ["step_00000001"]  # saved at each tenth: every step
    row = next(
        line
        for line in (tmp_path / "results.md").read_text().splitlines()
        if line.startswith("| transformer |")
    )
    assert "(1 seed)" in row and "±" not in row  # one seed has no spread to report
    # nothing starts once --max-minutes has passed
    assert (
        R.run_bench(_mad_bench(tmp_path, steps=4, resume=True, max_minutes=1e-9), log=lambda _: None)["runs"]
        == results["runs"]
    )


def test_resume_continues_a_paused_run_as_if_never_stopped(tmp_path, monkeypatch):
    """A run spread over device calls: the first pauses its second model (--max-minutes); --resume
    continues it from its save and trains the other two, and every run equals an uninterrupted one's
    (timings aside). A changed setting is refused by name, and without --resume the run is."""
    whole = R.run_bench(_mad_bench(tmp_path / "whole", steps=4), log=lambda _: None)
    trained = _late_from(monkeypatch, 2)
    first = R.run_bench(_mad_bench(tmp_path, steps=4), log=lambda _: None)
    assert trained == [(0, "transformer"), (0, "titans")] and not first["complete"]
    steps, train_step = [], R.train_step
    monkeypatch.setattr(R, "train_step", lambda *a, **k: steps.append(1) or train_step(*a, **k))
    results = R.run_bench(_mad_bench(tmp_path, steps=4, resume=True), log=lambda _: None)
    assert trained[2:] == [(0, "titans"), (1, "transformer"), (1, "titans")]
    assert len(steps) == 3 + 4 + 4  # the paused model continued from its save at step 1
    assert results["complete"] and results["runs"][0] == first["runs"][0]
    assert not (tmp_path / "partial" / "titans-compression-32-seed0").exists()
    for run, ref in zip(results["runs"], whole["runs"], strict=True):
        assert {**run, "seconds": 0} == {**ref, "seconds": 0}
    with pytest.raises(ValueError, match="was run with steps=4, this run has 3"):
        R.run_bench(_mad_bench(tmp_path, resume=True, steps=3), log=lambda _: None)
    with pytest.raises(FileExistsError, match="--resume to continue it"):
        R.run_bench(_mad_bench(tmp_path), log=lambda _: None)


def test_a_slice_of_other_presets_keeps_what_earlier_slices_finished(tmp_path):
    """A suite a preset a call: a --resume slice of other presets adds its models and keeps the
    others' runs, summaries and model configs; a refused --resume leaves the files as they were."""
    first = R.run_bench(_mad_bench(tmp_path, presets=("transformer",), seeds=1), log=lambda _: None)
    R.run_bench(_mad_bench(tmp_path, presets=("titans",), seeds=1, resume=True), log=lambda _: None)
    results = R.run_bench(_mad_bench(tmp_path, presets=("transformer",), resume=True), log=lambda _: None)
    assert [(r["seed"], r["preset"]) for r in results["runs"]] == [
        (0, "transformer"),
        (0, "titans"),
        (1, "transformer"),
    ]
    assert results["runs"][0] == first["runs"][0] and results["complete"]
    assert {row["preset"] for row in results["summary"]} == {"transformer", "titans"}
    for config in (results["config"], json.loads((tmp_path / "config.json").read_text())):
        assert {p for by_preset in config["models"].values() for p in by_preset} == {"transformer", "titans"}
    before = {name: (tmp_path / name).read_bytes() for name in ("config.json", "results.json")}
    with pytest.raises(ValueError, match="was run with steps=2"):
        R.run_bench(_mad_bench(tmp_path, presets=("titans",), resume=True, steps=3), log=lambda _: None)
    assert before == {name: (tmp_path / name).read_bytes() for name in before}


def test_parallel_jobs_give_the_same_runs_in_the_same_order(tmp_path):
    serial = R.run_bench(_mad_bench(tmp_path / "serial"), log=lambda _: None)
    parallel = R.run_bench(_mad_bench(tmp_path / "parallel", jobs=2), log=lambda _: None)
    assert parallel["complete"]
    key = [(r["preset"], r["seed"]) for r in serial["runs"]]
    assert (
        key
        == [(r["preset"], r["seed"]) for r in parallel["runs"]]
        == [
            ("transformer", 0),
            ("titans", 0),
            ("transformer", 1),
            ("titans", 1),
        ]
    )
    for a, b in zip(serial["runs"], parallel["runs"]):
        assert a["train_loss"] == b["train_loss"] and a["results"] == b["results"]


def test_a_model_that_fails_is_reported_and_the_others_still_run(tmp_path, monkeypatch):
    real = R._one_run

    def flaky(cfg, setting, preset, model_cfg, seed, device, partial):
        if preset == "titans" and seed == 0:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(cfg, setting, preset, model_cfg, seed, device, partial)

    monkeypatch.setattr(R, "_one_run", flaky)
    cfg = _mad_bench(tmp_path)
    results = R.run_bench(cfg, log=lambda _: None)
    assert not results["complete"]
    assert [(r["preset"], r["seed"]) for r in results["runs"]] == [
        ("transformer", 0),
        ("transformer", 1),
        ("titans", 1),
    ]
    assert [(f["preset"], f["seed"]) for f in results["failed"]] == [("titans", 0)]
    assert "simulated" in results["failed"][0]["error"]
    assert "titans seed 0 compression: `OutOfMemoryError" in (tmp_path / "results.md").read_text()


def _compression_batch(n, length, seed):
    examples = get_suite("mad").generate("compression", n, length, seed)
    pairs = [training_pair("mad", ex, ByteTokenizer()) for ex in examples]
    return examples, *(torch.from_numpy(np.stack([p[i] for p in pairs])) for i in (0, 1))


def test_compression_reads_the_prompt_only_through_the_final_hidden_state():
    torch.manual_seed(0)
    lm = hope.build_model(hope.ModelConfig.preset("transformer", "tiny", vocab_size=16))
    readout = BottleneckReadout(lm, prompt_length=8)
    _, inputs, targets = _compression_batch(3, 8, 0)
    logits, _ = readout(inputs)
    # h is what the LM head reads at the compression token.
    h = readout.encode(inputs[:, :8])
    torch.testing.assert_close(lm.head(h), lm(inputs[:, :8])[0][:, -1])
    # Logits only where the targets ask, and the teacher-forced tokens (everything a transformer could
    # copy from) change nothing.
    assert (logits[targets == IGNORE] == 0).all() and (logits[targets != IGNORE] != 0).any()
    shuffled = inputs.clone()
    shuffled[:, 8:] = torch.randint(0, 15, shuffled[:, 8:].shape)
    torch.testing.assert_close(readout(shuffled)[0], logits)
    # Reconstruction logits are a function of h alone.
    torch.testing.assert_close(logits[:, 7:], readout.decoder(h[:, None] + readout.positions))
    with pytest.raises(ValueError, match="15 tokens"):
        readout(inputs[:, :10])


def test_an_encoder_and_its_decoder_learn_to_reconstruct_a_fixed_batch():
    torch.manual_seed(0)
    lm = hope.build_model(hope.ModelConfig.preset("transformer", "tiny", vocab_size=16))
    readout = BottleneckReadout(lm, prompt_length=4)
    examples, inputs, targets = _compression_batch(8, 4, 1)
    optimizer = torch.optim.Adam(readout.parameters(), lr=3e-3)
    for _ in range(300):
        logits, _ = readout(inputs)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert evaluate(readout, "mad", examples, batch_size=8)["accuracy"] == 1.0


@pytest.mark.parametrize("preset", ["hope", "transformer"])
def test_padding_a_training_batch_leaves_loss_and_gradients_alone(preset):
    """With cuda_graphs the suites pad each batch to a multiple of GRAPH_WIDTH tokens (few shapes to
    capture); a causal model's loss and every gradient are those of the unpadded batch."""
    from hope.train.step import next_token_loss

    task = get_suite("formal").tasks[0]
    batch = R._train_batch("formal", task, 3, 50, 0, ByteTokenizer())
    padded = R.pad_width(batch, R.GRAPH_WIDTH)
    assert padded[0].shape[1] % R.GRAPH_WIDTH == 0 and padded[0].shape[1] > batch[0].shape[1]
    assert torch.equal(padded[0][:, : batch[0].shape[1]], batch[0])
    assert (padded[1][:, batch[1].shape[1] :] == IGNORE).all()
    over = {"impl": "chunked", "titans.chunk_size": 8, "cms.chunk_sizes": (8, 16)} if preset == "hope" else {}
    torch.manual_seed(0)
    model = hope.build_model(hope.ModelConfig.preset(preset, size="tiny", vocab_size=256, **over)).double()
    grads = []
    for inputs, targets in (batch, padded):
        model.zero_grad()
        loss = next_token_loss(model, inputs, targets, "fp32")
        loss.backward()
        grads.append(
            (loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        )
    torch.testing.assert_close(grads[1][0], grads[0][0], atol=1e-12, rtol=1e-12)
    assert grads[1][1].keys() == grads[0][1].keys()
    for name, g in grads[0][1].items():
        torch.testing.assert_close(grads[1][1][name], g, atol=1e-12, rtol=1e-12, msg=name)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_fit_with_cuda_graphs_trains_as_eager():
    """`fit` with cuda_graphs (graphed steps on padded batches) follows the eager run's losses."""
    task = get_suite("formal").tasks[0]
    cfg = hope.ModelConfig.preset("hope", size="tiny", vocab_size=256, **{"titans.chunk_size": 8})

    def batch_at(step):
        return R._train_batch("formal", task, 4, 50, step, ByteTokenizer())

    results = []
    for graphs in (False, True):
        torch.manual_seed(0)
        model = hope.build_model(cfg).cuda()
        results.append(R.fit(model, batch_at, 6, 1e-3, 0.1, 1.0, "fp32", torch.device("cuda"), graphs))
    assert abs(results[1]["train_loss"] - results[0]["train_loss"]) < 1e-3
