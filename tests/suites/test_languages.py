"""The two synthetic languages: deterministic, each sentence parses back (by a parser written here from
the grammar, independent of the renderer) to its example's meaning, the same meaning in both
languages, and the splits hold disjoint meanings."""

import random

import pytest

from hope.suites import continual, languages
from hope.suites.common import IGNORE


def parse(sentence, language, words):
    """The meaning of a sentence, read from the grammar in the module docstring: L1 by word order and
    suffixes, L2 by the ergative particle (either phrase order) and fused forms."""
    form = {token: key for key, token in words.items()}
    if language == "L1":
        i = 0

        def take(kind):
            nonlocal i
            key = form[sentence[i]]
            assert key[0] == kind, (sentence, i, key)
            i += 1
            return key[1]

        def marked(kind, unmarked):
            nonlocal i
            if i < len(sentence) and form[sentence[i]][0] == kind:
                i += 1
                return form[sentence[i - 1]][1] if kind == "tense" else 1
            return unmarked

        agent = take("noun")
        agent_number = marked("plural", 0)
        verb = take("verb")
        tense = marked("tense", languages.TENSES.index("present"))
        patient = take("noun")
        patient_number = marked("plural", 0)
        assert i == len(sentence)
        return (agent, agent_number, verb, tense, patient, patient_number)
    keys = [form[t] for t in sentence]
    assert len(keys) == 4 and keys[-1][0] == "verb" and keys.count(("ergative",)) == 1
    erg = keys.index(("ergative",))
    agent = keys[erg - 1]
    (patient,) = [k for j, k in enumerate(keys[:-1]) if j not in (erg - 1, erg)]
    return (agent[1], agent[2], keys[-1][1], keys[-1][2], patient[1], patient[2])


def test_every_sentence_parses_back_to_its_meaning_in_both_languages():
    words = languages.lexicon(3)
    examples = languages.generate(300, 3, split="train")
    by_index = {}
    for ex in examples:
        n = len(ex.prompt) - 6
        sentence = ex.prompt[:n]
        meaning = parse(sentence, ex.meta["language"], words[ex.meta["language"]])
        assert meaning == ex.meta["meaning"]
        assert ex.answers == languages.representation(languages.Meaning(*meaning))
        by_index.setdefault(ex.meta["index"], []).append(meaning)
    # Example i means the same in L1 and L2: the two languages translate to one representation.
    assert len(by_index) == 300 and all(len(set(ms)) == 1 and len(ms) == 2 for ms in by_index.values())


def test_the_prompt_is_the_sentence_then_the_teacher_forced_representation():
    for ex in languages.generate(50, 0, split="test"):
        n = len(ex.prompt) - 6
        assert ex.prompt[n] == languages.TO and ex.prompt[n + 1 :] == list(ex.answers[:-1])
        assert ex.targets[:n] == [IGNORE] * n and ex.targets[n:] == list(ex.answers)
        assert all(0 <= t < languages.VOCAB_SIZE for t in ex.prompt)


def test_the_languages_differ_in_vocabulary_order_and_morphology():
    examples = languages.generate(400, 1)
    vocab = {
        lang: {t for ex in examples if ex.meta["language"] == lang for t in ex.prompt[: len(ex.prompt) - 6]}
        for lang in languages.LANGUAGES
    }
    assert not vocab["L1"] & vocab["L2"]  # no shared word
    lengths = {lang: {len(ex.prompt) - 6 for ex in examples if ex.meta["language"] == lang} for lang in vocab}
    assert lengths == {"L1": {3, 4, 5, 6}, "L2": {4}}  # L1 marks number and tense with suffixes
    erg = languages.lexicon(1)["L2"][("ergative",)]
    positions = {ex.prompt.index(erg) for ex in examples if ex.meta["language"] == "L2"}
    assert positions == {1, 2}  # L2's noun phrases come in both orders


def test_generation_is_deterministic_and_the_splits_share_no_meaning():
    assert languages.generate(40, 5) == languages.generate(40, 5)
    assert languages.generate(40, 5) != languages.generate(40, 6)
    assert languages.lexicon(5) != languages.lexicon(6)
    train = {ex.meta["meaning"] for ex in languages.generate(500, 5, split="train")}
    test = {ex.meta["meaning"] for ex in languages.generate(500, 5, split="test")}
    assert not train & test
    every = languages.N_NOUNS**2 * languages.N_VERBS * len(languages.TENSES) * len(languages.NUMBERS) ** 2
    assert len(languages._meanings(5, "train")) + len(languages._meanings(5, "test")) == every


def test_score_counts_meaning_tokens_and_whole_sentences_per_language():
    examples = languages.generate(10, 0)
    oracle = [list(ex.answers) for ex in examples]
    assert languages.score(examples, oracle)["exact"] == 1.0
    one_wrong = [
        p if ex.meta["language"] == "L1" else [(p[0] + 1) % 8, *p[1:]] for ex, p in zip(examples, oracle)
    ]
    metrics = continual.score(examples, one_wrong)  # continual delegates its languages task here
    assert metrics["accuracy/L1"] == 1.0 and metrics["exact/L2"] == 0.0
    assert metrics["accuracy/L2"] == pytest.approx(5 / 6) and metrics["accuracy"] == pytest.approx(11 / 12)
    many = languages.generate(2000, 0)
    rng = random.Random(0)
    L = languages
    bases = (L.NOUN, L.NUMBER, L.VERB, L.TENSE, L.NOUN, L.NUMBER)
    guesses = [[base + rng.randrange(k) for k, base in zip(L.SLOTS, bases)] for _ in many]
    assert continual.chance(many) == pytest.approx(sum(1 / k for k in L.SLOTS) / 6)
    assert L.score(many, guesses)["accuracy"] == pytest.approx(continual.chance(many), abs=0.01)
    with pytest.raises(ValueError, match="must hold 6 meaning tokens; got 5"):
        languages.score(examples, [p[:5] for p in oracle])


def test_bad_input_is_refused_by_name():
    with pytest.raises(ValueError, match=r"split must be one of \['train', 'test'\], got 'val'"):
        languages.generate(4, 0, split="val")
    with pytest.raises(ValueError, match="length must be None for languages"):
        continual.generate("languages", 4, 16, 0)
    with pytest.raises(ValueError, match=r"language must be one of \['L1', 'L2'\], got 'L3'"):
        languages.render(languages.Meaning(0, 0, 0, 0, 0, 0), "L3", {}, random.Random(0))
