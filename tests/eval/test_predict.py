"""Answering suite examples: an oracle scores 100% through every answer mode, streaming in pieces changes
nothing, and token ids beyond the model's vocabulary are refused."""

import math
from types import SimpleNamespace

import pytest
import torch

import hope
from hope.bench.protocols import eval_examples
from hope.data.tokenizer import ByteTokenizer
from hope.eval.predict import answer_mode, evaluate, predict, suite_vocab, training_pair
from hope.suites.common import IGNORE


class Oracle(torch.nn.Module):
    """Knows every teacher-forced target of the examples it was built from: at a position whose prefix
    is in its table it puts all mass on the table's token (else on token 0). Its state is the history,
    so it answers correctly only if the harness streams the prompt and its own output in order."""

    def __init__(self, suite, examples, vocab):
        super().__init__()
        self.config = SimpleNamespace(vocab_size=vocab)
        self.table = {}
        for ex in examples:
            inputs, targets = training_pair(suite, ex, ByteTokenizer())
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
    oracle = Oracle(suite, examples, suite_vocab(examples))
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
    model = hope.build_model(hope.ModelConfig.preset("hope", "tiny", vocab_size=suite_vocab(examples)))
    whole = predict(model, suite, examples, piece=10_000)
    assert predict(model, suite, examples, piece=29, batch_size=1) == whole


def test_token_ids_beyond_the_models_vocabulary_are_refused():
    examples = eval_examples("mad", "memorization", 2, None, None, seed=0)  # vocabulary 256
    model = hope.build_model(hope.ModelConfig.preset("transformer", "tiny", vocab_size=64))
    with pytest.raises(ValueError, match="model's vocabulary has 64 ids"):
        predict(model, "mad", examples)
