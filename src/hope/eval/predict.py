"""The model-facing half of the benchmark suites: examples -> token ids -> model -> predictions -> score.

Every :class:`~hope.suites.common.Example` is answered the way its fields say (see ``hope.suites.common``):

* **generate** (``niah``, ``babi``, ``adapt``): the prompt is streamed through the model in pieces of
  ``piece`` tokens, passing the state, so activations stay O(piece) however long the context (a
  transformer's KV cache still grows; HOPE's and Titans' state does not); then greedy decoding.
* **choice** (``formal``, ``continual`` class-incremental): the argmax of the last prompt position's
  logits over the candidate tokens.
* **positions** (``mad``): the argmax at every scored position. MAD's compression reconstructs the
  input "from the final state": position ``len(prompt) - 1 + i`` of the pair (prompt, then the input
  again, teacher-forced) must output input token ``i``. ``bench-suite`` reads it as MAD does, through
  :class:`~hope.bench.readout.BottleneckReadout` (one hidden vector and an MLP decoder); ``hope eval``
  on a language-model checkpoint, which has no decoder, lets the model itself continue, so attention
  can copy there.
* **loss** (``continual`` domain-lm): the mean next-token loss over the prompt.

:func:`training_pair` turns an example into ``(inputs, targets)`` with ``IGNORE`` where no loss is
taken, and the last three modes read their predictions off exactly those targets, so training and
evaluation agree on what is asked. Text suites use byte tokens (a run's own tokeniser in ``hope eval``);
token suites (``formal``, ``mad``, class-incremental) feed the suite's ids as token ids.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from hope.checks import check_int
from hope.data.tokenizer import ByteTokenizer, Tokenizer
from hope.models.lm import LanguageModel
from hope.models.stream import Streamer, why_not_streamed
from hope.suites import get_suite
from hope.suites.common import IGNORE, Example

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


def pad(rows: Sequence[np.ndarray], value: int) -> torch.Tensor:
    out = np.full((len(rows), max(len(r) for r in rows)), value, dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return torch.from_numpy(out)


def _autocast(device: torch.device, precision: str):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def stream_pieces(
    model, ids: torch.Tensor, piece: int, device: torch.device, precision: str, on_logits=None, streamers=None
):
    """Feeds ``ids`` (B, T) through ``model`` ``piece`` tokens at a time, passing the state.
    Calls ``on_logits(start, logits)`` per piece; returns the last position's logits and the state.

    With ``streamers`` (a dict the caller keeps for one evaluation), a language model whose state has a
    fixed size streams its whole pieces through a `Streamer` per batch size and piece (static buffers, a CUDA
    graph a piece on CUDA), reset for each new stream; the rest of ``ids`` goes through
    ``model(ids, state)``. The numbers are the same either way; a Streamer's logits are a buffer its
    next piece overwrites, so ``on_logits`` reads them before it returns."""
    state = logits = None
    whole = 0
    if streamers is not None and isinstance(model, LanguageModel) and why_not_streamed(model, piece) is None:
        whole = ids.shape[1] - ids.shape[1] % piece
    if whole:
        key = (ids.shape[0], piece)
        if key in streamers:
            streamers[key].reset()
        else:
            with _autocast(device, precision):
                streamers[key] = Streamer(model, None, ids.shape[0], piece)
        for start in range(0, whole, piece):
            logits = streamers[key](ids[:, start : start + piece].to(device))
            if on_logits is not None:
                on_logits(start, logits.float())
        state = streamers[key].state()
    for start in range(whole, ids.shape[1], piece):
        with _autocast(device, precision):
            logits, state = model(ids[:, start : start + piece].to(device), state)
        if on_logits is not None:
            on_logits(start, logits.float())
    return logits[:, -1].float().clone(), state


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
    check_int("batch_size", batch_size)
    check_int("piece", piece)
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
        streamers: dict = {}  # stream_pieces' Streamers for this call's prompts
        if mode == "generate":
            return _decode_greedily(
                model, suite, examples, tokenizer, device, batch_size, piece, precision, streamers
            )
        return _read(model, suite, examples, tokenizer, mode, device, batch_size, piece, precision, streamers)
    finally:
        if hasattr(model, "train"):
            model.train(was_training)


def _check_vocab(model, ids: Sequence[np.ndarray]) -> None:
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    top = max(int(r.max()) for r in ids if len(r))
    if vocab is not None and top >= vocab:
        raise ValueError(f"the suite uses token id {top} but the model's vocabulary has {vocab} ids")


def _read(
    model, suite, examples, tokenizer, mode, device, batch_size, piece, precision, streamers
) -> list[Any]:
    """choice / positions / loss: one pass over the training pairs, read out where the targets are."""
    pairs = [training_pair(suite, ex, tokenizer) for ex in examples]
    _check_vocab(model, [p[0] for p in pairs] + [p[1][p[1] != IGNORE] for p in pairs])
    out: list[Any] = []
    for batch in _batches(len(examples), batch_size):
        inputs = pad([pairs[i][0] for i in batch], 0)  # causal: padding after a row's end changes nothing
        targets = pad([pairs[i][1] for i in batch], IGNORE)
        per_row: list[list[Any]] = [[] for _ in batch]
        choices = [examples[i].choices for i in batch]
        stream_pieces(
            model,
            inputs,
            piece,
            device,
            precision,
            functools.partial(_collect, mode, targets, choices, per_row),
            streamers,
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


def _decode_greedily(
    model, suite, examples, tokenizer, device, batch_size, piece, precision, streamers
) -> list[str]:
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
            prompts = torch.from_numpy(np.stack([ids[i] for i in index]))
            last, state = stream_pieces(model, prompts, piece, device, precision, streamers=streamers)
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
