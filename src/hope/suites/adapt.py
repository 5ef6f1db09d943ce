"""In-context adaptation: infer a random character substitution from ``k`` examples and apply it.

The in-context adaptation scenario of the HOPE-tensorflow study (rlaope/HOPE-tensorflow, "In-context
adaptation"): each prompt draws a fresh random permutation of the 26 lowercase letters and shows
``k`` demonstrations ``source>target`` (one per line), then a query ``source>``; the model must
generate the substituted query. Nothing about the substitution can be learned in the weights —
it changes every example — so this probes learning at test time (fast weights / in-context learning).

``length`` is the number of letters in each demonstration and in the query. The query only uses
letters that occur in the demonstrations, so every answer is determined by the prompt.

Scoring: ``accuracy`` is exact match of the first line of the generated text (leading spaces
ignored) with the answer; ``char_accuracy`` is the fraction of answer positions matched by that line.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from hope.checks import check_choice, check_int
from hope.suites.common import Example, check_predictions

name = "adapt"
tasks = ("substitution",)

LETTERS = "abcdefghijklmnopqrstuvwxyz"
CHAR_CHANCE = 1 / len(LETTERS)
"""Expected ``char_accuracy`` of guessing each answer letter uniformly."""


def generate(task: str, n: int, length: int, seed: int, *, k: int = 4) -> list[Example]:
    """``n`` prompts with ``k`` demonstrations of a fresh substitution each, words of ``length`` letters."""
    check_choice("task", task, tasks)
    check_int("n", n)
    check_int("seed", seed, 0)
    check_int("length", length)
    check_int("k", k)
    examples = []
    for i in range(n):
        rng = random.Random(f"adapt/{task}/{seed}/{i}")
        image = rng.sample(LETTERS, len(LETTERS))
        mapping = dict(zip(LETTERS, image))
        sources = ["".join(rng.choice(LETTERS) for _ in range(length)) for _ in range(k)]
        shown = sorted(set("".join(sources)))
        query = "".join(rng.choice(shown) for _ in range(length))
        answer = "".join(mapping[c] for c in query)
        demos = "".join(f"{s}>{''.join(mapping[c] for c in s)}\n" for s in sources)
        meta = {
            "task": task,
            "seed": seed,
            "index": i,
            "length": length,
            "k": k,
            "substitution": "".join(image),
        }
        examples.append(Example(prompt=f"{demos}{query}>", answers=(answer,), meta=meta))
    return examples


def _first_line(prediction: str) -> str:
    return prediction.lstrip(" ").split("\n")[0].rstrip()


def score(examples: Sequence[Example], predictions: Sequence[str]) -> dict[str, float]:
    """``accuracy`` (exact match), ``char_accuracy`` (per answer position) and ``n``."""
    check_predictions(examples, predictions)
    exact, chars = [], []
    for ex, pred in zip(examples, predictions):
        if not isinstance(pred, str):
            raise ValueError(f"predictions must be generated strings; got {type(pred).__name__}")
        line, answer = _first_line(pred), ex.answers[0]
        exact.append(line == answer)
        chars.append(sum(a == b for a, b in zip(line, answer)) / len(answer))
    return {
        "accuracy": sum(exact) / len(exact),
        "char_accuracy": sum(chars) / len(chars),
        "n": float(len(exact)),
    }


def chance(examples: Sequence[Example]) -> float:
    """Expected exact-match ``accuracy`` of guessing every letter uniformly: ``mean 26^-length``."""
    if not examples:
        raise ValueError("examples must not be empty")
    return sum(CHAR_CHANCE ** len(ex.answers[0]) for ex in examples) / len(examples)
