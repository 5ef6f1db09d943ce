"""The model-facing half of the benchmark suites: examples -> token ids -> model -> predictions -> score.

Every :class:`~hope.eval.common.Example` is answered the way its fields say (see ``hope.eval.common``):

* **generate** (``niah``, ``babi``, ``adapt``): the prompt is streamed through the model in pieces of
  ``piece`` tokens, passing the state, so activations stay O(piece) however long the context (a
  transformer's KV cache still grows; HOPE's and Titans' state does not); then greedy decoding.
* **choice** (``formal``, ``continual`` class-incremental): the argmax of the last prompt position's
  logits over the candidate tokens.
* **positions** (``mad``): the argmax at every scored position. MAD's compression reconstructs the
  input "from the final state": position ``len(prompt) - 1 + i`` of the pair (prompt, then the input
  again, teacher-forced) must output input token ``i``. ``bench-suite`` reads it as MAD does, through
  :class:`BottleneckReadout` (one hidden vector and an MLP decoder); ``hope eval`` on a language-model
  checkpoint, which has no decoder, lets the model itself continue, so attention can copy there.
* **loss** (``continual`` domain-lm): the mean next-token loss over the prompt.

:func:`training_pair` turns an example into ``(inputs, targets)`` with ``IGNORE`` where no loss is
taken, and the last three modes read their predictions off exactly those targets, so training and
evaluation agree on what is asked. Text suites use byte tokens (a run's own tokeniser in ``hope eval``);
token suites (``formal``, ``mad``, class-incremental) feed the suite's ids as token ids.

On top of that, two commands (wired into ``hope.cli``):

* ``hope eval SUITE --run DIR``: zero-shot evaluation of a trained run's newest checkpoint.
* ``hope bench-suite SUITE --presets ...``: per preset and seed, train a parameter-matched model on
  the suite's training distribution (:data:`PROTOCOLS`), evaluate it on the test distribution, and
  write ``config.json``, ``results.json``, ``results.md`` and a PNG plot.

Everything is deterministic for a seed: data comes from the suites' seeded generators and the models
from ``torch.manual_seed``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import io
import json
import math
import multiprocessing
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

import hope
from hope.argtypes import positive_int
from hope.config import PRESETS, SIZES, ModelConfig
from hope.data.atomic import write_bytes_atomic, write_text_atomic
from hope.data.tokenizer import ByteTokenizer, Tokenizer
from hope.eval import SUITES, get_suite
from hope.eval.common import IGNORE, Example
from hope.optim import build_optimizer

MODES = ("generate", "choice", "positions", "loss")
GEN_MARGIN = 4
"""Greedy tokens generated beyond the reference answer's length, so a slightly verbose answer still counts."""

# What a model is trained to generate after a text prompt; also sizes the generation budget.
ANSWER_TEXT: dict[str, Callable[[Example], str]] = {
    "niah": lambda ex: " " + ", ".join(ex.answers) + ".",
    "babi": lambda ex: f" {ex.answers[0]}.",
    "adapt": lambda ex: f"{ex.answers[0]}\n",
}


def answer_mode(example: Example) -> str:
    """How ``example`` is answered (one of :data:`MODES`), read off which fields it sets."""
    if example.targets is not None:
        return "positions"
    if example.choices is not None and all(isinstance(c, int) for c in example.choices):
        return "choice"
    return "generate" if example.answers else "loss"


def prompt_ids(example: Example, tokenizer: Tokenizer) -> np.ndarray:
    """The prompt as token ids (int64). Long lazy prompts are encoded piece by piece: 8 bytes a token
    is cheap next to the model's activations, which only ever see one piece."""
    if isinstance(example.prompt, list):
        return np.asarray(example.prompt, dtype=np.int64)
    pieces = [tokenizer.encode(p).astype(np.int64) for p in example.pieces()]
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)


def training_pair(suite: str, example: Example, tokenizer: Tokenizer) -> tuple[np.ndarray, np.ndarray]:
    """``(inputs, targets)`` of equal length for teacher-forced training; ``targets`` is ``IGNORE`` where
    nothing is asked. The choice, positions and loss modes are evaluated at exactly these targets."""
    ids = prompt_ids(example, tokenizer)
    mode = answer_mode(example)
    if mode == "positions":
        targets = np.asarray(example.targets, dtype=np.int64)
        if example.meta.get("readout") == "final-state":
            # Read the prompt, then reconstruct it token by token from what the state kept.
            answers = np.asarray(example.answers, dtype=np.int64)
            return np.concatenate([ids, answers[:-1]]), np.concatenate(
                [np.full(len(ids) - 1, IGNORE), answers]
            )
        return ids, targets
    if mode == "choice":
        targets = np.full(len(ids), IGNORE, dtype=np.int64)
        targets[-1] = example.answers[0]
        return ids, targets
    if mode == "generate":
        answer = tokenizer.encode(ANSWER_TEXT[suite](example)).astype(np.int64)
        full = np.concatenate([ids, answer])
        targets = np.concatenate([np.full(len(ids) - 1, IGNORE), answer])
        return full[:-1], targets
    return ids[:-1], ids[1:]


def _pad(rows: Sequence[np.ndarray], value: int) -> torch.Tensor:
    out = np.full((len(rows), max(len(r) for r in rows)), value, dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return torch.from_numpy(out)


def _autocast(device: torch.device, precision: str):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def _stream(model, ids: torch.Tensor, piece: int, device: torch.device, precision: str, on_logits=None):
    """Feeds ``ids`` (B, T, on the CPU) through ``model`` ``piece`` tokens at a time, passing the state.
    Calls ``on_logits(start, logits)`` per piece; returns the last position's logits and the state."""
    state = logits = None
    for start in range(0, ids.shape[1], piece):
        with _autocast(device, precision):
            logits, state = model(ids[:, start : start + piece].to(device), state)
        if on_logits is not None:
            on_logits(start, logits.float())
    return logits[:, -1].float(), state


def _batches(n: int, size: int) -> list[range]:
    return [range(i, min(i + size, n)) for i in range(0, n, size)]


@torch.no_grad()
def predict(
    model,
    suite: str,
    examples: Sequence[Example],
    tokenizer: Tokenizer | None = None,
    device: torch.device | str = "cpu",
    batch_size: int = 16,
    piece: int = 2048,
    precision: str = "fp32",
) -> list[Any]:
    """One prediction per example, in the form the suite's ``score`` takes (see the module docstring).

    ``model`` is anything called as ``logits, state = model(ids, state)``. ``tokenizer`` (default: bytes)
    is used by the text suites only.
    """
    if not examples:
        raise ValueError("examples must not be empty")
    for name, value in (("batch_size", batch_size), ("piece", piece)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer; got {value!r}")
    modes = {answer_mode(ex) for ex in examples}
    if len(modes) != 1:
        raise ValueError(f"examples must share one answer mode; got {sorted(modes)}")
    mode = modes.pop()
    tokenizer = tokenizer or ByteTokenizer()
    device = torch.device(device)
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    try:
        if mode == "generate":
            return _generate(model, suite, examples, tokenizer, device, batch_size, piece, precision)
        return _read(model, suite, examples, tokenizer, mode, device, batch_size, piece, precision)
    finally:
        if hasattr(model, "train"):
            model.train(was_training)


def _check_vocab(model, ids: Sequence[np.ndarray]) -> None:
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    top = max(int(r.max()) for r in ids if len(r))
    if vocab is not None and top >= vocab:
        raise ValueError(f"the suite uses token id {top} but the model's vocabulary has {vocab} ids")


def _read(model, suite, examples, tokenizer, mode, device, batch_size, piece, precision) -> list[Any]:
    """choice / positions / loss: one pass over the training pairs, read out where the targets are."""
    pairs = [training_pair(suite, ex, tokenizer) for ex in examples]
    _check_vocab(model, [p[0] for p in pairs] + [p[1][p[1] != IGNORE] for p in pairs])
    out: list[Any] = []
    for batch in _batches(len(examples), batch_size):
        inputs = _pad([pairs[i][0] for i in batch], 0)  # causal: padding after a row's end changes nothing
        targets = _pad([pairs[i][1] for i in batch], IGNORE)
        per_row: list[list[Any]] = [[] for _ in batch]
        choices = [examples[i].choices for i in batch]
        _stream(
            model,
            inputs,
            piece,
            device,
            precision,
            functools.partial(_collect, mode, targets, choices, per_row),
        )
        for values in per_row:
            if mode == "loss":
                out.append(sum(values) / len(values))
            elif mode == "choice":
                out.append(values[-1])
            else:
                out.append(values)
    return out


def _collect(mode, targets, choices, per_row, start: int, logits: torch.Tensor) -> None:
    """Appends to ``per_row[r]`` the readout of every target of row ``r`` inside this piece, in order."""
    t = targets[:, start : start + logits.shape[1]]
    rows, cols = (t != IGNORE).nonzero(as_tuple=True)
    if not len(rows):
        return
    picked = logits[rows.to(logits.device), cols.to(logits.device)].cpu()
    if mode == "loss":
        values = F.cross_entropy(picked, t[rows, cols], reduction="none").tolist()
    elif mode == "choice":
        allowed = torch.zeros_like(picked, dtype=torch.bool)
        for j, r in enumerate(rows.tolist()):
            allowed[j, list(choices[r])] = True
        values = picked.masked_fill(~allowed, -math.inf).argmax(-1).tolist()
    else:
        values = picked.argmax(-1).tolist()
    for r, v in zip(rows.tolist(), values):
        per_row[r].append(v)


def suite_vocab(examples: Sequence[Example]) -> int:
    """Vocabulary a token suite needs: the examples' ``meta["vocab_size"]`` (256 bytes for text suites)."""
    sizes = [ex.meta["vocab_size"] for ex in examples if "vocab_size" in ex.meta]
    return max(sizes) if sizes else ByteTokenizer.vocab_size


def _generate(model, suite, examples, tokenizer, device, batch_size, piece, precision) -> list[str]:
    """Greedy continuation of each prompt; rows of equal token length go through the model together."""
    ids = [prompt_ids(ex, tokenizer) for ex in examples]
    _check_vocab(model, ids)
    budgets = [len(tokenizer.encode(ANSWER_TEXT[suite](ex))) + GEN_MARGIN for ex in examples]
    by_length: dict[int, list[int]] = {}
    for i, row in enumerate(ids):
        by_length.setdefault(len(row), []).append(i)
    out: list[str] = [""] * len(examples)
    for group in by_length.values():
        for batch in _batches(len(group), batch_size):
            index = [group[j] for j in batch]
            last, state = _stream(
                model, torch.from_numpy(np.stack([ids[i] for i in index])), piece, device, precision
            )
            budget = max(budgets[i] for i in index)
            tokens = []
            for step in range(budget):
                next_id = last.argmax(-1)
                tokens.append(next_id.cpu())
                if step + 1 < budget:
                    with _autocast(device, precision):
                        logits, state = model(next_id[:, None], state)
                    last = logits[:, -1].float()
            generated = torch.stack(tokens, dim=1).tolist()
            for i, row in zip(index, generated):
                text = b"".join(tokenizer.token_bytes(t) for t in row[: budgets[i]])
                out[i] = text.decode("utf-8", errors="replace")
    return out


def evaluate(model, suite: str, examples: Sequence[Example], **kwargs: Any) -> dict[str, float]:
    """The suite's metrics for ``model``'s predictions (keyword arguments go to :func:`predict`), plus
    ``chance``: the suite's expected main metric for a uniform guesser."""
    module = get_suite(suite)
    metrics = module.score(examples, predict(model, suite, examples, **kwargs))
    return {**metrics, "chance": module.chance(examples)}


class BottleneckReadout(torch.nn.Module):
    """MAD's compression read-out (its auto-encoder backbone): ``model`` reads the P prompt tokens and
    only its final hidden state h, at the compression token, reaches a non-expanding MLP decoder; token i
    of the reconstruction is ``decoder(h + sincos(i))``. Every architecture goes through the same
    one-vector bottleneck, so attention cannot copy the input from its cache.

    Called like ``model`` on :func:`training_pair`'s layout for compression (the prompt, then P - 1
    teacher-forced tokens, which it ignores); the P reconstruction logits sit at the target positions
    P - 1 ... 2P - 2 and the others are zero."""

    def __init__(self, model: torch.nn.Module, prompt_length: int):
        super().__init__()
        d, vocab = model.config.d_model, model.config.vocab_size
        self.model, self.config, self.prompt_length = model, model.config, prompt_length
        self.decoder = torch.nn.Sequential(
            torch.nn.RMSNorm(d),
            torch.nn.Linear(d, d),
            torch.nn.GELU(),
            torch.nn.RMSNorm(d),
            torch.nn.Linear(d, d),
            torch.nn.GELU(),
            torch.nn.RMSNorm(d),
            torch.nn.Linear(d, vocab),
        )
        i = torch.arange(prompt_length, dtype=torch.float32)[:, None]
        freq = 10000.0 ** (-torch.arange(0, d, 2, dtype=torch.float32) / d)
        angle = i * freq
        self.register_buffer(
            "positions", torch.cat([angle.sin(), angle.cos()], dim=-1)[:, :d], persistent=False
        )

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def encode(self, prompt: torch.Tensor) -> torch.Tensor:
        """h: the model's final (normalised) hidden state after the whole prompt, (B, d)."""
        seen = []
        hook = self.model.norm.register_forward_hook(lambda module, args, out: seen.append(out))
        try:
            self.model(prompt)
        finally:
            hook.remove()
        return seen[-1][:, -1]

    def forward(self, ids: torch.Tensor, state: dict | None = None) -> tuple[torch.Tensor, None]:
        p = self.prompt_length
        if state is not None or ids.shape[1] != 2 * p - 1:
            raise ValueError(
                f"BottleneckReadout takes one whole compression pair of {2 * p - 1} tokens (prompt of {p}); "
                f"got {ids.shape[1]} tokens{' and a state' if state is not None else ''}"
            )
        h = self.encode(ids[:, :p])
        reconstruction = self.decoder(h[:, None, :] + self.positions.to(h.dtype))
        return torch.cat(
            [reconstruction.new_zeros(ids.shape[0], p - 1, reconstruction.shape[-1]), reconstruction], 1
        ), None


# ---- train and test distributions ----------------------------------------------------------------------


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
    """

    train_length: int | None
    lengths: tuple[int | None, ...]
    bins: bool = False
    per_length: bool = False
    metric: str = "accuracy"
    eval_only: bool = False


PROTOCOLS: dict[str, Protocol] = {
    "formal": Protocol(50, (50, 60, 70, 80, 90, 100), bins=True),
    "niah": Protocol(1024, (1024, 2048, 4096, 8192)),
    "mad": Protocol(None, (None,), per_length=True),
    "babi": Protocol(1000, (1000, 2000, 4000)),
    "adapt": Protocol(5, (5, 8, 12)),
    # Continual learning trains tasks one after another; bench-suite's one-distribution loop does not fit it.
    "continual": Protocol(None, (64,), eval_only=True),
}
BENCH_SUITES = tuple(name for name, p in PROTOCOLS.items() if not p.eval_only)


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


# ---- bench-suite ---------------------------------------------------------------------------------------

TEST_SEED = 0
"""Every preset and seed is tested on the same examples, so the spread over seeds is training noise only."""
_TRAIN_SEED_BASE = 1_000_003
"""Training batch seeds start here (step + this * (seed + 1)), far from the test seed."""


@dataclass
class BenchConfig:
    """One ``hope bench-suite`` run; validated on creation (ValueError naming the field)."""

    suite: str
    presets: tuple[str, ...] = ("hope", "transformer", "titans")
    tasks: tuple[str, ...] | None = None  # None: every task of the suite
    steps: int = 200
    seeds: int = 3
    size: str = "tiny"
    lengths: tuple[int, ...] | None = None  # None: the protocol's test lengths
    train_length: int | None = None  # None: the protocol's
    batch_size: int = 32
    n_test: int = 100
    lr: float = 1e-3
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    precision: str = "fp32"
    device: str = "auto"
    piece: int = 2048
    match: str = "hope"
    out: str | None = None
    max_minutes: float | None = None  # start no model past this wall time; None: run everything
    jobs: int = 1  # models trained at once, each in its own process
    overrides: dict[str, Any] = field(default_factory=dict)  # model fields for every preset

    def __post_init__(self) -> None:
        self.presets, self.tasks = tuple(self.presets), None if self.tasks is None else tuple(self.tasks)
        self.lengths = None if self.lengths is None else tuple(self.lengths)
        self.validate()

    def validate(self) -> None:
        _check_in("suite", self.suite, BENCH_SUITES)
        if not self.presets or len(set(self.presets)) != len(self.presets):
            raise ValueError(
                f"bench.presets must be distinct names from {sorted(PRESETS)}; got {self.presets}"
            )
        for preset in self.presets:
            _check_in("presets", preset, sorted(PRESETS))
        for task in self.tasks or ():
            _check_in("tasks", task, get_suite(self.suite).tasks)
        if self.tasks is not None and not self.tasks:
            raise ValueError("bench.tasks must not be empty")
        _check_in("size", self.size, list(SIZES))
        _check_in("precision", self.precision, ["fp32", "bf16"])
        _check_in("device", self.device, ["auto", "cpu", "cuda"])
        _check_in("match", self.match, ["hope", "none"])
        for name in ("steps", "seeds", "batch_size", "n_test", "piece", "jobs"):
            _check_positive(name, getattr(self, name))
        if self.train_length is not None:
            _check_positive("train_length", self.train_length)
        if self.lengths is not None:
            if not self.lengths:
                raise ValueError("bench.lengths must not be empty")
            for length in self.lengths:
                _check_positive("lengths", length)
        for name in ("lr", "weight_decay", "grad_clip"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 <= value < math.inf):
                raise ValueError(f"bench.{name} must be a finite number >= 0; got {value!r}")
        if self.lr == 0:
            raise ValueError("bench.lr must be > 0")
        if self.max_minutes is not None and not (
            isinstance(self.max_minutes, (int, float)) and self.max_minutes > 0
        ):
            raise ValueError(f"bench.max_minutes must be a number > 0; got {self.max_minutes!r}")
        ModelConfig.preset("hope", self.size, **self.overrides)  # a bad override fails here, named
        protocol = PROTOCOLS[self.suite]
        if self.train_length is not None and protocol.train_length is None:
            raise ValueError(
                f"bench.train_length does not apply to {self.suite} (it trains at each of --lengths)"
            )

    @property
    def resolved_tasks(self) -> tuple[str, ...]:
        return self.tasks or get_suite(self.suite).tasks

    @property
    def resolved_lengths(self) -> tuple[int | None, ...]:
        return self.lengths or PROTOCOLS[self.suite].lengths

    @property
    def resolved_train_length(self) -> int | None:
        return self.train_length or PROTOCOLS[self.suite].train_length


def _check_in(name: str, value: Any, accepted: Sequence[Any]) -> None:
    if value not in accepted:
        raise ValueError(f"bench.{name} must be one of {', '.join(map(str, accepted))}; got {value!r}")


def _check_positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"bench.{name} must be a positive integer; got {value!r}")


def _match_width(cfg: ModelConfig, goal: int, tolerance: float = 0.05) -> ModelConfig:
    """``cfg`` at the width (a multiple of 2 * n_heads) whose parameter count is closest to ``goal``;
    unchanged when already within ``tolerance``. Counts grow with the width, so a bisection suffices."""
    if abs(hope.count_parameters(cfg) - goal) <= tolerance * goal:
        return cfg
    step = 2 * cfg.n_heads
    lo, hi = 1, 8 * cfg.d_model // step
    while lo < hi:
        mid = (lo + hi) // 2
        if hope.count_parameters(dataclasses.replace(cfg, d_model=mid * step)) < goal:
            lo = mid + 1
        else:
            hi = mid
    candidates = [dataclasses.replace(cfg, d_model=k * step) for k in {max(1, lo - 1), lo}]
    return min(candidates, key=lambda c: abs(hope.count_parameters(c) - goal))


def model_configs(cfg: BenchConfig, vocab: int) -> dict[str, ModelConfig]:
    """Each preset at ``cfg.size``; with ``match="hope"`` resized to the ``hope`` preset's parameter count
    (the transformer by ``hope.matched_transformer``, the others by width)."""
    reference = ModelConfig.preset("hope", cfg.size, vocab_size=vocab, **cfg.overrides)
    goal = hope.count_parameters(reference)
    out = {}
    for preset in cfg.presets:
        base = ModelConfig.preset(preset, cfg.size, vocab_size=vocab, **cfg.overrides)
        if cfg.match == "none" or preset == "hope":
            out[preset] = base
        elif preset == "transformer":
            out[preset] = hope.matched_transformer(reference, **cfg.overrides)
        else:
            out[preset] = _match_width(base, goal)
    return out


def _lr_factor(step: int, steps: int) -> float:
    """Linear warm-up over the first 5% of the steps, then cosine decay to 10% (as ``hope train``)."""
    warmup = max(1, steps // 20)
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


def train_model(
    model, cfg: BenchConfig, task: str, length: int | None, seed: int, device: torch.device
) -> dict:
    """Trains ``model`` for ``cfg.steps`` AdamW steps on fresh batches of the suite's training distribution
    (loss only where :func:`training_pair` asks something). Returns the final loss and skipped steps."""
    optimizer = build_optimizer("adamw", model, cfg.lr, cfg.weight_decay)
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    tokenizer = ByteTokenizer()
    losses, skipped = [], 0
    model.train()
    for step in range(cfg.steps):
        for group, base in zip(optimizer.param_groups, base_lrs):
            group["lr"] = base * _lr_factor(step, cfg.steps)
        examples = train_examples(
            cfg.suite, task, cfg.batch_size, length, _TRAIN_SEED_BASE * (seed + 1) + step
        )
        pairs = [training_pair(cfg.suite, ex, tokenizer) for ex in examples]
        inputs = _pad([p[0] for p in pairs], 0).to(device)
        targets = _pad([p[1] for p in pairs], IGNORE).to(device)
        with _autocast(device, cfg.precision):
            logits, _ = model(inputs)
        loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip or math.inf)
        # A non-finite step is skipped, not applied: the run goes on and the count is reported.
        if math.isfinite(loss.item()) and math.isfinite(float(norm)):
            optimizer.step()
        else:
            skipped += 1
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    tail = [x for x in losses[-10:] if math.isfinite(x)]
    return {"train_loss": sum(tail) / len(tail) if tail else math.nan, "skipped_steps": skipped}


@dataclass
class _Setting:
    """One training distribution (a task, and for MAD a length) with its test sets."""

    task: str
    train_length: int | None
    tests: list[tuple[int | None, int | None, list[Example]]]
    vocab: int

    @property
    def bottleneck(self) -> bool:
        """MAD compression: read out through :class:`BottleneckReadout`."""
        return self.tests[0][2][0].meta.get("readout") == "final-state"


def _settings(cfg: BenchConfig) -> list[_Setting]:
    """Every setting's test sets and vocabulary, built (and so validated) before any model trains."""
    protocol = PROTOCOLS[cfg.suite]
    out = []
    for task in cfg.resolved_tasks:
        if protocol.per_length:
            plan = [(length, [(None, length)]) for length in cfg.resolved_lengths]
        else:
            plan = [(cfg.resolved_train_length, length_points(cfg.suite, cfg.resolved_lengths))]
        for train_length, points in plan:
            probe = train_examples(cfg.suite, task, 1, train_length, _TRAIN_SEED_BASE)
            if protocol.per_length and train_length is None:  # name MAD's default length in the results
                train_length = probe[0].meta["seq_len"]
                points = [(None, train_length)]
            tests = [
                (lo, hi, eval_examples(cfg.suite, task, cfg.n_test, lo, hi, TEST_SEED)) for lo, hi in points
            ]
            vocab = suite_vocab(probe + [ex for *_, examples in tests for ex in examples])
            out.append(_Setting(task, train_length, tests, vocab))
    return out


def run_bench(cfg: BenchConfig, log: Callable[[str], None] = lambda s: print(s, file=sys.stderr)) -> dict:
    """Trains and tests every preset x seed x setting; writes ``config.json``, then ``results.json`` after
    every model (a run cut short keeps what it finished), and finally ``results.md`` and the plot."""
    from hope.train.distributed import pick_device

    device = pick_device(cfg.device)
    out = Path(cfg.out or f"bench/{cfg.suite}-{datetime.now():%Y%m%d-%H%M%S}")
    if (out / "results.json").exists():
        raise FileExistsError(f"{out} already holds results; pick another --out")
    settings = _settings(cfg)
    out.mkdir(parents=True, exist_ok=True)
    configs = {s.vocab: model_configs(cfg, s.vocab) for s in settings}
    resolved = {
        **dataclasses.asdict(cfg),
        "out": str(out),
        "tasks": list(cfg.resolved_tasks),
        "lengths": list(cfg.resolved_lengths),
        "train_length": cfg.resolved_train_length,
        "test_seed": TEST_SEED,
        "models": {
            str(v): {p: c.to_dict() for p, c in by_preset.items()} for v, by_preset in configs.items()
        },
    }
    write_text_atomic(out / "config.json", json.dumps(resolved, indent=2) + "\n")
    header = {
        "suite": cfg.suite,
        "metric": PROTOCOLS[cfg.suite].metric,
        "date": datetime.now().isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "hope": hope.__version__,
        "config": resolved,
    }
    # Seed-major order: a run stopped by --max-minutes still holds every preset on the seeds it finished.
    plan = [
        (seed, setting, preset) for seed in range(cfg.seeds) for setting in settings for preset in cfg.presets
    ]
    finished: dict[int, dict] = {}
    start = time.perf_counter()

    def may_start(preset: str) -> bool:
        # A model may start if one like it (same preset, else any) would end before --max-minutes.
        if cfg.max_minutes is None or not finished:
            return True
        same = [r["seconds"] for r in finished.values() if r["preset"] == preset] or [
            r["seconds"] for r in finished.values()
        ]
        return time.perf_counter() - start + sum(same) / len(same) <= 60 * cfg.max_minutes

    def record(index: int, run: dict) -> None:
        finished[index] = run
        runs = [finished[i] for i in sorted(finished)]
        write_text_atomic(out / "results.json", _json({**header, "complete": False, "runs": runs}))
        done, elapsed = len(finished), time.perf_counter() - start
        log(
            f"[{done}/{len(plan)}] {run['preset']} seed {run['seed']} {run['task']}: "
            + ", ".join(f"{r['label']} {r[header['metric']]:.3f}" for r in run["results"])
            + f" ({run['seconds']:.1f}s; ~{elapsed / done * (len(plan) - done) / 60:.1f} min left)"
        )

    failed: list[dict] = []

    def fail(index: int, error: BaseException) -> None:
        # One model running out of memory should not cost the others' results.
        seed, setting, preset = plan[index]
        failed.append({"preset": preset, "seed": seed, "task": setting.task, "error": repr(error)[:500]})
        log(f"FAILED {preset} seed {seed} {setting.task}: {error!r}"[:500])

    jobs = [
        (i, (cfg, setting, preset, configs[setting.vocab][preset], seed, device))
        for i, (seed, setting, preset) in enumerate(plan)
    ]
    if cfg.jobs == 1:
        for index, args in jobs:
            if not may_start(args[2]):
                break
            try:
                run = _one_run(*args)
            except RuntimeError as error:  # e.g. CUDA out of memory
                fail(index, error)
            else:
                record(index, run)
    else:
        _run_parallel(jobs, cfg.jobs, may_start, record, fail)
    if len(finished) + len(failed) < len(plan):
        log(
            f"stopped after {len(finished) + len(failed)}/{len(plan)} models: the next would pass --max-minutes"
        )
    runs = [finished[i] for i in sorted(finished)]
    summary = summarise(runs, header["metric"])
    results = {
        **header,
        "complete": len(runs) == len(plan),
        "runs": runs,
        "failed": failed,
        "summary": summary,
    }
    write_text_atomic(out / "results.json", _json(results))
    write_text_atomic(out / "results.md", results_markdown(results))
    plot = plot_results(results, out)
    log(f"wrote {out / 'results.json'}, {out / 'results.md'}, {plot}")
    return results


def _run_parallel(
    jobs: list, workers: int, may_start: Callable[[str], bool], record: Callable, fail: Callable
) -> None:
    """Runs ``_one_run(*args)`` for each ``(index, args)`` in ``workers`` spawned processes, in order,
    starting none that ``may_start`` refuses; ``record`` gets each result, ``fail`` each RuntimeError.
    Small models leave a GPU idle between kernel launches, so processes sharing it train several models
    in little more than the time of one."""
    threads = max(1, (os.cpu_count() or 1) // workers)
    queue, running = list(jobs), {}
    with futures.ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=torch.set_num_threads,
        initargs=(threads,),
    ) as pool:
        while queue or running:
            while queue and len(running) < workers:
                index, args = queue.pop(0)
                if not may_start(args[2]):
                    queue.clear()
                    break
                running[pool.submit(_one_run, *args)] = index
            if not running:
                break
            done, _ = futures.wait(running, return_when=futures.FIRST_COMPLETED)
            for future in done:
                index, error = running.pop(future), future.exception()
                if error is None:
                    record(index, future.result())
                elif isinstance(error, RuntimeError):
                    fail(index, error)
                else:
                    raise error


def _one_run(
    cfg: BenchConfig, setting: _Setting, preset: str, model_cfg: ModelConfig, seed: int, device
) -> dict:
    torch.manual_seed(seed)
    model = hope.build_model(model_cfg)
    if setting.bottleneck:
        model = BottleneckReadout(model, setting.train_length)
    model = model.to(device)
    began = time.perf_counter()
    trained = train_model(model, cfg, setting.task, setting.train_length, seed, device)
    results = []
    for lo, hi, examples in setting.tests:
        metrics = evaluate(
            model,
            cfg.suite,
            examples,
            device=device,
            batch_size=cfg.batch_size,
            piece=cfg.piece,
            precision=cfg.precision,
        )
        results.append({"min_length": lo, "length": hi, "label": label(lo, hi), **metrics})
    return {
        "preset": preset,
        "seed": seed,
        "task": setting.task,
        "train_length": setting.train_length,
        "params": model.num_parameters(),
        "d_model": model_cfg.d_model,
        "n_layers": model_cfg.n_layers,
        "seconds": time.perf_counter() - began,
        **trained,
        "results": results,
    }


def _json(data: dict) -> str:
    # NaN (e.g. accuracy on an empty class) is not JSON; null is.
    def clean(x):
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, list):
            return [clean(v) for v in x]
        return x

    return json.dumps(clean(data), indent=2) + "\n"


def _ood(run: dict, metric: str) -> float | None:
    """Mean metric over the test points strictly beyond the training length (None if there are none)."""
    if run["train_length"] is None:
        return None
    beyond = [r[metric] for r in run["results"] if (r["min_length"] or r["length"]) > run["train_length"]]
    return sum(beyond) / len(beyond) if beyond else None


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarise(runs: Sequence[dict], metric: str) -> list[dict]:
    """Mean and standard deviation over seeds per preset x task x test point (plus ``label="beyond
    training"`` where some test points are longer than the training data)."""
    groups: dict[tuple, list[dict]] = {}
    for run in runs:
        groups.setdefault((run["task"], run["train_length"], run["preset"]), []).append(run)
    out = []
    for (task, train_length, preset), members in groups.items():
        common = {
            "task": task,
            "train_length": train_length,
            "preset": preset,
            "n_seeds": len(members),
            "params": members[0]["params"],
        }
        for k, point in enumerate(members[0]["results"]):
            mean, std = _mean_std([m["results"][k][metric] for m in members])
            out.append(
                {
                    **common,
                    "label": point["label"],
                    "min_length": point["min_length"],
                    "length": point["length"],
                    "mean": mean,
                    "std": std,
                    "chance": point["chance"],
                }
            )
        beyond = [v for v in (_ood(m, metric) for m in members) if v is not None]
        if beyond:
            mean, std = _mean_std(beyond)
            out.append(
                {
                    **common,
                    "label": "beyond training",
                    "min_length": None,
                    "length": None,
                    "mean": mean,
                    "std": std,
                    "chance": None,
                }
            )
    return out


def results_markdown(results: dict) -> str:
    """One table per task (and MAD length): presets x test points, ``mean ± std`` over seeds."""
    cfg = results["config"]
    lines = [
        f"# bench-suite {results['suite']}: {results['metric']} (mean ± std over {cfg['seeds']} seeds)",
        "",
        (
            f"{results['date']}, {results['device']}, torch {results['torch']}, size `{cfg['size']}` "
            f"(parameters matched to `hope`: {cfg['match'] == 'hope'}), {cfg['steps']} steps of batch "
            f"{cfg['batch_size']}, lr {cfg['lr']}, {cfg['n_test']} test examples per point "
            f"(seed {cfg['test_seed']})."
        ),
    ]
    tables: dict[tuple, list[dict]] = {}
    for row in results["summary"]:
        tables.setdefault((row["task"], row["train_length"]), []).append(row)
    for (task, train_length), rows in tables.items():
        labels = list(dict.fromkeys(r["label"] for r in rows))
        trained = f"trained at length {train_length}" if train_length is not None else "default length"
        lines += [
            "",
            f"## {task} ({trained})",
            "",
            "| preset | params | " + " | ".join(labels) + " |",
            "|---|---:|" + "---:|" * len(labels),
        ]
        cells: dict[str, dict[str, str]] = {}
        for r in rows:
            # A cell from one seed (a run cut by --max-minutes) has no spread to show.
            spread = f" ± {r['std']:.3f}" if r["n_seeds"] > 1 else " (1 seed)"
            cells.setdefault(r["preset"], {"params": f"{r['params']:,}"})[r["label"]] = (
                f"{r['mean']:.3f}{spread}"
            )

        for preset, by_label in cells.items():
            lines.append(
                f"| {preset} | {by_label['params']} | "
                + " | ".join(by_label.get(x, "") for x in labels)
                + " |"
            )
        chance = {r["label"]: r["chance"] for r in rows if r["chance"] is not None}
        lines.append(
            "| chance | | " + " | ".join(f"{chance[x]:.3g}" if x in chance else "" for x in labels) + " |"
        )
    if results.get("failed"):
        lines += ["", "Failed (not in the tables):", ""]
        lines += [f"- {f['preset']} seed {f['seed']} {f['task']}: `{f['error']}`" for f in results["failed"]]
    return "\n".join(lines) + "\n"


def plot_results(results: dict, out: Path) -> Path:
    """``accuracy_vs_length.png`` (a panel per task, a line per preset, ± std bars) or, when every task
    was tested at a single length (MAD's defaults), ``accuracy_by_task.png`` (grouped bars)."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    metric = results["metric"]
    rows = [r for r in results["summary"] if r["label"] != "beyond training"]
    presets = list(dict.fromkeys(r["preset"] for r in rows))
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    single = all(len({r["label"] for r in rows if r["task"] == t}) == 1 for t in tasks)
    if single:
        path = out / "accuracy_by_task.png"
        fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(tasks)), 4.2), dpi=120)
        width = 0.8 / len(presets)
        for k, preset in enumerate(presets):
            mine = {r["task"]: r for r in rows if r["preset"] == preset}
            xs = [i + k * width for i, t in enumerate(tasks) if t in mine]
            ax.bar(
                xs,
                [mine[t]["mean"] for t in tasks if t in mine],
                width,
                yerr=[mine[t]["std"] for t in tasks if t in mine],
                label=preset,
                capsize=2,
            )
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(tasks))], tasks, rotation=20, ha="right")
        ax.set_ylabel(metric)
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=8)
    else:
        path = out / "accuracy_vs_length.png"
        cols = min(3, len(tasks))
        nrows = -(-len(tasks) // cols)
        fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.4 * nrows), dpi=120, squeeze=False)
        for ax, task in zip(axes.flat, tasks):
            mine = [r for r in rows if r["task"] == task]
            for preset in presets:
                pts = [r for r in mine if r["preset"] == preset]
                ax.errorbar(
                    [r["length"] for r in pts],
                    [r["mean"] for r in pts],
                    yerr=[r["std"] for r in pts],
                    marker="o",
                    markersize=3,
                    capsize=2,
                    label=preset,
                )
            by_length = {r["length"]: r["chance"] for r in mine}
            ax.plot(list(by_length), list(by_length.values()), "k:", linewidth=1, label="chance")
            if mine[0]["train_length"] is not None:
                ax.axvline(mine[0]["train_length"], color="grey", linestyle="--", linewidth=0.8)
            if results["suite"] != "formal":
                ax.set_xscale("log", base=2)
                ax.set_xticks(list(by_length), [str(x) for x in by_length])
            ax.set_title(task, fontsize=9)
            ax.set_ylim(-0.02, 1.02)
            ax.set_xlabel(
                "string length (bin upper edge)" if results["suite"] == "formal" else "context length"
            )
            ax.set_ylabel(metric)
            ax.grid(alpha=0.3)
        for ax in list(axes.flat)[len(tasks) :]:
            ax.axis("off")
        axes.flat[0].legend(fontsize=7)
    note = "" if single else " (dashed: training length)"
    fig.suptitle(f"{results['suite']}: {metric}{note}", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    write_bytes_atomic(path, buf.getvalue())
    return path


# ---- command line: `hope eval SUITE` and `hope bench-suite` --------------------------------------------


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(positive_int(part) for part in text.split(",") if part.strip()) or _empty(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"must be a comma-separated list of positive integers, got {text!r}"
        ) from None


def _override(text: str) -> tuple[str, Any]:
    """``FIELD=VALUE``: JSON where it parses (32, 0.5, true, [16, 64]), a comma list (16,64), else a string."""
    key, eq, value = text.partition("=")
    if not eq or not key:
        raise argparse.ArgumentTypeError(f"must be FIELD=VALUE (e.g. titans.chunk_size=32), got {text!r}")

    def parse(part: str) -> Any:
        try:
            return json.loads(part)
        except json.JSONDecodeError:
            return part

    parsed = parse(value)
    if isinstance(parsed, str) and "," in parsed:
        parsed = [parse(part) for part in parsed.split(",")]
    return key.removeprefix("model."), parsed


def _name_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip()) or _empty(text)


def _empty(text: str):
    raise argparse.ArgumentTypeError(f"must name at least one item, got {text!r}")


def _common_options(p: argparse.ArgumentParser, suites: Sequence[str]) -> None:
    tasks = "; ".join(f"{s}: {', '.join(get_suite(s).tasks)}" for s in suites)
    p.add_argument(
        "--tasks", type=_name_list, default=None, help=f"comma-separated tasks (default: all; {tasks})"
    )
    p.add_argument(
        "--lengths",
        type=_int_list,
        default=None,
        help="comma-separated test lengths: characters for niah/babi, letters per word for adapt, "
        "upper edges of string-length bins for formal, seq_len for mad (default: "
        + "; ".join(f"{s}: {_show(PROTOCOLS[s].lengths)}" for s in suites)
        + ")",
    )
    p.add_argument(
        "--batch-size", type=positive_int, default=32, help="examples per forward pass (default: 32)"
    )
    p.add_argument(
        "--piece",
        type=positive_int,
        default=2048,
        help="tokens per streamed piece of a long prompt (default: 2048)",
    )
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="(default: fp32)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="(default: auto)")


def _show(lengths: Sequence[int | None]) -> str:
    return ",".join("MAD baseline" if x is None else str(x) for x in lengths)


def add_parsers(sub, eval_sub) -> dict[str, argparse.ArgumentParser]:
    """Adds ``eval SUITE`` (for every suite) under ``eval_sub`` and ``bench-suite`` under ``sub``."""
    parsers = {}
    for name in SUITES:
        p = eval_sub.add_parser(
            name,
            help=f"zero-shot {name} benchmark of a trained run",
            description=f"Zero-shot {name} evaluation of a run's newest checkpoint: prompts are streamed "
            "through the model state in pieces; answers are generated greedily, chosen among candidates or "
            "read per position, as the suite defines. Prints JSON (stdout) and a table (stderr).",
        )
        p.add_argument("--run", required=True, help="run directory (e.g. runs/latest)")
        _common_options(p, [name])
        p.add_argument(
            "--n", type=positive_int, default=50, help="examples per task and length (default: 50)"
        )
        p.add_argument("--seed", type=int, default=TEST_SEED, help=f"example seed (default: {TEST_SEED})")
        parsers[f"eval {name}"] = p

    b = sub.add_parser(
        "bench-suite",
        help="train and compare presets on a benchmark suite",
        description="Per preset and seed: train a parameter-matched model on the suite's training "
        "distribution, test it on the test distribution (longer strings for formal, longer contexts for "
        "niah/babi, longer words for adapt), and write results.json, results.md (mean ± std over seeds), "
        "a plot and config.json into --out.",
    )
    b.add_argument("suite", choices=BENCH_SUITES, metavar="SUITE", help=f"one of {', '.join(BENCH_SUITES)}")
    b.add_argument(
        "--presets",
        type=_name_list,
        default=("hope", "transformer", "titans"),
        help=f"comma-separated presets (default: hope,transformer,titans; any of {', '.join(PRESETS)})",
    )
    b.add_argument("--steps", type=positive_int, default=200, help="training steps per model (default: 200)")
    b.add_argument("--seeds", type=positive_int, default=3, help="seeds per preset (default: 3)")
    b.add_argument("--size", choices=tuple(SIZES), default="tiny", help="model size preset (default: tiny)")
    b.add_argument(
        "--train-length",
        type=positive_int,
        default=None,
        help="training length (default: "
        + "; ".join(f"{s}: {PROTOCOLS[s].train_length}" for s in BENCH_SUITES if PROTOCOLS[s].train_length)
        + "; mad trains at each --lengths)",
    )
    b.add_argument(
        "--n-test", type=positive_int, default=100, help="test examples per task and length (default: 100)"
    )
    b.add_argument("--lr", type=float, default=1e-3, help="peak AdamW learning rate (default: 0.001)")
    b.add_argument(
        "--match",
        choices=("hope", "none"),
        default="hope",
        help="resize every preset to the hope preset's parameter count, or not (default: hope)",
    )
    b.add_argument("--out", default=None, help="output directory (default: bench/<suite>-<date>-<time>)")
    b.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        help="start no model that would end past this wall time; the tables cover what finished",
    )
    b.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        type=_override,
        help="model field for every preset, e.g. --override titans.chunk_size=32 (repeatable)",
    )
    b.add_argument(
        "--jobs",
        type=positive_int,
        default=1,
        help="models trained at once, one process each; small models share a GPU well (default: 1)",
    )
    _common_options(b, BENCH_SUITES)
    parsers["bench-suite"] = b
    return parsers


def main(parsers: dict[str, argparse.ArgumentParser], args: argparse.Namespace) -> int:
    """Runs ``hope eval SUITE`` or ``hope bench-suite`` from parsed arguments."""
    if args.command == "bench-suite":
        return _bench_command(parsers["bench-suite"], args)
    return _eval_command(parsers[f"eval {args.suite}"], args)


def _bench_command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    try:
        cfg = BenchConfig(
            suite=args.suite,
            presets=args.presets,
            tasks=args.tasks,
            steps=args.steps,
            seeds=args.seeds,
            size=args.size,
            lengths=args.lengths,
            train_length=args.train_length,
            batch_size=args.batch_size,
            n_test=args.n_test,
            lr=args.lr,
            precision=args.precision,
            device=args.device,
            piece=args.piece,
            match=args.match,
            out=args.out,
            max_minutes=args.max_minutes,
            jobs=args.jobs,
            overrides=dict(args.override),
        )
    except ValueError as e:
        parser.error(str(e))
    try:
        results = run_bench(cfg)
    except (ValueError, FileExistsError) as e:
        print(f"hope bench-suite: error: {e}", file=sys.stderr)
        return 1
    return 1 if results["failed"] else 0


def _eval_command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from hope.train import load_for_inference
    from hope.train.distributed import pick_device

    suite = get_suite(args.suite)
    tasks = args.tasks or suite.tasks
    try:
        for task in tasks:
            if task not in suite.tasks:
                raise ValueError(f"--tasks must be from {', '.join(suite.tasks)}; got {task!r}")
        device = pick_device(args.device)
        model, tokenizer, _, step = load_for_inference(args.run, device)
    except (ValueError, FileNotFoundError) as e:
        parser.error(str(e))
    results = []
    for task in tasks:
        for lo, hi in length_points(args.suite, args.lengths or PROTOCOLS[args.suite].lengths):
            try:
                examples = eval_examples(args.suite, task, args.n, lo, hi, args.seed)
                metrics = evaluate(
                    model,
                    args.suite,
                    examples,
                    tokenizer=tokenizer,
                    device=device,
                    batch_size=args.batch_size,
                    piece=args.piece,
                    precision=args.precision,
                )
            except ValueError as e:
                parser.error(f"{task} at length {label(lo, hi)}: {e}")
            hi = hi or examples[0].meta.get("seq_len")  # MAD's default length, named
            results.append({"task": task, "label": label(lo, hi), "min_length": lo, "length": hi, **metrics})
            shown = {k: v for k, v in metrics.items() if k != "n"}
            print(
                f"{task:>24} {label(lo, hi):>8}  " + "  ".join(f"{k} {v:.4g}" for k, v in shown.items()),
                file=sys.stderr,
            )
    print(
        _json(
            {"run": str(args.run), "step": step, "suite": args.suite, "seed": args.seed, "results": results}
        ),
        end="",
    )
    return 0
