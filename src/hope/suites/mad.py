"""The six MAD synthetic tasks (Poli et al., 2024, "Mechanistic Design and Scaling of Hybrid
Architectures", §3 and Appendix B), generated from the task definitions with MAD's published settings.

Baseline settings (MAD's ``configs/tasks/*.yml``; 12,800 training and 1,280 test sequences, except
memorization's 256 training sequences; ``length`` = ``seq_len``, ``vocab_size`` includes special tokens):

========================= ===== ======= =================================================
task                      vocab seq_len other
========================= ===== ======= =================================================
in-context-recall         16    128     multi-query
fuzzy-in-context-recall   16    128     keys/values of 1–3 tokens (keys of 3 at test)
noisy-in-context-recall   32    128     16 noise tokens, 20% of key-value slots are noise
selective-copying         16    256     16 tokens to copy
compression               16    32
memorization              256   32      one fixed key->value map (MAD's seed 12345)
========================= ===== ======= =================================================

:data:`SWEEPS` lists the difficulty levels MAD varies (vocabulary, length, training-set size, noise,
tokens to copy); a MAD score averages accuracy over them.

Every example is a per-position task (see ``hope.suites.common``): ``prompt`` is the input sequence,
``targets[t]`` what the model must output after reading ``prompt[:t+1]`` (``IGNORE`` = unscored) and
``answers`` the scored targets in order. As in MAD:

* the recall tasks are next-token prediction (``prompt`` is the sequence minus its last token,
  ``targets`` the sequence shifted by one); at test only values whose key occurred before are scored,
  on the ``train`` split every next token is a target;
* selective copying and memorization output a token the input does not show (the tokens to copy
  at the trailing blanks, a key's value at the insert token);
* compression reconstructs the whole input (``targets == prompt``) from the state at the final
  compression token (``meta["readout"] == "final-state"``): MAD's auto-encoder decodes the backbone's
  output at that one position through an MLP, the same one-vector bottleneck for every architecture
  (``hope.bench.readout.BottleneckReadout``).

Scoring is accuracy over scored positions (``accuracy``, micro-averaged) and, as MAD reports it via
``torchmetrics.MulticlassAccuracy``'s default, the mean of per-class accuracies (``macro_accuracy``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from hope.checks import check_choice, check_int, check_number
from hope.suites.common import IGNORE, Example, check_predictions

name = "mad"
tasks = (
    "in-context-recall",
    "fuzzy-in-context-recall",
    "noisy-in-context-recall",
    "selective-copying",
    "compression",
    "memorization",
)
splits = ("train", "test")

BASELINES: dict[str, dict[str, Any]] = {
    "in-context-recall": {"vocab_size": 16, "seq_len": 128},
    "fuzzy-in-context-recall": {"vocab_size": 16, "seq_len": 128, "motif_size": 3},
    "noisy-in-context-recall": {"vocab_size": 32, "seq_len": 128, "noise_vocab_size": 16, "frac_noise": 0.2},
    "selective-copying": {"vocab_size": 16, "seq_len": 256, "num_tokens_to_copy": 16},
    "compression": {"vocab_size": 16, "seq_len": 32},
    "memorization": {"vocab_size": 256, "seq_len": 32},
}
"""MAD's baseline setting of each task."""

_COMMON_SWEEP = {"seq_len": (256, 512, 1024), "num_train_examples": (6400, 3200, 1600, 800)}
SWEEPS: dict[str, dict[str, tuple[Any, ...]]] = {
    "in-context-recall": {"vocab_size": (32, 64, 128), **_COMMON_SWEEP},
    "fuzzy-in-context-recall": {"vocab_size": (32, 64, 128), **_COMMON_SWEEP},
    "noisy-in-context-recall": {"vocab_size": (48, 80, 144), **_COMMON_SWEEP, "frac_noise": (0.4, 0.6, 0.8)},
    "selective-copying": {
        "vocab_size": (32, 64, 128),
        "seq_len": (512, 1024),
        "num_train_examples": (6400, 3200, 1600, 800),
        "num_tokens_to_copy": (32, 64, 96),
    },
    "compression": {
        "vocab_size": (32, 64, 128),
        "seq_len": (64, 128, 256),
        "num_train_examples": (6400, 3200, 1600, 800),
    },
    "memorization": {"vocab_size": (512, 1024, 2048, 4096, 8192)},
}
"""MAD's difficulty changes, each varied alone from the baseline (``configs/tasks/*.yml`` "changes")."""

NUM_TRAIN_EXAMPLES = {task: 256 if task == "memorization" else 12_800 for task in tasks}
NUM_TEST_EXAMPLES = 1_280
MEMORIZATION_MAP_SEED = 12345
"""MAD's default seed, which fixes the memorization key->value map shared by train and test."""


def _recall(
    rng: np.random.Generator, vocab: int, seq_len: int, noise_vocab: int, frac_noise: float, train: bool
) -> tuple[list[int], list[int]]:
    """(In-context / noisy) recall: key-value pairs with per-sequence random bindings, noise slots, a final probe."""
    if seq_len % 2 or seq_len < 4:
        raise ValueError(f"length must be an even number >= 4 for recall tasks; got {seq_len}")
    plain = vocab - noise_vocab
    if plain < 2:
        raise ValueError(f"vocab_size must exceed the {noise_vocab} noise tokens by at least 2; got {vocab}")
    keys, values = np.arange(plain // 2), np.arange(plain // 2, plain)
    slots = seq_len // 2 - 1
    kept = rng.integers(slots)  # at least one real pair, so the final probe has a key to repeat
    binding: dict[int, int] = {}
    seq: list[int] = []
    scored: list[bool] = []
    for slot in range(slots):
        if frac_noise > 0 and slot != kept and rng.random() < frac_noise:
            seq += rng.integers(plain, vocab, size=2).tolist()
            scored += [False, False]
            continue
        key = int(rng.choice(keys))
        repeat = key in binding
        binding.setdefault(key, int(rng.choice(values)))
        seq += [key, binding[key]]
        scored += [False, repeat]
    probe = int(rng.choice(sorted(binding)))
    seq += [probe, binding[probe]]
    scored += [False, True]
    return _shifted(seq, scored, train)


def _fuzzy(
    rng: np.random.Generator, vocab: int, seq_len: int, motif: int, train: bool
) -> tuple[list[int], list[int]]:
    """Fuzzy recall: keys and values are 1..motif distinct tokens; at test every key has ``motif`` tokens."""
    pad = vocab - 1
    plain = vocab - 1
    keys, values = np.arange(plain // 2), np.arange(plain // 2, plain)
    if len(keys) < motif:
        raise ValueError(
            f"vocab_size must give at least motif_size={motif} key tokens; got vocab_size={vocab}"
        )
    key_sizes = list(range(1, motif + 1)) if train else [motif]

    def draw(pool: np.ndarray, size: int) -> tuple[int, ...]:
        return tuple(int(t) for t in rng.choice(pool, size=size, replace=False))

    def pair() -> tuple[tuple[int, ...], tuple[int, ...]]:
        return draw(keys, int(rng.choice(key_sizes))), draw(values, int(rng.integers(1, motif + 1)))

    k_probe, v_probe = pair()
    budget = seq_len - len(k_probe) - len(v_probe) - 2 * motif
    if budget < 1:
        raise ValueError(f"length must leave room for key-value pairs of up to {motif} tokens; got {seq_len}")
    probe_at = int(rng.integers(budget))
    binding: dict[tuple[int, ...], tuple[int, ...]] = {}
    seq: list[int] = []
    scored: list[bool] = []
    while len(seq) < budget:
        if k_probe not in binding and len(seq) >= probe_at:
            key, value = k_probe, v_probe
        else:
            key, value = pair()
            value = v_probe if key == k_probe else binding.get(key, value)
        seq += [*key, *value]
        scored += [False] * len(key) + [key in binding] * len(value)
        binding[key] = value
    seq += [*k_probe, *v_probe]
    scored += [False] * len(k_probe) + [True] * len(v_probe)
    pad_len = seq_len + 1 - len(seq)
    return _shifted([pad] * pad_len + seq, [False] * pad_len + scored, train)


def _shifted(seq: list[int], scored: list[bool], train: bool) -> tuple[list[int], list[int]]:
    """Next-token form: input drops the last token; target t is token t+1 if scored (or always, in training)."""
    targets = [tok if train or ok else IGNORE for tok, ok in zip(seq[1:], scored[1:])]
    return seq[:-1], targets


def _selective_copying(
    rng: np.random.Generator, vocab: int, seq_len: int, n_copy: int
) -> tuple[list[int], list[int]]:
    """Content tokens scattered among blanks, then a copy token; the trailing blanks must output them in order."""
    copy, blank = vocab - 1, vocab - 2
    if vocab < 3:
        raise ValueError(f"vocab_size must be at least 3 for selective-copying; got {vocab}")
    blanks = seq_len - 2 * n_copy - 1
    if blanks < 1:
        raise ValueError(f"length must exceed 2 * num_tokens_to_copy + 1 = {2 * n_copy + 1}; got {seq_len}")
    content = rng.integers(blank, size=n_copy).tolist()
    where = set(rng.choice(n_copy + blanks, size=n_copy, replace=False).tolist())
    stream = iter(content)
    body = [next(stream) if i in where else blank for i in range(n_copy + blanks)]
    prompt = body + [copy] + [blank] * n_copy
    targets = [IGNORE] * (len(body) + 1) + content
    return prompt, targets


def _compression(rng: np.random.Generator, vocab: int, seq_len: int) -> tuple[list[int], list[int]]:
    """Random tokens closed by a compression token; every position is reconstructed from the final state."""
    if seq_len < 2:
        raise ValueError(f"length must be at least 2 for compression; got {seq_len}")
    prompt = rng.integers(vocab - 1, size=seq_len - 1).tolist() + [vocab - 1]
    return prompt, list(prompt)


def memorization_map(vocab: int, map_seed: int = MEMORIZATION_MAP_SEED) -> dict[int, int]:
    """The fixed key->value facts: keys ``[0, (V-1)//2)`` paired one-to-one with random values from
    ``[(V-1)//2, V-1)``; token ``V-1`` is the insert token."""
    plain = vocab - 1
    keys = np.arange(plain // 2)
    values = np.random.default_rng(map_seed).permutation(np.arange(plain // 2, plain))
    return {int(k): int(v) for k, v in zip(keys, values)}


def _memorization(
    rng: np.random.Generator, vocab: int, seq_len: int, facts: dict[int, int]
) -> tuple[list[int], list[int]]:
    """Pairs (key, insert); at each insert token the model outputs the key's fixed value."""
    if seq_len % 2 or seq_len < 2:
        raise ValueError(f"length must be an even number >= 2 for memorization; got {seq_len}")
    keys = rng.choice(np.array(sorted(facts)), size=seq_len // 2).tolist()
    prompt = [tok for k in keys for tok in (k, vocab - 1)]
    targets = [tok for k in keys for tok in (IGNORE, facts[k])]
    return prompt, targets


def generate(
    task: str,
    n: int,
    length: int | None,
    seed: int,
    *,
    split: str = "test",
    vocab_size: int | None = None,
    frac_noise: float | None = None,
    num_tokens_to_copy: int | None = None,
    map_seed: int = MEMORIZATION_MAP_SEED,
) -> list[Example]:
    """``n`` sequences of ``task``; ``length`` (``seq_len``), ``vocab_size``, ``frac_noise`` and
    ``num_tokens_to_copy`` default to MAD's baseline (:data:`BASELINES`).

    Args:
        split: "test" scores only what the task probes; "train" differs for the recall tasks (every
            next token is a target, fuzzy keys take every size), as in MAD.
        map_seed: seed of the memorization facts; keep it equal between train and test.
    """
    check_choice("task", task, tasks)
    check_choice("split", split, splits)
    check_int("n", n)
    check_int("seed", seed, 0)
    base = BASELINES[task]
    seq_len = base["seq_len"] if length is None else length
    vocab = base["vocab_size"] if vocab_size is None else vocab_size
    check_int("length", seq_len)
    check_int("vocab_size", vocab)
    noise = base.get("frac_noise", 0.0) if frac_noise is None else frac_noise
    check_number("frac_noise", noise, 0, 1, hi_open=True)
    if noise and task != "noisy-in-context-recall":
        raise ValueError(f"frac_noise applies only to noisy-in-context-recall; got {noise} for {task}")
    n_copy = base.get("num_tokens_to_copy", 0) if num_tokens_to_copy is None else num_tokens_to_copy
    if task == "selective-copying":
        check_int("num_tokens_to_copy", n_copy)
    train = split == "train"
    facts = memorization_map(vocab, map_seed) if task == "memorization" else {}
    if task == "memorization" and len(facts) < 1:
        raise ValueError(f"vocab_size must be at least 3 for memorization; got {vocab}")

    examples = []
    for i in range(n):
        rng = np.random.default_rng([seed, i, tasks.index(task), splits.index(split)])
        if task in ("in-context-recall", "noisy-in-context-recall"):
            noise_vocab = base.get("noise_vocab_size", 0)
            prompt, targets = _recall(rng, vocab, seq_len, noise_vocab, noise, train)
        elif task == "fuzzy-in-context-recall":
            prompt, targets = _fuzzy(rng, vocab, seq_len, base["motif_size"], train)
        elif task == "selective-copying":
            prompt, targets = _selective_copying(rng, vocab, seq_len, n_copy)
        elif task == "compression":
            prompt, targets = _compression(rng, vocab, seq_len)
        else:
            prompt, targets = _memorization(rng, vocab, seq_len, facts)
        meta = {
            "task": task,
            "seed": seed,
            "index": i,
            "split": split,
            "seq_len": seq_len,
            "vocab_size": vocab,
            "frac_noise": noise,
            "num_tokens_to_copy": n_copy,
            "readout": "final-state" if task == "compression" else "per-position",
        }
        answers = tuple(t for t in targets if t != IGNORE)
        examples.append(Example(prompt=prompt, answers=answers, targets=targets, meta=meta))
    return examples


def score(examples: Sequence[Example], predictions: Sequence[Sequence[int]]) -> dict[str, float]:
    """Accuracy over all scored positions: ``accuracy`` (micro), ``macro_accuracy`` (mean over target
    classes, MAD's torchmetrics default) and ``n`` (scored positions)."""
    check_predictions(examples, predictions)
    per_class: dict[int, list[int]] = {}
    for ex, pred in zip(examples, predictions):
        if len(pred) != len(ex.answers):
            raise ValueError(
                f"each prediction must hold one token per scored position: got {len(pred)} for {len(ex.answers)}"
            )
        for want, got in zip(ex.answers, pred):
            per_class.setdefault(want, []).append(int(got) == want)
    hits = [h for class_hits in per_class.values() for h in class_hits]
    if not hits:
        raise ValueError("examples have no scored positions")
    return {
        "accuracy": sum(hits) / len(hits),
        "macro_accuracy": sum(sum(h) / len(h) for h in per_class.values()) / len(per_class),
        "n": float(len(hits)),
    }


def chance(examples: Sequence[Example]) -> float:
    """Expected ``accuracy`` of a uniform guess over the task vocabulary at every scored position."""
    if not examples:
        raise ValueError("examples must not be empty")
    weights = [len(ex.answers) for ex in examples]
    return sum(w / ex.meta["vocab_size"] for w, ex in zip(weights, examples)) / sum(weights)
