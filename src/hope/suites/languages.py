"""Two synthetic languages over the same meanings: the continual-translation stand-in of the paper's
Fig. 8 (learning two new languages one after the other), used by ``continual``'s ``languages`` task.

A **meaning** is a transitive event: an agent noun and its number, a verb and its tense, a patient
noun and its number (:class:`Meaning`; 8 nouns, 6 verbs, singular / plural, past / present / future:
4,608 meanings). Its **representation** is the six meaning tokens in that fixed order
(:func:`representation`), the same for both languages: the "English" side of the translation.

The two languages share no word and differ in word order and morphology:

* ``L1`` — agglutinative, subject-verb-object. A noun is its stem, followed by the plural suffix
  when plural; the verb is its stem followed by a tense suffix (past or future; the present is
  unmarked). Roles come from word order: ``agent [PL] verb [TENSE] patient [PL]`` (3 to 6 words).
* ``L2`` — fusional, verb-final, with case. Every (noun, number) pair is one word and every (verb,
  tense) pair is one word; the agent is followed by the ergative particle, and the two noun phrases
  come in either order (a coin per sentence), so only the case marks the roles:
  ``agent ERG patient verb`` or ``patient agent ERG verb`` (4 words).

Which word form means what is a seeded permutation of each language's block of token ids
(:func:`lexicon`), so neither language's ids are ordered like the meanings.

An example is a sentence followed by the ``TO`` token and the representation, teacher-forced: the
model must output the meaning token ``i`` at the position before it (after ``TO`` for the first), so
``targets`` marks those six positions and ``answers`` holds the six tokens. With every position
right the greedy translation is exactly right, so ``exact`` (all six) is a translation score.

Meanings are split, not only examples: a seeded permutation of the 4,608 meanings gives 80% to the
training split and 20% to the test split, so a test sentence is a combination of words never seen
together in training (every word is seen). Example ``i`` of a split has the same meaning in both
languages.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from typing import NamedTuple

from hope.checks import check_choice, check_int
from hope.suites.common import IGNORE, Example, check_predictions

LANGUAGES = ("L1", "L2")
N_NOUNS = 8
N_VERBS = 6
NUMBERS = ("singular", "plural")
TENSES = ("past", "present", "future")
SPLITS = ("train", "test")
TRAIN_FRACTION = 0.8
"""Share of the meanings in the training split; the rest are the test split's."""

# Meaning tokens: nouns, verbs, numbers, tenses, then TO; each language's words after them.
NOUN = 0
VERB = NOUN + N_NOUNS
NUMBER = VERB + N_VERBS
TENSE = NUMBER + len(NUMBERS)
TO = TENSE + len(TENSES)
L1_START = TO + 1
L1_SIZE = N_NOUNS + N_VERBS + 1 + 2  # stems, the plural suffix, the past and future suffixes
L2_START = L1_START + L1_SIZE
L2_SIZE = N_NOUNS * len(NUMBERS) + N_VERBS * len(TENSES) + 1  # fused forms, the ergative particle
VOCAB_SIZE = L2_START + L2_SIZE
SLOTS = (N_NOUNS, len(NUMBERS), N_VERBS, len(TENSES), N_NOUNS, len(NUMBERS))
"""How many values each of the representation's six positions can take."""


class Meaning(NamedTuple):
    agent: int
    agent_number: int
    verb: int
    tense: int
    patient: int
    patient_number: int


def representation(m: Meaning) -> tuple[int, ...]:
    """The six meaning tokens of ``m``, shared by both languages."""
    return (
        NOUN + m.agent,
        NUMBER + m.agent_number,
        VERB + m.verb,
        TENSE + m.tense,
        NOUN + m.patient,
        NUMBER + m.patient_number,
    )


def lexicon(seed: int) -> dict[str, dict[tuple, int]]:
    """Each language's word forms -> token ids, a seeded permutation of its block of ids. Keys:
    L1 ``("noun", n)``, ``("verb", v)``, ``("plural",)``, ``("tense", t)`` for past and future;
    L2 ``("noun", n, number)``, ``("verb", v, tense)``, ``("ergative",)``."""
    forms = {
        "L1": [("noun", n) for n in range(N_NOUNS)]
        + [("verb", v) for v in range(N_VERBS)]
        + [("plural",), ("tense", TENSES.index("past")), ("tense", TENSES.index("future"))],
        "L2": [("noun", n, k) for n in range(N_NOUNS) for k in range(len(NUMBERS))]
        + [("verb", v, t) for v in range(N_VERBS) for t in range(len(TENSES))]
        + [("ergative",)],
    }
    out = {}
    for language, start in (("L1", L1_START), ("L2", L2_START)):
        ids = list(range(start, start + len(forms[language])))
        random.Random(f"languages/lexicon/{seed}/{language}").shuffle(ids)
        out[language] = dict(zip(forms[language], ids))
    return out


def render(m: Meaning, language: str, words: dict[tuple, int], rng: random.Random) -> list[int]:
    """The sentence for ``m`` in ``language`` with that language's ``words`` (from :func:`lexicon`);
    ``rng`` flips L2's coin for the order of its noun phrases."""
    check_choice("language", language, LANGUAGES)
    if language == "L1":

        def noun_phrase(noun: int, number: int) -> list[int]:
            return [words[("noun", noun)]] + ([words[("plural",)]] if NUMBERS[number] == "plural" else [])

        verb = [words[("verb", m.verb)]]
        if TENSES[m.tense] != "present":
            verb.append(words[("tense", m.tense)])
        return noun_phrase(m.agent, m.agent_number) + verb + noun_phrase(m.patient, m.patient_number)
    agent = [words[("noun", m.agent, m.agent_number)], words[("ergative",)]]
    patient = [words[("noun", m.patient, m.patient_number)]]
    phrases = agent + patient if rng.random() < 0.5 else patient + agent
    return phrases + [words[("verb", m.verb, m.tense)]]


def _meanings(seed: int, split: str) -> list[Meaning]:
    every = [Meaning(*fields) for fields in itertools.product(*(range(k) for k in SLOTS))]
    random.Random(f"languages/meanings/{seed}").shuffle(every)
    cut = int(len(every) * TRAIN_FRACTION)
    return every[:cut] if split == "train" else every[cut:]


def generate(n: int, seed: int, *, split: str = "train") -> list[Example]:
    """``n`` examples per language, all of L1 then all of L2; example ``i`` of both languages has the
    same meaning, drawn from the split's meanings. Same arguments, same examples."""
    check_int("n", n)
    check_int("seed", seed, 0)
    check_choice("split", split, SPLITS)
    words = lexicon(seed)
    pool = _meanings(seed, split)
    examples = []
    for language in LANGUAGES:
        for i in range(n):
            m = random.Random(f"languages/{seed}/{split}/{i}").choice(pool)
            sentence = render(
                m, language, words[language], random.Random(f"languages/{seed}/{split}/{i}/{language}")
            )
            answer = representation(m)
            prompt = sentence + [TO] + list(answer[:-1])
            targets = [IGNORE] * len(sentence) + list(answer)
            meta = {
                "task": "languages",
                "seed": seed,
                "split": split,
                "index": i,
                "language": language,
                "meaning": tuple(m),
                "vocab_size": VOCAB_SIZE,
            }
            examples.append(Example(prompt=prompt, answers=answer, targets=targets, meta=meta))
    return examples


def score(examples: Sequence[Example], predictions: Sequence[Sequence[int]]) -> dict[str, float]:
    """Predictions are the six tokens output at the scored positions. Returns ``accuracy`` (share of
    meaning tokens right), ``exact`` (share of sentences with all six right), both per language
    (``accuracy/L1``, ``exact/L2``, ...), and ``n`` (sentences)."""
    check_predictions(examples, predictions)
    tokens: dict[str, list[float]] = {}
    exact: dict[str, list[float]] = {}
    for ex, pred in zip(examples, predictions):
        if len(pred) != len(ex.answers):
            raise ValueError(f"each prediction must hold {len(ex.answers)} meaning tokens; got {len(pred)}")
        hits = [int(got) == want for want, got in zip(ex.answers, pred)]
        tokens.setdefault(ex.meta["language"], []).extend(map(float, hits))
        exact.setdefault(ex.meta["language"], []).append(float(all(hits)))
    metrics = {
        "accuracy": sum(map(sum, tokens.values())) / sum(map(len, tokens.values())),
        "exact": sum(map(sum, exact.values())) / len(examples),
    }
    for language in sorted(tokens):
        metrics[f"accuracy/{language}"] = sum(tokens[language]) / len(tokens[language])
        metrics[f"exact/{language}"] = sum(exact[language]) / len(exact[language])
    metrics["n"] = float(len(examples))
    return metrics


def chance(examples: Sequence[Example]) -> float:
    """Expected ``accuracy`` of guessing each meaning token uniformly among its position's values."""
    if not examples:
        raise ValueError("examples must not be empty")
    return sum(1 / k for k in SLOTS) / len(SLOTS)
