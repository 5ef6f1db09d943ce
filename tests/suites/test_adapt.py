import random

from hope.suites import adapt


def test_answer_follows_from_the_demonstrations():
    """Infer the substitution from the demos alone and apply it to the query."""
    for ex in adapt.generate("substitution", 100, 6, 0, k=3):
        *demos, query = ex.text().split("\n")
        assert len(demos) == 3 and query.endswith(">")
        mapping = {}
        for line in demos:
            source, target = line.split(">")
            assert len(source) == len(target) == 6
            for a, b in zip(source, target):
                assert mapping.setdefault(a, b) == b  # one consistent substitution
        assert "".join(mapping[c] for c in query[:-1]) == ex.answers[0]


def test_substitution_changes_between_examples():
    subs = {ex.meta["substitution"] for ex in adapt.generate("substitution", 50, 4, 1)}
    assert len(subs) == 50 and all(sorted(s) == list(adapt.LETTERS) for s in subs)


def test_random_letters_match_one_in_26_characters():
    examples = adapt.generate("substitution", 400, 8, 2)
    rng = random.Random(0)
    guesses = ["".join(rng.choice(adapt.LETTERS) for _ in range(8)) for _ in examples]
    got = adapt.score(examples, guesses)["char_accuracy"]
    sd = (adapt.CHAR_CHANCE * (1 - adapt.CHAR_CHANCE) / (400 * 8)) ** 0.5
    assert abs(got - adapt.CHAR_CHANCE) < 4 * sd


def test_scoring_reads_the_first_line_only():
    ex = adapt.generate("substitution", 1, 5, 0)
    answer = ex[0].answers[0]
    assert adapt.score(ex, [f" {answer}\nmore text"])["accuracy"] == 1.0
    m = adapt.score(ex, [answer[:3] + "!!"])
    assert m["accuracy"] == 0.0 and m["char_accuracy"] == 0.6
