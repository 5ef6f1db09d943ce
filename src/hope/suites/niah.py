"""Needle-in-a-haystack retrieval: RULER's NIAH family (Hsieh et al., 2024, "RULER: What's the Real
Context Size of Your Long-Context Language Models?", §3.1 and its synthetic task configs).

A *needle* is the sentence "One of the special magic {numbers|uuids} for {key} is: {value}." placed
in a haystack; the prompt ends with RULER's question and answer prefix, and the model must generate
the value(s). Tasks (RULER's names in brackets):

========== ============ ====== ================================================
task       haystack     values needles
========== ============ ====== ================================================
s-niah-1   repeated     number 1 key, 1 value            [niah_single_1]
           noise
s-niah-2   real text    number 1 key, 1 value            [niah_single_2]
s-niah-3   real text    UUID   1 key, 1 value            [niah_single_3]
mk-niah    real text    number 4 keys, 1 asked           [niah_multikey_1]
mq-niah    real text    number 4 keys, all 4 asked       [niah_multiquery]
mv-niah    real text    number 1 key with 4 values       [niah_multivalue]
========== ============ ====== ================================================

Keys are adjective-noun words (RULER draws them from the ``wonderwords`` lists; ours are built in),
numbers have 7 digits, UUIDs are version-4. ``length`` is the length of the whole prompt in
**characters** (= bytes = byte-level tokens, the text is ASCII), from 1K to 1M and beyond: prompts
are :class:`~hope.suites.common.LazyText` recipes, streamed with ``Example.pieces``. ``depth`` is the
position of the first answer needle as a fraction of the haystack (0 = start, 1 = end), snapped to
the nearest sentence start; other needles, or all of them when ``depth`` is None, go to distinct
depths drawn from RULER's 40-point grid ``round(linspace(0, 100, 40))`` %.

Scoring is RULER's ``string_match_all``: per example, the fraction of expected values that appear
(case-insensitively) in the generated text; ``accuracy`` is its mean.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence

from hope.checks import check_choice, check_int, check_number
from hope.suites.common import Example, check_predictions
from hope.suites.haystack import layout, noise_haystack, real_haystack

name = "niah"
tasks = ("s-niah-1", "s-niah-2", "s-niah-3", "mk-niah", "mq-niah", "mv-niah")

# task -> (haystack, value type, keys in the haystack, keys asked, values per key)
_SPEC = {
    "s-niah-1": ("noise", "numbers", 1, 1, 1),
    "s-niah-2": ("real", "numbers", 1, 1, 1),
    "s-niah-3": ("real", "uuids", 1, 1, 1),
    "mk-niah": ("real", "numbers", 4, 1, 1),
    "mq-niah": ("real", "numbers", 4, 4, 1),
    "mv-niah": ("real", "numbers", 1, 1, 4),
}

RULER_DEPTHS = tuple(round(100 * i / 39) / 100 for i in range(40))
"""RULER's needle depths: ``np.round(np.linspace(0, 100, num=40))`` percent, as fractions."""

_ADJECTIVES = (
    "ancient",
    "bitter",
    "brave",
    "calm",
    "clever",
    "crimson",
    "curious",
    "dusty",
    "eager",
    "fancy",
    "fragile",
    "gentle",
    "gloomy",
    "golden",
    "hollow",
    "humble",
    "icy",
    "jolly",
    "lively",
    "lucky",
    "mellow",
    "misty",
    "noisy",
    "pale",
    "proud",
    "quiet",
    "rapid",
    "rusty",
    "shiny",
    "silent",
    "sleepy",
    "smooth",
    "sturdy",
    "tender",
    "tiny",
    "vivid",
    "wary",
    "witty",
    "young",
    "zealous",
)
_NOUNS = (
    "anchor",
    "badger",
    "barrel",
    "beacon",
    "blanket",
    "bottle",
    "canyon",
    "carpet",
    "castle",
    "cherry",
    "compass",
    "cottage",
    "dolphin",
    "engine",
    "falcon",
    "feather",
    "garden",
    "glacier",
    "hammer",
    "harbor",
    "helmet",
    "island",
    "jacket",
    "kettle",
    "lantern",
    "ledger",
    "meadow",
    "mirror",
    "needle",
    "orchard",
    "pebble",
    "pillow",
    "puzzle",
    "quarry",
    "ribbon",
    "saddle",
    "spindle",
    "tunnel",
    "violin",
    "walnut",
)
_NUMBER_CHANCE = 1 / 9_000_000  # a uniform 7-digit guess is right with probability 1 / (10^7 - 10^6)
_UUID_CHANCE = 2.0**-122  # a version-4 UUID has 122 random bits


def _prompt_parts(kind: str, queries: Sequence[str]) -> tuple[str, str]:
    query = queries[0] if len(queries) == 1 else ", ".join(queries[:-1]) + ", and " + queries[-1]
    prefix = (
        f"Some special magic {kind} are hidden within the following text. Make sure to memorize it. "
        f"I will quiz you about the {kind} afterwards.\n"
    )
    suffix = (
        f"\nWhat are all the special magic {kind} for {query} mentioned in the provided text? "
        f"The special magic {kind} for {query} mentioned in the provided text are"
    )
    return prefix, suffix


def _value(kind: str, rng: random.Random) -> str:
    if kind == "numbers":
        return str(rng.randint(10**6, 10**7 - 1))
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def generate(
    task: str,
    n: int,
    length: int,
    seed: int,
    *,
    depth: float | None = None,
    haystack: str | None = None,
) -> list[Example]:
    """``n`` examples of ``task`` with prompts of exactly ``length`` characters.

    Args:
        depth: fraction of the haystack where the first answer needle starts; None = random grid depth.
        haystack: background text for the real-text tasks (default: the built-in corpus, else a
            vendored public-domain passage). Ignored by ``s-niah-1``, whose haystack is RULER's noise.
    """
    check_choice("task", task, tasks)
    check_int("n", n)
    check_int("seed", seed, 0)
    check_int("length", length)
    if depth is not None:
        check_number("depth", depth, 0, 1)
    hay_kind, kind, n_keys, n_asked, n_values = _SPEC[task]
    hay = noise_haystack() if hay_kind == "noise" else real_haystack(haystack)
    examples = []
    for i in range(n):
        rng = random.Random(f"niah/{task}/{seed}/{i}")
        keys = [f"{a}-{b}" for a, b in rng.sample([(a, b) for a in _ADJECTIVES for b in _NOUNS], n_keys)]
        values: dict[str, list[str]] = {}
        seen: set[str] = set()
        for key in keys:
            values[key] = []
            while len(values[key]) < n_values:
                value = _value(kind, rng)
                if value not in seen:
                    seen.add(value)
                    values[key].append(value)
        asked = keys[:n_asked]
        needles = [
            (key, value, f"One of the special magic {kind} for {key} is: {value}. ")
            for key in keys
            for value in values[key]
        ]
        # The first needle of an asked key honours ``depth``; the rest take distinct grid depths.
        grid = rng.sample(RULER_DEPTHS, len(needles))
        depths = [depth if depth is not None and j == 0 else grid[j] for j in range(len(needles))]
        prefix, suffix = _prompt_parts(kind, asked)
        prompt = layout(hay, rng, prefix, suffix, [t for _, _, t in needles], depths, length)
        # Inserts come back sorted by depth; index them by their (unique) needle sentence.
        position = dict(zip((t for _, t in prompt.inserts), prompt.insert_positions()))
        offsets = {t: off for off, t in prompt.inserts}
        needle_meta = [
            {
                "key": key,
                "value": value,
                "asked": key in asked,
                "position": position[text],
                "depth": offsets[text] / prompt.filler_chars,
            }
            for key, value, text in needles
        ]
        answers = tuple(v for key in asked for v in values[key])
        meta = {
            "task": task,
            "length": length,
            "seed": seed,
            "index": i,
            "unit": "characters",
            "haystack": hay_kind,
            "value_type": kind,
            "requested_depth": depth,
            "needles": needle_meta,
        }
        examples.append(Example(prompt=prompt, answers=answers, meta=meta))
    return examples


def score(examples: Sequence[Example], predictions: Sequence[str]) -> dict[str, float]:
    """RULER ``string_match_all``: mean fraction of expected values present in each generated text.

    Returns ``accuracy`` (that mean), ``all_correct`` (fraction of examples with every value found) and ``n``.
    """
    check_predictions(examples, predictions)
    fractions = []
    for ex, pred in zip(examples, predictions):
        if not isinstance(pred, str):
            raise ValueError(f"predictions must be generated strings; got {type(pred).__name__}")
        found = [value.lower() in pred.lower() for value in ex.answers]
        fractions.append(sum(found) / len(found))
    return {
        "accuracy": sum(fractions) / len(fractions),
        "all_correct": sum(f == 1 for f in fractions) / len(fractions),
        "n": float(len(fractions)),
    }


def chance(examples: Sequence[Example]) -> float:
    """Expected ``accuracy`` of guessing one uniformly random value of the right type per expected value."""
    if not examples:
        raise ValueError("examples must not be empty")
    per = [_NUMBER_CHANCE if ex.meta["value_type"] == "numbers" else _UUID_CHANCE for ex in examples]
    return sum(per) / len(per)
