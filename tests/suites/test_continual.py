import math

import pytest

from hope.suites import continual
from hope.suites.haystack import FALLBACK_TEXT, real_haystack

# Scores R[i][j] on task j after learning tasks 0..i, worked by hand below.
R = [
    [0.90, 0.10, 0.05],
    [0.60, 0.80, 0.10],
    [0.50, 0.70, 0.95],
]


def test_acc_bwt_fwt_on_a_hand_computed_matrix():
    assert continual.acc(R) == pytest.approx((0.50 + 0.70 + 0.95) / 3)
    assert continual.bwt(R) == pytest.approx(((0.50 - 0.90) + (0.70 - 0.80)) / 2)  # -0.25: forgetting
    assert continual.fwt(R, [0.0, 0.05, 0.05]) == pytest.approx(((0.10 - 0.05) + (0.10 - 0.05)) / 2)
    assert continual.summary(R) == {"acc": continual.acc(R), "bwt": continual.bwt(R)}
    assert set(continual.summary(R, [0.0, 0.0, 0.0])) == {"acc", "bwt", "fwt"}


def test_loss_matrix_forgetting_shows_as_positive_bwt():
    losses = [[1.5, 4.0], [2.5, 1.2]]  # loss on A rises from 1.5 to 2.5 after learning B
    assert continual.bwt(losses) == pytest.approx(1.0)
    assert continual.acc(losses) == pytest.approx((2.5 + 1.2) / 2)


def test_single_task_and_malformed_matrices():
    assert continual.bwt([[0.7]]) == 0.0 and continual.acc([[0.7]]) == 0.7
    with pytest.raises(ValueError, match="R must be a square T x T matrix"):
        continual.acc([[1.0, 0.5]])
    with pytest.raises(ValueError, match="baseline must have one score per task"):
        continual.fwt(R, [0.1])


def test_class_incremental_tasks_add_disjoint_classes_in_order():
    examples = continual.generate("class-incremental", 40, 16, 0, n_tasks=4, classes_per_task=3)
    assert [ex.meta["task_id"] for ex in examples] == sorted(ex.meta["task_id"] for ex in examples)
    per_task = {}
    for ex in examples:
        per_task.setdefault(ex.meta["task_id"], set()).add(ex.meta["class"])
        assert ex.answers == (16 + 1 + ex.meta["class"],) and len(ex.choices) == 12
        assert len(ex.prompt) == 17 and ex.prompt[-1] == 16
    assert per_task == {t: {3 * t, 3 * t + 1, 3 * t + 2} for t in range(4)}
    assert continual.labels_seen(examples, 1) == tuple(range(17, 23))


def test_class_incremental_is_learnable_and_train_test_share_classes():
    """A nearest-prototype classifier fit on the train split classifies the test split well."""
    train = continual.generate("class-incremental", 50, 32, 4, split="train")
    test = continual.generate("class-incremental", 50, 32, 4, split="test")
    assert not {tuple(ex.prompt) for ex in train} & {tuple(ex.prompt) for ex in test}
    centroids = {}
    for ex in train:
        centroids.setdefault(ex.answers[0], []).append(ex.prompt[:-1])

    def vote(rows):
        return [max(set(col), key=col.count) for col in zip(*rows)]

    protos = {label: vote(rows) for label, rows in centroids.items()}
    predictions = [
        min(protos, key=lambda lab: sum(a != b for a, b in zip(protos[lab], ex.prompt[:-1]))) for ex in test
    ]
    metrics = continual.score(test, predictions)
    assert metrics["accuracy"] > 0.95
    assert set(metrics) == {"accuracy", "n"} | {f"accuracy/task_{j}" for j in range(5)}


def test_domain_lm_has_real_text_then_random_letters_with_disjoint_splits():
    text = real_haystack(FALLBACK_TEXT).unit  # the normalised text the segments are cut from
    train = continual.generate("domain-lm", 6, 80, 0, haystack=FALLBACK_TEXT)
    test = continual.generate("domain-lm", 6, 80, 0, split="test", haystack=FALLBACK_TEXT)
    assert [ex.meta["domain"] for ex in train] == ["A"] * 6 + ["B"] * 6
    cut = int(len(text) * continual.TRAIN_FRACTION)
    for ex in train:
        assert len(ex.prompt) == 80
        if ex.meta["domain"] == "A":
            assert ex.prompt in text[:cut]
        else:
            assert set(ex.prompt) <= set(continual.LETTERS)
    assert all(ex.prompt in text[cut:] for ex in test if ex.meta["domain"] == "A")
    losses = [2.0] * 6 + [3.5] * 6
    assert continual.score(train, losses) == {"loss": 2.75, "loss/A": 2.0, "loss/B": 3.5, "n": 12.0}
    assert continual.chance(train) == pytest.approx(math.log(256))


def test_bad_continual_arguments():
    with pytest.raises(ValueError, match="length must be at most"):
        continual.generate("domain-lm", 1, 10_000, 0, haystack=FALLBACK_TEXT)
    with pytest.raises(ValueError, match="noise must be a finite number >= 0 and < 1"):
        continual.generate("class-incremental", 1, 8, 0, noise=1.0)
    with pytest.raises(ValueError, match="vocab must be an integer >= 2"):
        continual.generate("class-incremental", 1, 8, 0, vocab=1)
    with pytest.raises(ValueError, match="domain-lm predictions must be finite mean losses"):
        continual.score(continual.generate("domain-lm", 1, 8, 0, haystack=FALLBACK_TEXT), [float("nan"), 1.0])
