import pytest

from hope.suites import IGNORE, mad


def test_baselines_are_mads_published_settings():
    assert mad.BASELINES["in-context-recall"] == {"vocab_size": 16, "seq_len": 128}
    assert mad.BASELINES["noisy-in-context-recall"]["vocab_size"] == 32
    assert mad.BASELINES["noisy-in-context-recall"]["frac_noise"] == 0.2
    assert mad.BASELINES["selective-copying"] == {"vocab_size": 16, "seq_len": 256, "num_tokens_to_copy": 16}
    assert mad.BASELINES["memorization"] == {"vocab_size": 256, "seq_len": 32}
    assert mad.NUM_TRAIN_EXAMPLES["memorization"] == 256 and mad.NUM_TEST_EXAMPLES == 1280


@pytest.mark.parametrize("task", mad.tasks)
def test_default_shapes_and_vocabulary(task):
    base = mad.BASELINES[task]
    shifted = task in ("in-context-recall", "noisy-in-context-recall")  # next-token form drops one token
    for ex in mad.generate(task, 20, None, 0):
        assert len(ex.prompt) == len(ex.targets) == base["seq_len"] - shifted
        assert 0 <= min(ex.prompt) and max(ex.prompt) < base["vocab_size"]
        assert ex.answers == tuple(t for t in ex.targets if t != IGNORE) and ex.answers
        assert all(0 <= t < base["vocab_size"] for t in ex.answers)


def _check_recall(ex, n_keys_lo, n_keys_hi):
    """Rebuild key->value bindings from the prompt and check every scored target is a repeated key's value."""
    seq = ex.prompt + [None]
    assert all(ex.targets[t] == IGNORE for t in range(1, len(ex.prompt), 2))  # next token is a key: unscored
    binding = {}
    for t in range(0, len(ex.prompt), 2):
        key, value = seq[t], seq[t + 1] if t + 1 < len(ex.prompt) else None
        if not n_keys_lo <= key < n_keys_hi:  # noise pair
            assert ex.targets[t] == IGNORE
            continue
        if key in binding:
            assert ex.targets[t] == binding[key]  # target at the key position is the next token, its value
        else:
            assert ex.targets[t] == IGNORE
            binding[key] = value if value is not None else ex.targets[t]
        if value is not None:
            assert value == binding[key]  # bindings are consistent within a sequence


def test_in_context_recall_targets_are_values_of_seen_keys():
    for ex in mad.generate("in-context-recall", 30, None, 1):
        _check_recall(ex, 0, 8)
        assert ex.targets[-1] != IGNORE  # the final probe is always scored


def test_noisy_recall_has_noise_tokens_at_about_the_configured_rate():
    examples = mad.generate("noisy-in-context-recall", 60, None, 2)
    noise_slots = total = 0
    for ex in examples:
        _check_recall(ex, 0, 8)
        pairs = [ex.prompt[t] for t in range(0, len(ex.prompt) - 1, 2)]
        noise_slots += sum(k >= 16 for k in pairs)
        total += len(pairs)
    assert noise_slots / total == pytest.approx(0.2, abs=0.03)


def test_fuzzy_recall_keys_have_full_motif_size_at_test():
    ex = mad.generate("fuzzy-in-context-recall", 1, None, 0)[0]
    pad = 15
    body = [t for t in ex.prompt if t != pad]
    keys = [t for t in body if t < 7]
    assert keys and len(keys) % 3 == 0  # runs of 3 key tokens
    train = mad.generate("fuzzy-in-context-recall", 1, None, 0, split="train")[0]
    assert all(t != IGNORE for t in train.targets)  # training: every next token is a target


def test_selective_copying_asks_for_the_content_tokens_in_order():
    for ex in mad.generate("selective-copying", 20, None, 3):
        blank, copy = 14, 15
        at = ex.prompt.index(copy)
        content = [t for t in ex.prompt[:at] if t != blank]
        assert ex.answers == tuple(content) and len(content) == 16
        assert ex.prompt[at + 1 :] == [blank] * 16
        assert all(t == IGNORE for t in ex.targets[: at + 1])


def test_compression_reconstructs_the_whole_input_from_the_final_token():
    for ex in mad.generate("compression", 10, None, 0):
        assert ex.targets == ex.prompt and ex.prompt[-1] == 15 and 15 not in ex.prompt[:-1]
        assert ex.meta["readout"] == "final-state"


def test_memorization_map_is_fixed_across_seeds_and_splits_and_changes_with_map_seed():
    facts = mad.memorization_map(256)
    assert len(facts) == 127 and len(set(facts.values())) == 127
    assert all(k < 127 <= v < 255 for k, v in facts.items())
    for seed, split in ((0, "train"), (5, "test")):
        for ex in mad.generate("memorization", 10, None, seed, split=split):
            for t in range(0, len(ex.prompt), 2):
                assert ex.prompt[t + 1] == 255 and ex.targets[t + 1] == facts[ex.prompt[t]]
    assert mad.memorization_map(256, map_seed=1) != facts


def test_options_change_vocab_length_and_noise():
    ex = mad.generate("in-context-recall", 1, 512, 0, vocab_size=64)[0]
    assert len(ex.prompt) == 511 and max(ex.prompt) < 64
    ex = mad.generate("selective-copying", 1, 512, 0, num_tokens_to_copy=32)[0]
    assert len(ex.answers) == 32


def test_macro_accuracy_averages_over_classes():
    ex = mad.generate("compression", 1, 4, 0)[0]  # prompt e.g. [a, b, c, 15]
    pred = list(ex.answers)
    pred[-1] = (pred[-1] + 1) % 16  # the compression token's class gets 0%
    m = mad.score([ex], [pred])
    assert m["accuracy"] == 0.75
    classes = set(ex.answers)
    assert m["macro_accuracy"] == pytest.approx((len(classes) - 1) / len(classes))


def test_bad_options_raise_naming_the_field():
    with pytest.raises(ValueError, match=r"split must be one of \['train', 'test'\]"):
        mad.generate("compression", 1, None, 0, split="val")
    with pytest.raises(ValueError, match="length must be an even number"):
        mad.generate("in-context-recall", 1, 127, 0)
    with pytest.raises(ValueError, match="length must exceed 2 \\* num_tokens_to_copy"):
        mad.generate("selective-copying", 1, 30, 0)
    with pytest.raises(ValueError, match="frac_noise applies only to noisy-in-context-recall"):
        mad.generate("in-context-recall", 1, None, 0, frac_noise=0.5)
    with pytest.raises(ValueError, match="frac_noise must be a finite number >= 0 and < 1"):
        mad.generate("noisy-in-context-recall", 1, None, 0, frac_noise=1.0)
    with pytest.raises(ValueError, match="one token per scored position"):
        mad.score(mad.generate("compression", 1, None, 0), [[1, 2]])
