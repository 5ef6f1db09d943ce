"""Properties every suite and task must have: registry, determinism, oracle = 100%, random = chance, argument errors."""

import math
import random
import uuid

import pytest

from hope.suites import SUITES, get_suite
from hope.suites.common import Example

# (suite, task, small generate() arguments): one case per task, sized to keep the folder fast.
CASES = (
    [("niah", t, {"n": 30, "length": 1500}) for t in get_suite("niah").tasks]
    + [("babi", t, {"n": 60, "length": None}) for t in get_suite("babi").tasks]
    + [("formal", t, {"n": 200, "length": 50}) for t in get_suite("formal").tasks]
    + [("mad", t, {"n": 40, "length": None}) for t in get_suite("mad").tasks]
    + [("continual", "class-incremental", {"n": 30, "length": 16})]
    + [("adapt", "substitution", {"n": 200, "length": 5})]
)
IDS = [f"{s}-{t}" for s, t, _ in CASES]


def make(suite: str, task: str, kw: dict, seed: int) -> list[Example]:
    return get_suite(suite).generate(task, seed=seed, **kw)


def oracle(suite: str, ex: Example):
    if suite == "niah":
        return " " + ", ".join(ex.answers) + "."
    if suite == "mad":
        return list(ex.answers)
    return ex.answers[0]


def guess(suite: str, ex: Example, rng: random.Random):
    """A uniform random answer, and the probability (per scored item) that it is right, computed here."""
    if suite == "niah":
        if ex.meta["value_type"] == "numbers":
            return " ".join(str(rng.randint(10**6, 10**7 - 1)) for _ in ex.answers), [1 / 9e6] * len(
                ex.answers
            )
        return " ".join(str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in ex.answers), [0.0]
    if suite == "mad":
        v = ex.meta["vocab_size"]
        return [rng.randrange(v) for _ in ex.answers], [1 / v] * len(ex.answers)
    if suite == "adapt":
        letters = "abcdefghijklmnopqrstuvwxyz"
        return "".join(rng.choice(letters) for _ in ex.answers[0]), [26.0 ** -len(ex.answers[0])]
    return rng.choice(ex.choices), [1 / len(ex.choices)]


def test_registry_lists_the_six_suites():
    assert set(SUITES) == {"niah", "babi", "formal", "mad", "continual", "adapt"}
    for name, suite in SUITES.items():
        assert suite.name == name and suite.tasks
        assert callable(suite.generate) and callable(suite.score) and callable(suite.chance)


def test_get_suite_rejects_unknown_names_listing_accepted_ones():
    assert get_suite("mad") is SUITES["mad"]
    with pytest.raises(ValueError, match="suite must be one of .*adapt.*niah"):
        get_suite("ruler")


@pytest.mark.parametrize(("suite", "task", "kw"), CASES, ids=IDS)
def test_same_seed_same_examples_other_seed_different(suite, task, kw):
    a, b, c = make(suite, task, kw, 7), make(suite, task, kw, 7), make(suite, task, kw, 8)
    assert a == b
    assert a != c
    assert all(ex.meta["task"] == task for ex in a)


def test_generation_does_not_touch_the_global_rng():
    random.seed(123)
    before = random.getstate()
    for suite, task, kw in CASES[::5]:
        make(suite, task, kw, 0)
    assert random.getstate() == before


@pytest.mark.parametrize(("suite", "task", "kw"), CASES, ids=IDS)
def test_oracle_scores_100_percent(suite, task, kw):
    examples = make(suite, task, kw, 3)
    metrics = get_suite(suite).score(examples, [oracle(suite, ex) for ex in examples])
    assert metrics["accuracy"] == 1.0
    assert metrics["n"] >= len(examples) if suite != "mad" else metrics["n"] > 0


@pytest.mark.parametrize(("suite", "task", "kw"), CASES, ids=IDS)
def test_random_guesser_scores_chance(suite, task, kw):
    examples = make(suite, task, kw, 11)
    rng = random.Random(5)
    predictions, probs = [], []
    for ex in examples:
        pred, p = guess(suite, ex, rng)
        predictions.append(pred)
        probs.append(p)
    # Main metric = mean over examples of the mean over that example's items.
    expected = sum(sum(p) / len(p) for p in probs) / len(probs)
    if suite == "mad":  # mad's accuracy is pooled over all scored positions
        flat = [q for p in probs for q in p]
        expected = sum(flat) / len(flat)
    assert get_suite(suite).chance(examples) == pytest.approx(expected, rel=1e-9, abs=1e-15)
    variance = sum(q * (1 - q) for p in probs for q in p) / sum(len(p) for p in probs) ** 2
    got = get_suite(suite).score(examples, predictions)["accuracy"]
    assert abs(got - expected) <= 4 * math.sqrt(variance) + 1e-12, (got, expected)


@pytest.mark.parametrize(("suite", "task", "kw"), CASES, ids=IDS)
def test_wrong_answers_score_zero(suite, task, kw):
    examples = make(suite, task, kw, 4)
    wrong = []
    for ex in examples:
        if suite == "niah":
            wrong.append("I do not know.")
        elif suite == "mad":
            wrong.append([(a + 1) % ex.meta["vocab_size"] for a in ex.answers])
        elif suite == "adapt":
            wrong.append("")
        else:
            wrong.append(next(c for c in ex.choices if c != ex.answers[0]))
    assert get_suite(suite).score(examples, wrong)["accuracy"] == 0.0


@pytest.mark.parametrize("suite", sorted(SUITES))
def test_bad_arguments_name_the_field(suite):
    s = get_suite(suite)
    task = s.tasks[0]
    length = 2000 if suite in ("niah", "babi") else 20
    with pytest.raises(ValueError, match=r"task must be one of .*" + s.tasks[-1]):
        s.generate("no-such-task", 2, length, 0)
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        s.generate(task, 0, length, 0)
    with pytest.raises(ValueError, match="length must be an integer >= 1"):
        s.generate(task, 2, -5, 0)
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        s.generate(task, 2, length, -1)
    examples = s.generate(task, 2, length, 0)
    with pytest.raises(ValueError, match="one entry per example"):
        s.score(examples, [])
