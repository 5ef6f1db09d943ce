import re

import pytest

from hope.suites import niah
from hope.suites.haystack import FALLBACK_TEXT, NOISE_TEXT

HAY = FALLBACK_TEXT  # fixed background text, so these tests never depend on the built-in corpus


def test_prompt_has_exact_length_needles_and_ruler_question():
    for task in niah.tasks:
        for ex in niah.generate(task, 5, 3000, 0, haystack=HAY):
            text = ex.text()
            assert len(text) == 3000 == len(ex.prompt)
            assert text.isascii()
            for needle in ex.meta["needles"]:
                sentence = f"One of the special magic {ex.meta['value_type']} for {needle['key']} is: {needle['value']}."
                assert text.count(sentence) == 1
                assert text.index(sentence) == needle["position"]
            assert re.search(
                r"What are all the special magic \w+ for .* mentioned in the provided text\?", text
            )
            assert text.endswith("mentioned in the provided text are")
            asked = [n for n in ex.meta["needles"] if n["asked"]]
            assert sorted(ex.answers) == sorted(n["value"] for n in asked)
            # The values must be in the context (retrievable) but not in the question.
            question = text[text.rindex("\nWhat are all") :]
            assert all(a not in question for a in ex.answers)
            assert all(n["key"] in question for n in asked)


@pytest.mark.parametrize(
    ("task", "keys", "asked", "values"),
    [
        ("s-niah-1", 1, 1, 1),
        ("s-niah-3", 1, 1, 1),
        ("mk-niah", 4, 1, 1),
        ("mq-niah", 4, 4, 4),
        ("mv-niah", 1, 1, 4),
    ],
)
def test_task_shapes_follow_ruler(task, keys, asked, values):
    ex = niah.generate(task, 1, 4000, 2, haystack=HAY)[0]
    needles = ex.meta["needles"]
    assert len({n["key"] for n in needles}) == keys
    assert len({n["key"] for n in needles if n["asked"]}) == asked
    assert len(ex.answers) == values
    if task == "s-niah-3":
        assert re.fullmatch(
            r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", ex.answers[0]
        )
    else:
        assert all(re.fullmatch(r"[1-9]\d{6}", a) for a in ex.answers)


def test_s_niah_1_haystack_is_ruler_noise_and_others_use_given_text():
    noise = niah.generate("s-niah-1", 1, 2000, 0, haystack=HAY)[0].text()
    assert "The grass is green. The sky is blue." in noise and "Bennet" not in noise
    real = niah.generate("s-niah-2", 1, 2000, 0, haystack=HAY)[0].text()
    assert "Bennet" in real and "The grass is green" not in real
    with_default = niah.generate("s-niah-2", 1, 2000, 0)[0].text()  # built-in corpus or the fallback
    assert len(with_default) == 2000 and "The grass is green" not in with_default
    assert NOISE_TEXT.strip() in noise


@pytest.mark.parametrize("depth", [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0])
@pytest.mark.parametrize("task", ["s-niah-1", "s-niah-2", "mk-niah"])
def test_needle_is_at_the_requested_depth(task, depth):
    length = 20_000
    longest_sentence = max(len(s) for s in re.split(r"(?<=[.?!]) ", HAY))
    for ex in niah.generate(task, 3, length, 1, depth=depth, haystack=HAY):
        text = ex.text()
        first = next(n for n in ex.meta["needles"] if n["asked"])
        start = text.index(f"for {first['key']} is: {first['value']}.") - len(
            "One of the special magic numbers "
        )
        prefix_end = text.index("\n") + 1
        question = text.rindex("\nWhat are all")
        other = sum(
            len(f"One of the special magic numbers for {n['key']} is: {n['value']}. ")
            for n in ex.meta["needles"]
        )
        haystack_chars = question - prefix_end - other
        before = sum(
            len(f"One of the special magic numbers for {n['key']} is: {n['value']}. ")
            for n in ex.meta["needles"]
            if n["position"] < first["position"]
        )
        measured = (start - prefix_end - before) / haystack_chars
        assert measured == pytest.approx(first["depth"], abs=1e-9)
        assert abs(measured - depth) <= longest_sentence / haystack_chars
        # Needles start sentences: the haystack text right before one ends a sentence (or is the prefix).
        assert start == prefix_end or text[start - 2 : start] in (". ", "? ", "! ")


def test_default_depths_come_from_the_ruler_grid_and_vary():
    depths = {
        min(niah.RULER_DEPTHS, key=lambda d: abs(d - n["depth"]))
        for ex in niah.generate("mk-niah", 20, 50_000, 0, haystack=HAY)
        for n in ex.meta["needles"]
    }
    assert len(depths) > 15


def test_million_character_prompt_streams_in_bounded_pieces():
    length = 1_200_000
    ex = niah.generate("s-niah-2", 1, length, 0, depth=0.6, haystack=HAY)[0]
    needle = f"is: {ex.answers[0]}."
    total, tail, found_at = 0, "", None
    for piece in ex.pieces(1 << 16):
        assert len(piece) <= 1 << 16
        window = tail + piece
        if found_at is None and needle in window:
            found_at = total - len(tail) + window.index(needle)
        total += len(piece)
        tail = window[-len(needle) :]
    assert total == length
    assert found_at / length == pytest.approx(0.6, abs=0.01)


def test_scoring_is_ruler_string_match_all():
    ex = niah.generate("mv-niah", 1, 3000, 0, haystack=HAY)
    values = ex[0].answers
    assert niah.score(ex, [f"{values[0]} and {values[1]}"])["accuracy"] == 0.5
    assert niah.score(ex, [" ".join(values).upper()])["all_correct"] == 1.0


def test_bad_depth_and_too_short_length_raise():
    with pytest.raises(ValueError, match="depth must be a finite number >= 0 and <= 1"):
        niah.generate("s-niah-1", 1, 2000, 0, depth=1.5)
    with pytest.raises(ValueError, match="length must be at least"):
        niah.generate("mq-niah", 1, 300, 0)
    with pytest.raises(ValueError, match="predictions must be generated strings"):
        niah.score(niah.generate("s-niah-1", 1, 2000, 0), [1234567])
