"""Continual learning: data for learning tasks one after another, and the forgetting metrics.

Three scenarios:

* ``class-incremental`` — a sequence of ``n_tasks`` classification tasks, each adding
  ``classes_per_task`` new classes (the class-incremental setting of van de Ven & Tolias, 2019,
  "Three scenarios for continual learning"; the paper's CLINC/Banking/DBpedia runs are
  class-incremental text classification). Each class is a random prototype sequence of ``length``
  symbols from a ``vocab``-symbol alphabet; an example is its prototype with every symbol replaced
  by a random one with probability ``noise``. Prompt: the symbols then ``QUERY = vocab``; answer: the
  class's label token ``vocab + 1 + class`` (``choices`` lists every class's label token; at stage
  ``i`` a model has only seen the labels of tasks ``<= i``, see :func:`labels_seen`).
  ``n`` examples are generated per task, in task order (``meta["task_id"]``). Prototypes depend on
  ``seed`` only, so ``split="train"`` and ``split="test"`` share classes but not examples.
* ``domain-lm`` — the continual-LM scenario of the HOPE-tensorflow study (rlaope/HOPE-tensorflow,
  "Continual LM"): domain A is real English text (the built-in corpus; train/test take the first 90%
  and the last 10% of it), domain B is uniformly random lowercase letters. ``n`` text segments of
  ``length`` characters per domain, A first. A model is trained on A, then on B; the prediction
  for each segment is its mean next-character loss (nats), and :func:`summary` turns the loss
  matrix into ACC/BWT. Domain B's best achievable loss is ``ln 26``.
* ``languages`` — two synthetic languages over the same meanings, learned one after the other (the
  paper's Fig. 8, learning new languages in sequence): :mod:`hope.suites.languages` generates them
  and scores the translations. ``n`` examples per language (``L1`` first), translated into the shared
  meaning representation; ``length`` must be ``None`` (the grammar fixes each sentence's length).

Metrics (Lopez-Paz & Ranzato, 2017, "Gradient Episodic Memory for Continual Learning", §4): with
``R[i][j]`` the score on task ``j`` after learning tasks ``0..i`` (``T`` tasks),
``ACC = mean_j R[T-1][j]``, ``BWT = mean_{j<T-1} (R[T-1][j] - R[j][j])``,
``FWT = mean_{j>0} (R[j-1][j] - b_j)`` with ``b_j`` the score of a model before any training. For
accuracies negative BWT is forgetting; for losses (``domain-lm``) positive BWT is forgetting.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from hope.checks import check_choice, check_int, check_number
from hope.suites import languages
from hope.suites.common import Example, check_predictions
from hope.suites.haystack import real_haystack

name = "continual"
tasks = ("class-incremental", "domain-lm", "languages")
splits = ("train", "test")

LETTERS = "abcdefghijklmnopqrstuvwxyz"
TRAIN_FRACTION = 0.9
"""Share of domain A's text used for training; the rest is held out for test segments."""


def _class_incremental(
    n: int, length: int, seed: int, split: str, n_tasks: int, classes_per_task: int, vocab: int, noise: float
) -> list[Example]:
    world = random.Random(f"continual/prototypes/{seed}")
    n_classes = n_tasks * classes_per_task
    prototypes = [[world.randrange(vocab) for _ in range(length)] for _ in range(n_classes)]
    labels = tuple(vocab + 1 + c for c in range(n_classes))
    examples = []
    for task_id in range(n_tasks):
        for i in range(n):
            rng = random.Random(f"continual/class-incremental/{seed}/{split}/{task_id}/{i}")
            cls = task_id * classes_per_task + rng.randrange(classes_per_task)
            symbols = [rng.randrange(vocab) if rng.random() < noise else s for s in prototypes[cls]]
            meta = {
                "task": "class-incremental",
                "seed": seed,
                "split": split,
                "index": i,
                "task_id": task_id,
                "class": cls,
                "vocab_size": vocab + 1 + n_classes,
                "length": length,
            }
            examples.append(
                Example(prompt=symbols + [vocab], answers=(labels[cls],), choices=labels, meta=meta)
            )
    return examples


def _domain_lm(n: int, length: int, seed: int, split: str, haystack: str | None) -> list[Example]:
    text = real_haystack(haystack).unit
    cut = int(len(text) * TRAIN_FRACTION)
    region = text[:cut] if split == "train" else text[cut:]
    if len(region) < length:
        raise ValueError(
            f"length must be at most {len(region)} characters for this haystack's {split} part; got {length}"
        )
    examples = []
    for i in range(n):
        rng = random.Random(f"continual/domain-lm/{seed}/{split}/{i}")
        start = rng.randrange(len(region) - length + 1)
        segments = {
            "A": region[start : start + length],
            "B": "".join(rng.choice(LETTERS) for _ in range(length)),
        }
        for domain, segment in segments.items():
            meta = {
                "task": "domain-lm",
                "seed": seed,
                "split": split,
                "index": i,
                "domain": domain,
                "length": length,
            }
            examples.append(Example(prompt=segment, answers=(), meta=meta))
    examples.sort(key=lambda ex: ex.meta["domain"])  # stable: all of A (in index order), then all of B
    return examples


def generate(
    task: str,
    n: int,
    length: int | None,
    seed: int,
    *,
    split: str = "train",
    n_tasks: int = 5,
    classes_per_task: int = 2,
    vocab: int = 16,
    noise: float = 0.3,
    haystack: str | None = None,
) -> list[Example]:
    """``n`` examples per task (``class-incremental``), per domain (``domain-lm``) or per language
    (``languages``) of ``length`` symbols/characters; the other options apply to the scenario named in
    the module docstring."""
    check_choice("task", task, tasks)
    check_choice("split", split, splits)
    check_int("n", n)
    check_int("seed", seed, 0)
    if task == "languages":
        if length is not None:
            raise ValueError(f"length must be None for languages (the grammar fixes it); got {length!r}")
        return languages.generate(n, seed, split=split)
    check_int("length", length)
    if task == "domain-lm":
        return _domain_lm(n, length, seed, split, haystack)
    check_int("n_tasks", n_tasks)
    check_int("classes_per_task", classes_per_task)
    if isinstance(vocab, bool) or not isinstance(vocab, int) or vocab < 2:
        raise ValueError(f"vocab must be an integer >= 2; got {vocab!r}")
    check_number("noise", noise, 0, 1, hi_open=True)
    return _class_incremental(n, length, seed, split, n_tasks, classes_per_task, vocab, noise)


def labels_seen(examples: Sequence[Example], stage: int) -> tuple[int, ...]:
    """Label tokens of the classes introduced by tasks ``0..stage`` (the class-incremental answer set at that stage)."""
    return tuple(sorted({ex.answers[0] for ex in examples if ex.meta["task_id"] <= stage}))


def score(examples: Sequence[Example], predictions: Sequence[int | float]) -> dict[str, float]:
    """``class-incremental``: predictions are label tokens; returns ``accuracy``, ``accuracy/task_<j>`` and ``n``.
    ``domain-lm``: predictions are mean losses (nats/char); returns ``loss``, ``loss/A``, ``loss/B`` and ``n``.
    ``languages``: predictions are the meaning tokens; see :func:`hope.suites.languages.score`."""
    check_predictions(examples, predictions)
    task = examples[0].meta["task"]
    if any(ex.meta["task"] != task for ex in examples):
        raise ValueError(f"examples must all come from one task (one of {list(tasks)})")
    if task == "languages":
        return languages.score(examples, predictions)
    groups: dict[str, list[float]] = {}
    lm = task == "domain-lm"
    for ex, pred in zip(examples, predictions):
        if lm:
            if isinstance(pred, bool) or not isinstance(pred, (int, float)) or not math.isfinite(pred):
                raise ValueError(f"domain-lm predictions must be finite mean losses; got {pred!r}")
            groups.setdefault(f"loss/{ex.meta['domain']}", []).append(float(pred))
        else:
            if isinstance(pred, bool) or not isinstance(pred, int):
                raise ValueError(f"class-incremental predictions must be label token ids; got {pred!r}")
            groups.setdefault(f"accuracy/task_{ex.meta['task_id']}", []).append(float(pred == ex.answers[0]))
    every = [v for values in groups.values() for v in values]
    metrics = {"loss" if lm else "accuracy": sum(every) / len(every)}
    metrics |= {key: sum(values) / len(values) for key, values in sorted(groups.items())}
    metrics["n"] = float(len(every))
    return metrics


def chance(examples: Sequence[Example]) -> float:
    """Uniform guessing: accuracy ``1 / classes`` (class-incremental), loss ``ln 256`` for a uniform byte
    model (domain-lm), or :func:`hope.suites.languages.chance` (languages)."""
    if not examples:
        raise ValueError("examples must not be empty")
    if examples[0].meta["task"] == "domain-lm":
        return math.log(256)
    if examples[0].meta["task"] == "languages":
        return languages.chance(examples)
    return sum(1 / len(ex.choices) for ex in examples) / len(examples)


def _matrix(R: Sequence[Sequence[float]]) -> list[list[float]]:
    rows = [list(map(float, row)) for row in R]
    if not rows or any(len(row) != len(rows) for row in rows):
        raise ValueError(
            f"R must be a square T x T matrix with T >= 1; got row lengths {[len(r) for r in rows]}"
        )
    return rows


def acc(R: Sequence[Sequence[float]]) -> float:
    """Average final score over all tasks: ``mean_j R[T-1][j]``."""
    rows = _matrix(R)
    return sum(rows[-1]) / len(rows)


def bwt(R: Sequence[Sequence[float]]) -> float:
    """Backward transfer: ``mean_{j<T-1} (R[T-1][j] - R[j][j])`` (0 for a single task)."""
    rows = _matrix(R)
    T = len(rows)
    if T == 1:
        return 0.0
    return sum(rows[-1][j] - rows[j][j] for j in range(T - 1)) / (T - 1)


def fwt(R: Sequence[Sequence[float]], baseline: Sequence[float]) -> float:
    """Forward transfer: ``mean_{j>0} (R[j-1][j] - baseline[j])`` (0 for a single task)."""
    rows = _matrix(R)
    T = len(rows)
    if len(baseline) != T:
        raise ValueError(f"baseline must have one score per task ({T}); got {len(baseline)}")
    if T == 1:
        return 0.0
    return sum(rows[j - 1][j] - baseline[j] for j in range(1, T)) / (T - 1)


def summary(R: Sequence[Sequence[float]], baseline: Sequence[float] | None = None) -> dict[str, float]:
    """``{"acc", "bwt"}`` of a score matrix, plus ``"fwt"`` when a pre-training baseline is given."""
    out = {"acc": acc(R), "bwt": bwt(R)}
    if baseline is not None:
        out["fwt"] = fwt(R, baseline)
    return out
