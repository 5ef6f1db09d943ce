"""Formal-language recognition with length generalisation (the Nested Learning paper's Table 5 suite).

The languages and the protocol — train on strings of length 1–50, test on strictly longer strings
(51–100) — follow Bhattamishra, Ahuja & Goyal (2020), "On the Ability and Limitations of
Transformers to Recognize Formal Languages" (§5–6), posed here as binary recognition:

============= ======== ==========================================================================
task          alphabet language (positives)
============= ======== ==========================================================================
parity        0 1      an even number of 1s
mod3          0 1      a number of 1s divisible by 3 (modular counting)
dyck-1        ( )      balanced brackets
dyck-2        ( ) [ ]  balanced, properly nested brackets of two types
anbn          a b      a^n b^n, n >= 1
anbncn        a b c    a^n b^n c^n, n >= 1
shuffle-2     ( ) [ ]  any interleaving of a Dyck-1 word over () with one over [] (Shuffle-2)
aa-star       a        (aa)*, non-empty: an even number of a's
abab-star     a b      (abab)*, non-empty
============= ======== ==========================================================================

Labels are balanced (half positive). Negatives are hard: for the counting languages they are random
strings of the same length; for the structured ones they are a positive with one symbol substituted
or two symbols swapped (so counts often still match: ``([)]``, ``aabbab``, ``abba``), and for
(abab)* also ``(ab)^odd``; (aa)* can only be refuted by odd length. Positive and negative
lengths are drawn from the same set of lengths where positives exist, so length is never a cue
beyond what the language itself implies.

Encoding: symbol ``alphabet[i]`` is token ``i``; the prompt is the string's tokens followed by
``QUERY = len(alphabet)``; the model answers with ``NO = len(alphabet) + 1`` or
``YES = len(alphabet) + 2`` (``choices == (NO, YES)``), so a task's vocabulary has
``len(alphabet) + 3`` tokens (``meta["vocab_size"]``). ``length`` is the maximum string length in
symbols; ``min_length`` the minimum.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from hope.checks import check_choice, check_int
from hope.suites.common import Example, check_predictions

name = "formal"
tasks = ("parity", "mod3", "dyck-1", "dyck-2", "anbn", "anbncn", "shuffle-2", "aa-star", "abab-star")

TRAIN_LENGTHS = (1, 50)
"""Training string lengths (inclusive), as in Bhattamishra et al. (2020)."""
TEST_LENGTHS = (51, 100)
"""Test string lengths (inclusive): strictly longer than any training string."""

ALPHABETS = {
    "parity": "01",
    "mod3": "01",
    "dyck-1": "()",
    "dyck-2": "()[]",
    "anbn": "ab",
    "anbncn": "abc",
    "shuffle-2": "()[]",
    "aa-star": "a",
    "abab-star": "ab",
}

_MAX_DRAWS = 10_000  # rejection sampling needs ~2–3 draws on average; this bound only catches bugs


def _balanced(s: str, pairs: dict[str, str]) -> bool:
    stack = []
    for ch in s:
        if ch in pairs:
            stack.append(pairs[ch])
        elif not stack or stack.pop() != ch:
            return False
    return not stack


def _dyck1_each(s: str, open_: str, close: str) -> bool:
    depth = 0
    for ch in s:
        depth += (ch == open_) - (ch == close)
        if depth < 0:
            return False
    return depth == 0


def accepts(task: str, s: str) -> bool:
    """Whether ``s`` is in ``task``'s language (non-empty strings only)."""
    check_choice("task", task, tasks)
    if not s or set(s) - set(ALPHABETS[task]):
        return False
    n = len(s)
    if task == "parity":
        return s.count("1") % 2 == 0
    if task == "mod3":
        return s.count("1") % 3 == 0
    if task == "dyck-1":
        return _balanced(s, {"(": ")"})
    if task == "dyck-2":
        return _balanced(s, {"(": ")", "[": "]"})
    if task == "anbn":
        return n % 2 == 0 and s == "a" * (n // 2) + "b" * (n // 2)
    if task == "anbncn":
        return n % 3 == 0 and s == "a" * (n // 3) + "b" * (n // 3) + "c" * (n // 3)
    if task == "shuffle-2":
        return _dyck1_each(s, "(", ")") and _dyck1_each(s, "[", "]")
    if task == "aa-star":
        return n % 2 == 0
    return n % 4 == 0 and s == "abab" * (n // 4)


def _dyck_word(pairs: int, rng: random.Random, open_: str, close: str) -> list[str]:
    """A random balanced word: a +-1 walk that may not go below zero and must end at zero."""
    out, depth = [], 0
    for remaining in range(2 * pairs, 0, -1):
        must_close = depth == remaining
        opens = not must_close and (depth == 0 or rng.random() < 0.5)
        depth += 1 if opens else -1
        out.append(open_ if opens else close)
    return out


def _positive(task: str, n: int, rng: random.Random) -> str:
    """A uniformly or structurally random member of the language with length ``n`` (n must be valid)."""
    if task in ("parity", "mod3"):
        for _ in range(_MAX_DRAWS):
            s = "".join(rng.choice("01") for _ in range(n))
            if accepts(task, s):
                return s
        raise RuntimeError("rejection sampling failed")  # probability ~ (2/3)^10000
    if task == "dyck-1":
        return "".join(_dyck_word(n // 2, rng, "(", ")"))
    if task == "dyck-2":
        word, stack = [], []
        for ch in _dyck_word(n // 2, rng, "(", ")"):
            if ch == "(":
                stack.append(rng.choice("(["))
                word.append(stack[-1])
            else:
                word.append(")" if stack.pop() == "(" else "]")
        return "".join(word)
    if task == "shuffle-2":
        round_pairs = rng.randint(0, n // 2)
        a = _dyck_word(round_pairs, rng, "(", ")")
        b = _dyck_word(n // 2 - round_pairs, rng, "[", "]")
        slots = sorted(rng.sample(range(n), len(a)))
        out, ia, ib = [], iter(a), iter(b)
        taken = set(slots)
        for i in range(n):
            out.append(next(ia) if i in taken else next(ib))
        return "".join(out)
    if task == "anbn":
        return "a" * (n // 2) + "b" * (n // 2)
    if task == "anbncn":
        return "a" * (n // 3) + "b" * (n // 3) + "c" * (n // 3)
    if task == "aa-star":
        return "a" * n
    return "abab" * (n // 4)


def _mutate(s: str, alphabet: str, rng: random.Random) -> str:
    """One symbol substituted or two different symbols swapped (the near-miss negatives)."""
    chars = list(s)
    if rng.random() < 0.5 and len(set(chars)) > 1:
        i, j = rng.sample(range(len(chars)), 2)
        while chars[i] == chars[j]:
            i, j = rng.sample(range(len(chars)), 2)
        chars[i], chars[j] = chars[j], chars[i]
    else:
        i = rng.randrange(len(chars))
        chars[i] = rng.choice([c for c in alphabet if c != chars[i]])
    return "".join(chars)


def _negative(task: str, n: int, rng: random.Random) -> str:
    """A string of length ``n`` outside the language, as hard as the language allows."""
    alphabet = ALPHABETS[task]
    for _ in range(_MAX_DRAWS):
        if task in ("parity", "mod3"):
            s = "".join(rng.choice(alphabet) for _ in range(n))
        elif task == "aa-star":
            s = "a" * n
        elif task == "abab-star" and n % 4 == 2:
            s = "ab" * (n // 2)  # (ab)^odd: locally perfect, globally wrong
            s = s if rng.random() < 0.5 else _mutate(s, alphabet, rng)
        else:
            s = _mutate(_positive(task, n, rng), alphabet, rng)
        if not accepts(task, s):
            return s
    raise RuntimeError(f"no negative of length {n} found for {task}")


_LENGTH_STEP = {
    "dyck-1": 2,
    "dyck-2": 2,
    "shuffle-2": 2,
    "anbn": 2,
    "aa-star": 2,
    "anbncn": 3,
    "abab-star": 4,
}
"""Positive strings of these languages have lengths divisible by the step."""


def _length_sets(task: str, lo: int, hi: int) -> tuple[list[int], list[int]]:
    """Lengths in [lo, hi] at which positives and negatives are drawn."""
    step = _LENGTH_STEP.get(task, 1)
    positive = [n for n in range(lo, hi + 1) if n % step == 0]
    if task == "aa-star":
        negative = [n for n in range(lo, hi + 1) if n % 2 == 1]
    elif task == "abab-star":
        # (ab)^odd has length 2 mod 4; keep it in the negative lengths alongside perturbed positives.
        negative = [n for n in range(lo, hi + 1) if n % 2 == 0]
    else:
        negative = positive
    return positive, negative


def generate(task: str, n: int, length: int, seed: int, *, min_length: int = 1) -> list[Example]:
    """``n`` labelled strings of ``task`` with lengths in ``[min_length, length]`` (half positive).

    Use ``length=TRAIN_LENGTHS[1]`` for training and ``min_length, length = TEST_LENGTHS`` for the
    length-generalisation test.
    """
    check_choice("task", task, tasks)
    check_int("n", n)
    check_int("seed", seed, 0)
    check_int("length", length)
    check_int("min_length", min_length)
    if min_length > length:
        raise ValueError(f"min_length must be <= length; got min_length={min_length}, length={length}")
    pos_lengths, neg_lengths = _length_sets(task, min_length, length)
    if not pos_lengths or not neg_lengths:
        raise ValueError(
            f"length range [{min_length}, {length}] holds no length where {task} has both positive and "
            "negative strings; widen it (min_length/length)"
        )
    alphabet = ALPHABETS[task]
    query, no, yes = len(alphabet), len(alphabet) + 1, len(alphabet) + 2
    labels = [True] * (n - n // 2) + [False] * (n // 2)
    random.Random(f"formal/{task}/{seed}/labels").shuffle(labels)
    examples = []
    for i, label in enumerate(labels):
        rng = random.Random(f"formal/{task}/{seed}/{i}")
        if label:
            s = _positive(task, rng.choice(pos_lengths), rng)
        else:
            s = _negative(task, rng.choice(neg_lengths), rng)
        meta = {
            "task": task,
            "seed": seed,
            "index": i,
            "string": s,
            "label": label,
            "length": len(s),
            "alphabet": alphabet,
            "vocab_size": len(alphabet) + 3,
        }
        prompt = [alphabet.index(ch) for ch in s] + [query]
        examples.append(Example(prompt=prompt, answers=(yes if label else no,), choices=(no, yes), meta=meta))
    return examples


def score(examples: Sequence[Example], predictions: Sequence[int]) -> dict[str, float]:
    """``accuracy`` (predicted label token == answer), its value on positives and on negatives, and ``n``."""
    check_predictions(examples, predictions)
    hits: dict[bool, list[bool]] = {True: [], False: []}
    for ex, pred in zip(examples, predictions):
        if isinstance(pred, bool) or not isinstance(pred, int):
            raise ValueError(f"predictions must be label token ids {ex.choices}; got {pred!r}")
        hits[ex.meta["label"]].append(pred == ex.answers[0])
    every = hits[True] + hits[False]
    return {
        "accuracy": _rate(every),
        "accuracy_positive": _rate(hits[True]),
        "accuracy_negative": _rate(hits[False]),
        "n": float(len(every)),
    }


def _rate(hits: list[bool]) -> float:
    return sum(hits) / len(hits) if hits else float("nan")


def chance(examples: Sequence[Example]) -> float:
    """Expected accuracy of a uniform guess between NO and YES (0.5)."""
    if not examples:
        raise ValueError("examples must not be empty")
    return sum(1 / len(ex.choices) for ex in examples) / len(examples)
