"""BABILong prompts over the built-in corpus (issue 17, item 3): deterministic under a seed, every story
sentence really in the haystack at its stated depth, and the answer recovered from the prompt text alone."""

import itertools
import re

import pytest
from test_babi import solve

from hope.suites import babi
from hope.suites.haystack import real_haystack

NAMES = "Mary|John|Sandra|Daniel|Bill|Fred|Jeff"
VERBS = "moved|went back|went|journeyed|travelled|picked up|got|grabbed|took|dropped|put down|discarded|left|gave|handed|passed"
# Any sentence of a bAbI story's forms, wherever it is in the prompt (the haystack has none of its own).
STORY_SENTENCE = re.compile(
    rf"(?<![^ ])(?:(?:{NAMES}) (?:{VERBS}) [^.?!]*\.|The \w+ is (?:north|south|east|west) of the \w+\.)"
)


def _story_from_text(text: str) -> tuple[list[str], str]:
    """(story sentences, question) read off the prompt text alone, not from ``meta``."""
    body, question = re.fullmatch(r"(.*)\nQuestion: (.*)\nAnswer:", text, re.DOTALL).groups()
    return STORY_SENTENCE.findall(body), question


def test_same_seed_same_prompts_other_seed_other_prompts():
    first, again = (babi.generate("qa2", 4, 4096, 7) for _ in range(2))
    assert [ex.text() for ex in first] == [ex.text() for ex in again]
    assert [ex.meta for ex in first] == [ex.meta for ex in again]
    other = babi.generate("qa2", 4, 4096, 8)
    assert all(a.text() != b.text() for a, b in zip(first, other))


@pytest.mark.parametrize("task", babi.tasks)
@pytest.mark.parametrize("length", [1024, 4096, 65536])
def test_every_fact_sits_in_the_corpus_at_its_depth_and_the_text_alone_gives_the_answer(task, length):
    hay = real_haystack(None)  # the built-in corpus, as bench-suite uses it
    bounds = [*hay.boundaries, len(hay.unit)]
    widest = max(b - a for a, b in itertools.pairwise(bounds))
    starts = set(hay.boundaries)
    for ex in babi.generate(task, 6, length, 11):
        text, story = ex.text(), ex.meta["story"]
        assert len(text) == length and "Question:" not in text[: -len(ex.meta["question"]) - 20]
        filler = ex.prompt.filler_chars
        inserted = 0
        for sentence, depth, at in zip(story, ex.meta["depths"], ex.meta["positions"]):
            assert text[at : at + len(sentence) + 1] == sentence + " "
            offset = at - inserted  # characters of background text before it
            assert (ex.prompt.start + offset) % len(hay.unit) in starts  # at a sentence start of the corpus
            assert abs(offset - depth * filler) <= widest  # the boundary nearest its stated depth
            inserted += len(sentence) + 1
        assert ex.meta["depths"] == sorted(ex.meta["depths"])
        # An independent reader of the prompt finds exactly the story, in order, and answers from it.
        found, question = _story_from_text(text)
        assert found == story and question == ex.meta["question"]
        assert solve(found, question) == ex.answers[0]


def test_a_million_token_prompt_streams_without_being_built_whole():
    (ex,) = babi.generate("qa1", 1, 1 << 20, 0)
    pieces = list(ex.pieces(2048))
    assert len(pieces) == 512 and all(len(p) == 2048 for p in pieces)
    assert pieces[-1].endswith(f"\nQuestion: {ex.meta['question']}\nAnswer:")
    for sentence, at in zip(ex.meta["story"], ex.meta["positions"]):
        piece, within = divmod(at, 2048)
        assert (pieces[piece] + (pieces[piece + 1] if piece + 1 < len(pieces) else ""))[
            within : within + len(sentence)
        ] == sentence
