import re

import pytest

from hope.suites import babi
from hope.suites.haystack import FALLBACK_TEXT

ROOMS = "bathroom|bedroom|garden|hallway|kitchen|office"


def solve(story: list[str], question: str) -> str:
    """An independent reader of the generated stories: tracks rooms, carriers and hand-overs from text alone."""
    room, carrier, spot, history, gives = {}, {}, {}, {}, []
    relations = []

    def place(obj, where):
        spot[obj] = where
        if not history.setdefault(obj, []) or history[obj][-1] != where:
            history[obj].append(where)

    for s in story:
        if m := re.fullmatch(rf"(\w+) (?:moved|went|journeyed|travelled|went back) to the ({ROOMS})\.", s):
            room[m[1]] = m[2]
            for obj, who in carrier.items():
                if who == m[1]:
                    place(obj, m[2])
        elif m := re.fullmatch(r"(\w+) (?:picked up|got|grabbed|took) the (\w+)(?: there)?\.", s):
            carrier[m[2]] = m[1]
            place(m[2], room[m[1]])
        elif m := re.fullmatch(r"(\w+) (?:dropped|put down|discarded|left) the (\w+)\.", s):
            assert carrier.pop(m[2]) == m[1]
        elif m := re.fullmatch(r"(\w+) (?:gave|handed|passed) the (\w+) to (\w+)\.", s):
            assert carrier[m[2]] == m[1] and room[m[1]] == room[m[3]]
            carrier[m[2]] = m[3]
            gives.append((m[1], m[2], m[3]))
        elif m := re.fullmatch(r"The (\w+) is (north|south|east|west) of the (\w+)\.", s):
            relations.append((m[1], m[2], m[3]))
        else:
            raise AssertionError(f"unparsed sentence {s!r}")

    if m := re.fullmatch(r"Where is (\w+)\?", question):
        return room[m[1]]
    if m := re.fullmatch(r"Where is the (\w+)\?", question):
        return room[carrier[m[1]]] if m[1] in carrier else spot[m[1]]
    if m := re.fullmatch(r"Where was the (\w+) before the (\w+)\?", question):
        trail = history[m[1]]
        assert trail.count(m[2]) == 1
        return trail[trail.index(m[2]) - 1]
    if m := re.fullmatch(r"What is (\w+) of the (\w+)\?", question):
        (x,) = [x for x, d, y in relations if (d, y) == (m[1], m[2])]
        return x
    if m := re.fullmatch(r"What is the (\w+) (\w+) of\?", question):
        (y,) = [y for x, d, y in relations if (x, d) == (m[1], m[2])]
        return y
    if m := re.fullmatch(r"Who gave the (\w+) to (\w+)\?", question):
        return [g for g, o, r in gives if (o, r) == (m[1], m[2])][-1]
    if m := re.fullmatch(r"Who did (\w+) give the (\w+) to\?", question):
        return [r for g, o, r in gives if (g, o) == (m[1], m[2])][-1]
    if m := re.fullmatch(r"What did (\w+) give to (\w+)\?", question):
        (o,) = {o for g, o, r in gives if (g, r) == (m[1], m[2])}
        return o
    if m := re.fullmatch(r"Who gave the (\w+)\?", question):
        return [g for g, o, r in gives if o == m[1]][-1]
    if m := re.fullmatch(r"Who received the (\w+)\?", question):
        return [r for g, o, r in gives if o == m[1]][-1]
    raise AssertionError(f"unparsed question {question!r}")


@pytest.mark.parametrize("task", babi.tasks)
def test_answers_agree_with_an_independent_reader(task):
    examples = babi.generate(task, 300, None, 0)
    for ex in examples:
        assert solve(ex.meta["story"], ex.meta["question"]) == ex.answers[0]
        assert ex.answers[0] in ex.choices and ex.answers[0] not in ex.meta["question"]
        assert ex.text() == " ".join(ex.meta["story"]) + f"\nQuestion: {ex.meta['question']}\nAnswer:"
    # Answers are not constant: a model cannot pass by always saying one label.
    top = max(sum(ex.answers[0] == a for ex in examples) for a in babi.LABELS[task])
    assert top < 0.5 * len(examples)


def test_qa5_asks_every_question_type():
    questions = {
        re.sub(r"[A-Z]\w+|the \w+", "X", ex.meta["question"]) for ex in babi.generate("qa5", 300, None, 1)
    }
    assert len(questions) == 5


def test_babilong_scatters_the_story_in_order_through_background_text():
    length = 5000
    for task in babi.tasks:
        for ex in babi.generate(task, 5, length, 3, haystack=FALLBACK_TEXT):
            text = ex.text()
            assert len(text) == length
            assert text.endswith(f"\nQuestion: {ex.meta['question']}\nAnswer:")
            at = 0
            for sentence in ex.meta["story"]:  # each fact occurs after the previous one (ValueError if not)
                at = text.index(sentence + " ", at) + len(sentence)
            assert "Bennet" in text  # background text is present
            assert ex.answers == (solve(ex.meta["story"], ex.meta["question"]),)


def test_babilong_reaches_a_million_characters():
    ex = babi.generate("qa2", 1, 1_000_000, 0, haystack=FALLBACK_TEXT)[0]
    pieces = list(ex.pieces(1 << 16))
    assert sum(map(len, pieces)) == 1_000_000
    assert pieces[-1].endswith("Answer:")


def test_facts_option_sets_story_length_and_rejects_impossible_values():
    assert all(len(ex.meta["story"]) == 12 for ex in babi.generate("qa1", 10, None, 0, facts=12))
    with pytest.raises(ValueError, match="facts=1 is too few events for qa3"):
        babi.generate("qa3", 1, None, 0, facts=1)
    with pytest.raises(ValueError, match="length must be at least"):
        babi.generate("qa1", 1, 50, 0, facts=10)


def test_scoring_follows_babilong_rule():
    ex = babi.generate("qa1", 1, None, 0)[0]
    target = ex.answers[0]
    other = next(c for c in ex.choices if c != target)
    assert babi.correct(ex, target)
    assert babi.correct(
        ex, f"The answer is {target.upper()}. Then {other}."
    )  # only the first sentence counts
    assert not babi.correct(ex, f"{target} or {other}")  # hedging between labels is wrong
    assert not babi.correct(ex, "nowhere")
