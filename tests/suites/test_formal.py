import re

import pytest

from hope.suites import formal


def _dyck_by_reduction(s: str, pairs: tuple[str, ...]) -> bool:
    """Delete adjacent matched pairs until nothing changes; balanced iff the string vanishes."""
    while True:
        shorter = s
        for p in pairs:
            shorter = shorter.replace(p, "")
        if shorter == s:
            return s == ""
        s = shorter


def _prefix_counts_ok(s: str, open_: str, close: str) -> bool:
    counts = [s[: i + 1].count(open_) - s[: i + 1].count(close) for i in range(len(s))]
    return min(counts) >= 0 and counts[-1] == 0


def recognise(task: str, s: str) -> bool:
    """Recognisers written independently of the generator (regexes, reductions, counts)."""
    if task == "parity":
        return set(s) <= {"0", "1"} and sum(map(int, s)) % 2 == 0
    if task == "mod3":
        return set(s) <= {"0", "1"} and sum(map(int, s)) % 3 == 0
    if task == "dyck-1":
        return _dyck_by_reduction(s, ("()",))
    if task == "dyck-2":
        return _dyck_by_reduction(s, ("()", "[]"))
    if task == "anbn":
        m = re.fullmatch(r"(a+)(b+)", s)
        return bool(m) and len(m[1]) == len(m[2])
    if task == "anbncn":
        m = re.fullmatch(r"(a+)(b+)(c+)", s)
        return bool(m) and len(m[1]) == len(m[2]) == len(m[3])
    if task == "shuffle-2":
        return (
            set(s) <= set("()[]")
            and _prefix_counts_ok(s.replace("[", "").replace("]", "") or "()", "(", ")")
            and _prefix_counts_ok(s.replace("(", "").replace(")", "") or "[]", "[", "]")
        )
    if task == "aa-star":
        return re.fullmatch(r"(aa)+", s) is not None
    if task == "abab-star":
        return re.fullmatch(r"(abab)+", s) is not None
    raise AssertionError(task)


@pytest.mark.parametrize("task", formal.tasks)
def test_labels_match_an_independent_recogniser_and_are_balanced(task):
    lo, hi = formal.TRAIN_LENGTHS
    examples = formal.generate(task, 400, hi, 0, min_length=lo)
    for ex in examples:
        s = ex.meta["string"]
        assert recognise(task, s) == ex.meta["label"], s
        assert formal.accepts(task, s) == ex.meta["label"]
        alphabet = formal.ALPHABETS[task]
        query, no, yes = len(alphabet), len(alphabet) + 1, len(alphabet) + 2
        assert ex.prompt == [alphabet.index(c) for c in s] + [query]
        assert ex.answers == ((yes if ex.meta["label"] else no),) and ex.choices == (no, yes)
        assert ex.meta["vocab_size"] == len(alphabet) + 3
    assert sum(ex.meta["label"] for ex in examples) == 200
    distinct_negatives = len({ex.meta["string"] for ex in examples if not ex.meta["label"]})
    assert (
        distinct_negatives == 25 if task == "aa-star" else distinct_negatives > 50
    )  # (aa)*: a^1, a^3, ..., a^49


@pytest.mark.parametrize("task", formal.tasks)
def test_test_strings_are_strictly_longer_than_training_strings(task):
    train = formal.generate(task, 300, formal.TRAIN_LENGTHS[1], 0, min_length=formal.TRAIN_LENGTHS[0])
    test = formal.generate(task, 300, formal.TEST_LENGTHS[1], 1, min_length=formal.TEST_LENGTHS[0])
    assert max(len(ex.meta["string"]) for ex in train) <= formal.TRAIN_LENGTHS[1]
    assert min(len(ex.meta["string"]) for ex in test) >= formal.TEST_LENGTHS[0] > formal.TRAIN_LENGTHS[1]
    assert all(recognise(task, ex.meta["string"]) == ex.meta["label"] for ex in test)


COUNTS_LIKE_A_POSITIVE = {
    "dyck-1": lambda s: s.count("(") == s.count(")"),
    "dyck-2": lambda s: s.count("(") + s.count("[") == s.count(")") + s.count("]"),
    "shuffle-2": lambda s: s.count("(") == s.count(")") and s.count("[") == s.count("]"),
    "anbn": lambda s: s.count("a") == s.count("b"),
    "anbncn": lambda s: s.count("a") == s.count("b") == s.count("c"),
    "abab-star": lambda s: s.count("a") == s.count("b") and len(s) % 4 == 0,
}


@pytest.mark.parametrize("task", sorted(COUNTS_LIKE_A_POSITIVE))
def test_negatives_are_hard(task):
    """Many negatives have the symbol counts of a positive, so counting alone cannot reject them."""
    negatives = [ex.meta["string"] for ex in formal.generate(task, 400, 50, 2) if not ex.meta["label"]]
    hard = [s for s in negatives if COUNTS_LIKE_A_POSITIVE[task](s)]
    assert len(hard) >= 0.2 * len(negatives)


def test_positive_and_negative_lengths_share_a_distribution():
    """Apart from (aa)*, whose negatives are exactly the odd lengths, length parity is no cue."""
    for task in ("dyck-1", "anbn", "shuffle-2"):
        examples = formal.generate(task, 400, 50, 3)
        assert {len(ex.meta["string"]) % 2 for ex in examples} == {0}
        assert all(
            len(ex.meta["string"]) % 2 == 1
            for ex in formal.generate("aa-star", 50, 50, 0)
            if not ex.meta["label"]
        )


def test_empty_length_ranges_and_bad_bounds_raise():
    with pytest.raises(ValueError, match=r"length range \[5, 5\] holds no length where anbncn"):
        formal.generate("anbncn", 4, 5, 0, min_length=5)
    with pytest.raises(ValueError, match="min_length must be <= length"):
        formal.generate("parity", 4, 10, 0, min_length=20)
    with pytest.raises(ValueError, match="min_length must be an integer >= 1"):
        formal.generate("parity", 4, 10, 0, min_length=0)
    with pytest.raises(ValueError, match="predictions must be label token ids"):
        formal.score(formal.generate("parity", 2, 10, 0), ["yes", "no"])


def test_score_reports_per_class_accuracy():
    examples = formal.generate("dyck-2", 100, 50, 0)
    always_yes = [ex.choices[1] for ex in examples]
    metrics = formal.score(examples, always_yes)
    assert metrics["accuracy"] == 0.5
    assert metrics["accuracy_positive"] == 1.0 and metrics["accuracy_negative"] == 0.0
