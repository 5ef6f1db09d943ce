"""How each suite is trained and tested: default lengths, test points, and the seeded train and test examples."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hope.suites import get_suite
from hope.suites.common import Example


@dataclass(frozen=True)
class Protocol:
    """How a suite is trained and tested.

    Attributes:
        train_length: default training length (None: the suite's own setting).
        lengths: default test lengths. For ``bins`` suites they are the upper edges of string-length
            bins, the first bin starting at 1 (formal: 1-50 is the training range, the rest is longer).
        per_length: train a separate model per length, tested at that length (MAD's protocol).
        metric: the headline metric of the tables and plots.
        eval_only: ``hope eval`` only (no single training distribution for ``bench-suite``).
        context_factor: the test lengths are context lengths and an attention model (transformer,
            hope-attention) attends at most ``context_factor`` x its training length by default: RoPE
            extrapolation is trusted that far, longer lengths are reported as beyond its context
            (``--context`` sets the context instead). None: no limit unless ``--context`` is given.
    """

    train_length: int | None
    lengths: tuple[int | None, ...]
    bins: bool = False
    per_length: bool = False
    metric: str = "accuracy"
    eval_only: bool = False
    context_factor: int | None = None


PROTOCOLS: dict[str, Protocol] = {
    "formal": Protocol(50, (50, 60, 70, 80, 90, 100), bins=True),
    "niah": Protocol(1024, (1024, 2048, 4096, 8192)),
    "mad": Protocol(None, (None,), per_length=True),
    "babi": Protocol(1000, (1000, 2000, 4000), context_factor=4),
    "adapt": Protocol(5, (5, 8, 12)),
    # Continual learning trains tasks one after another; bench-suite's one-distribution loop does not fit it.
    "continual": Protocol(None, (64,), eval_only=True),
}
BENCH_SUITES = tuple(name for name, p in PROTOCOLS.items() if not p.eval_only)


BABILONG_LENGTHS = (4096, 16384, 65536, 262144, 1048576)
"""The paper's BABILong lengths (Fig. 9: 4K, 16K, 64K, 256K, 1M), in byte tokens = characters."""

ATTENTION_BLOCKS = ("transformer", "hope_attention")
"""Blocks whose state is a KV cache that grows with the context (the memory blocks' state is fixed)."""


def length_points(suite: str, lengths: Sequence[int | None]) -> list[tuple[int | None, int | None]]:
    """``(min_length, length)`` per test point: string-length bins for formal, else ``(None, length)``."""
    if not PROTOCOLS[suite].bins:
        return [(None, length) for length in lengths]
    edges = sorted(lengths)
    return [(lo + 1, hi) for lo, hi in zip([0, *edges[:-1]], edges)]


def label(min_length: int | None, length: int | None) -> str:
    if length is None:
        return "default"
    return f"{min_length}-{length}" if min_length is not None else str(length)


def eval_examples(suite: str, task: str, n: int, min_length: int | None, length: int | None, seed: int):
    """The test distribution of ``suite`` at one test point."""
    module = get_suite(suite)
    if suite == "formal":
        return module.generate(task, n, length, seed, min_length=min_length)
    if suite in ("mad", "continual"):
        return module.generate(task, n, length, seed, split="test")
    return module.generate(task, n, length, seed)


def train_examples(suite: str, task: str, n: int, length: int | None, seed: int) -> list[Example]:
    """A fresh batch of the training distribution (formal: strings of 1..length symbols)."""
    module = get_suite(suite)
    if suite == "mad":
        return module.generate(task, n, length, seed, split="train")
    return module.generate(task, n, length, seed)


TEST_SEED = 0
"""Every preset and seed is tested on the same examples, so the spread over seeds is training noise only."""
TRAIN_SEED_BASE = 1_000_003
"""Training batch seeds start here (step + this * (seed + 1)), far from the test seed."""
