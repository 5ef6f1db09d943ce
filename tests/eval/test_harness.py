"""The model-facing harness: an oracle scores 100% through every answer mode, streaming changes nothing,
`hope bench-suite` and `hope eval SUITE` run end to end on CPU, and bad arguments fail clearly."""

import json
import math
import statistics
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import hope
from hope.cli import main
from hope.data import builtin_text
from hope.eval import get_suite
from hope.eval import harness as H
from hope.eval.common import IGNORE
from hope.eval.harness import BenchConfig, answer_mode, eval_examples, evaluate, predict, training_pair


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("HOPE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "hope-cache"))


class Oracle(torch.nn.Module):
    """Knows every teacher-forced target of the examples it was built from: at a position whose prefix
    is in its table it puts all mass on the table's token (else on token 0). Its state is the history,
    so it answers correctly only if the harness streams the prompt and its own output in order."""

    def __init__(self, suite, examples, vocab):
        super().__init__()
        self.config = SimpleNamespace(vocab_size=vocab)
        self.table = {}
        for ex in examples:
            inputs, targets = training_pair(suite, ex, H.ByteTokenizer())
            for t in range(len(inputs)):
                if targets[t] != IGNORE:
                    self.table[tuple(inputs[: t + 1].tolist())] = int(targets[t])
        self.lengths = {len(k) for k in self.table}
        self.calls = 0

    def forward(self, ids, state=None):
        self.calls += 1
        history = state or [[] for _ in range(ids.shape[0])]
        logits = torch.zeros(*ids.shape, self.config.vocab_size)
        out = []
        for b, row in enumerate(ids.tolist()):
            seen = history[b] + row
            for t in range(len(row)):
                n = len(history[b]) + t + 1
                if n in self.lengths:
                    logits[b, t, self.table.get(tuple(seen[:n]), 0)] = 1.0
            out.append(seen)
        return logits, out


CASES = [
    ("formal", "dyck-2", (41, 60), "choice"),
    ("formal", "parity", (1, 20), "choice"),
    ("continual", "class-incremental", (None, 12), "choice"),
    ("mad", "in-context-recall", (None, 64), "positions"),
    ("mad", "selective-copying", (None, 64), "positions"),
    ("mad", "compression", (None, 16), "positions"),
    ("niah", "s-niah-1", (None, 700), "generate"),
    ("niah", "mq-niah", (None, 700), "generate"),
    ("babi", "qa2", (None, 1000), "generate"),
    ("adapt", "substitution", (None, 5), "generate"),
]


@pytest.mark.parametrize("suite, task, point, mode", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_oracle_scores_100_percent(suite, task, point, mode):
    examples = eval_examples(suite, task, 6, *point, seed=3)
    assert {answer_mode(ex) for ex in examples} == {mode}
    oracle = Oracle(suite, examples, H.suite_vocab(examples))
    # Odd pieces and batches: rows are streamed in several pieces and split over several batches.
    metrics = evaluate(oracle, suite, examples, batch_size=4, piece=37)
    assert metrics["accuracy"] == 1.0
    assert metrics["chance"] <= 0.5
    if mode == "generate":  # one call per piece and per generated token, never a re-read prompt
        assert oracle.calls < 2 * len(examples) * (len(examples[0].prompt) / 37 + 60)


def test_a_wrong_model_scores_near_zero_and_uniform_logits_give_ln_v():
    examples = eval_examples("formal", "parity", 20, 1, 20, seed=0)
    no = examples[0].choices[0]
    always_no = Oracle("formal", [], 5)
    always_no.table = {tuple(ex.prompt): no for ex in examples}
    always_no.lengths = {len(ex.prompt) for ex in examples}
    assert evaluate(always_no, "formal", examples)["accuracy_positive"] == 0.0
    text = eval_examples("continual", "domain-lm", 2, None, 50, seed=0)
    losses = predict(Oracle("continual", [], 256), "continual", text, piece=16)
    assert losses == pytest.approx([math.log(256)] * len(text), rel=1e-6)


@pytest.mark.parametrize(
    "suite, task, point", [("niah", "s-niah-2", (None, 700)), ("mad", "in-context-recall", (None, 64))]
)
def test_streaming_in_pieces_gives_the_same_predictions(suite, task, point):
    examples = eval_examples(suite, task, 2, *point, seed=1)
    torch.manual_seed(0)
    model = hope.build_model(hope.ModelConfig.preset("hope", "tiny", vocab_size=H.suite_vocab(examples)))
    whole = predict(model, suite, examples, piece=10_000)
    assert predict(model, suite, examples, piece=29, batch_size=1) == whole


def test_token_ids_beyond_the_models_vocabulary_are_refused():
    examples = eval_examples("mad", "memorization", 2, None, None, seed=0)  # vocabulary 256
    model = hope.build_model(hope.ModelConfig.preset("transformer", "tiny", vocab_size=64))
    with pytest.raises(ValueError, match="model's vocabulary has 64 ids"):
        predict(model, "mad", examples)


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
        "--override",
        "titans.chunk_size=4",
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
    (setting,) = H._settings(cfg)
    assert setting.train_length == 32 and [t[:2] for t in setting.tests] == [
        (None, 32)
    ]  # MAD's default, named
    configs = H.model_configs(cfg, setting.vocab)
    goal = hope.count_parameters(hope.ModelConfig.preset("hope", "tiny", vocab_size=setting.vocab))
    assert abs(hope.count_parameters(configs["titans"]) - goal) <= 0.05 * goal
    first, second = (
        H._one_run(cfg, setting, "transformer", configs["transformer"], 0, torch.device("cpu"))
        for _ in range(2)
    )
    assert first["train_loss"] == second["train_loss"] and first["results"] == second["results"]


def test_max_minutes_stops_early_and_still_writes_the_tables(tmp_path):
    cfg = _mad_bench(tmp_path, max_minutes=1e-6)
    results = H.run_bench(cfg, log=lambda _: None)
    assert not results["complete"] and len(results["runs"]) == 1
    assert json.loads((tmp_path / "results.json").read_text())["complete"] is False
    row = next(
        line
        for line in (tmp_path / "results.md").read_text().splitlines()
        if line.startswith("| transformer |")
    )
    assert "(1 seed)" in row and "±" not in row  # one seed has no spread to report


def test_eval_suite_on_a_trained_run(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(builtin_text()[:20_000])
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--preset",
                "transformer",
                "--model.d_model",
                "32",
                "--model.n_layers",
                "1",
                "--seq-len",
                "32",
                "--batch-size",
                "4",
                "--steps",
                "2",
                "--eval-batches",
                "1",
                "--sample-tokens",
                "0",
                "--device",
                "cpu",
                "--data",
                str(corpus),
                "--out",
                str(run),
            ]
        )
        == 0
    )
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
        (["bench-suite", "continual"], "invalid choice: 'continual'"),
        (["bench-suite", "formal", "--presets", "hope,gpt"], "bench.presets must be one of"),
        (["bench-suite", "formal", "--tasks", "parity,dyck-3"], "bench.tasks must be one of parity"),
        (
            ["bench-suite", "formal", "--lengths", "10,0"],
            "--lengths: must be a comma-separated list of positive",
        ),
        (["bench-suite", "mad", "--train-length", "64"], "bench.train_length does not apply to mad"),
        (["bench-suite", "niah", "--size", "huge"], "invalid choice: 'huge'"),
        (["bench-suite", "niah", "--steps", "0"], "--steps: must be a positive integer"),
        (
            ["bench-suite", "niah", "--override", "titans.chunk_sise=8"],
            "unknown config field 'titans.chunk_sise'",
        ),
        (["bench-suite", "niah", "--override", "chunk"], "must be FIELD=VALUE"),
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
    with pytest.raises(ValueError, match="bench.batch_size must be a positive integer"):
        BenchConfig(suite="formal", batch_size=0)
    with pytest.raises(ValueError, match="bench.lr must be > 0"):
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


def test_parallel_jobs_give_the_same_runs_in_the_same_order(tmp_path):
    serial = H.run_bench(_mad_bench(tmp_path / "serial"), log=lambda _: None)
    parallel = H.run_bench(_mad_bench(tmp_path / "parallel", jobs=2), log=lambda _: None)
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
    real = H._one_run

    def flaky(cfg, setting, preset, model_cfg, seed, device):
        if preset == "titans" and seed == 0:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(cfg, setting, preset, model_cfg, seed, device)

    monkeypatch.setattr(H, "_one_run", flaky)
    cfg = _mad_bench(tmp_path)
    results = H.run_bench(cfg, log=lambda _: None)
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
    pairs = [training_pair("mad", ex, H.ByteTokenizer()) for ex in examples]
    return examples, *(torch.from_numpy(np.stack([p[i] for p in pairs])) for i in (0, 1))


def test_compression_reads_the_prompt_only_through_the_final_hidden_state():
    torch.manual_seed(0)
    lm = hope.build_model(hope.ModelConfig.preset("transformer", "tiny", vocab_size=16))
    readout = H.BottleneckReadout(lm, prompt_length=8)
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
    readout = H.BottleneckReadout(lm, prompt_length=4)
    examples, inputs, targets = _compression_batch(8, 4, 1)
    optimizer = torch.optim.Adam(readout.parameters(), lr=3e-3)
    for _ in range(300):
        logits, _ = readout(inputs)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert evaluate(readout, "mad", examples, batch_size=8)["accuracy"] == 1.0
