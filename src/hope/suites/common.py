"""The shared shape of every benchmark suite: one example type, one lazy-text type, argument checks.

Every suite module (``niah``, ``babi``, ``formal``, ``mad``, ``continual``, ``adapt``) exposes

* ``name: str`` and ``tasks: tuple[str, ...]``;
* ``generate(task, n, length, seed, **options) -> list[Example]`` — deterministic for a seed, using
  only a local ``random.Random``/``numpy.random.Generator`` (never the global RNG);
* ``score(examples, predictions) -> dict[str, float]`` — metrics in ``[0, 1]`` unless named otherwise;
* ``chance(examples) -> float`` — the expected main metric of a uniform random guesser, so tables
  can print a chance line next to the models.

How a model answers an :class:`Example` depends on which fields are set:

* **Generation** (``niah``, ``babi``, ``adapt``): ``prompt`` is text (a ``str`` or a
  :class:`LazyText` for long contexts). The model reads it and generates a continuation; the
  prediction is that continuation as a ``str``. ``answers`` holds the strings it must contain
  (the exact rule is the suite's ``score``). Byte-level models read ``prompt.encode()``: all
  generated text is ASCII, so characters, bytes and byte tokens coincide.
* **Choice** (``formal``, ``continual`` classification, optionally ``babi``): ``choices`` lists the
  candidate answers; a model may generate one or rank the candidates. The prediction is one
  element of ``choices`` (a token id for token suites, a word for ``babi``).
* **Per-position targets** (``mad``): ``prompt`` is a list of token ids and ``targets`` a list of the
  same length with :data:`IGNORE` where nothing is scored. The model reads the sequence causally and
  at every position ``t`` outputs a token; the prediction is the list of tokens output at the
  positions where ``targets[t] != IGNORE`` (in order), i.e. ``answers``.
* **Loss** (``continual`` domain-lm): ``prompt`` is text, ``answers`` is empty; the prediction is the
  model's mean next-character loss on the prompt, in nats.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from hope.checks import check_int

IGNORE = -100
"""Target value for positions that are not scored (the PyTorch ``ignore_index`` convention, as in MAD)."""

PIECE_CHARS = 1 << 16
"""Default size of the pieces :meth:`LazyText.pieces` yields (64 Ki characters)."""


@dataclass(frozen=True)
class LazyText:
    """A long text described by a recipe and produced piece by piece, so 1M+ character prompts cost
    O(pieces) memory instead of being held whole.

    The text is ``prefix + filler-with-insertions + suffix``. The filler is ``unit`` repeated
    cyclically, starting at character ``start`` of ``unit``, for ``filler_chars`` characters; each
    ``(offset, text)`` in ``inserts`` (sorted by offset) is placed after ``offset`` filler characters.
    """

    prefix: str
    unit: str
    start: int
    filler_chars: int
    inserts: tuple[tuple[int, str], ...]
    suffix: str

    def __len__(self) -> int:
        return len(self.prefix) + self.filler_chars + sum(len(t) for _, t in self.inserts) + len(self.suffix)

    def _raw_pieces(self) -> Iterator[str]:
        yield self.prefix
        done = 0
        for offset, text in (*self.inserts, (self.filler_chars, "")):
            while done < offset:
                at = (self.start + done) % len(self.unit)
                take = min(offset - done, len(self.unit) - at)
                yield self.unit[at : at + take]
                done += take
            yield text
        yield self.suffix

    def pieces(self, size: int = PIECE_CHARS) -> Iterator[str]:
        """Yield the text in consecutive pieces of exactly ``size`` characters (the last may be shorter)."""
        check_int("size", size)
        buf: list[str] = []
        held = 0
        for raw in self._raw_pieces():
            while raw:
                take = raw[: size - held]
                buf.append(take)
                held += len(take)
                raw = raw[len(take) :]
                if held == size:
                    yield "".join(buf)
                    buf, held = [], 0
        if held:
            yield "".join(buf)

    def insert_positions(self) -> list[int]:
        """Character offset of each insertion in the full text (same order as ``inserts``)."""
        positions, inserted = [], 0
        for offset, text in self.inserts:
            positions.append(len(self.prefix) + offset + inserted)
            inserted += len(text)
        return positions

    def __str__(self) -> str:
        return "".join(self._raw_pieces())


@dataclass(frozen=True)
class Example:
    """One benchmark item; see the module docstring for how a model answers it.

    Attributes:
        prompt: what the model reads — text (``str``/:class:`LazyText`) or token ids (``list[int]``).
        answers: what a correct answer consists of: the strings to produce (generation), the one
            correct choice (choice), or the tokens at the scored positions (per-position targets).
        choices: candidate answers when the item can be answered by choosing; ``None`` otherwise.
        targets: per-position targets aligned with a token ``prompt`` (``IGNORE`` = unscored), or ``None``.
        meta: task, length, seed and suite-specific facts (needle depth, label, vocabulary size, …),
            JSON-serialisable.
    """

    prompt: str | list[int] | LazyText
    answers: tuple[Any, ...]
    choices: tuple[Any, ...] | None = None
    targets: list[int] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def text(self) -> str:
        """The whole prompt as one string (text suites only)."""
        if isinstance(self.prompt, list):
            raise ValueError("text() needs a text prompt; this example's prompt is a list of token ids")
        return str(self.prompt)

    def pieces(self, size: int = PIECE_CHARS) -> Iterator[str | list[int]]:
        """The prompt in consecutive chunks of ``size`` characters/tokens, for streaming it through a model."""
        if isinstance(self.prompt, LazyText):
            yield from self.prompt.pieces(size)
            return
        check_int("size", size)
        for i in range(0, len(self.prompt), size):
            yield self.prompt[i : i + size]


class Suite(Protocol):
    """What the registry maps a suite name to (each suite module satisfies it)."""

    name: str
    tasks: tuple[str, ...]

    def generate(self, task: str, n: int, length: int | None, seed: int, **options: Any) -> list[Example]: ...

    def score(self, examples: Sequence[Example], predictions: Sequence[Any]) -> dict[str, float]: ...

    def chance(self, examples: Sequence[Example]) -> float: ...


def check_predictions(examples: Sequence[Example], predictions: Sequence[Any]) -> None:
    """Raise ValueError unless there is exactly one prediction per example."""
    if len(examples) != len(predictions):
        raise ValueError(
            f"predictions must have one entry per example: got {len(predictions)} for {len(examples)} examples"
        )
    if not examples:
        raise ValueError("examples must not be empty")


def check_same_task(examples: Sequence[Example]) -> str:
    """Return the task shared by all examples, raising ValueError if they mix tasks."""
    tasks = sorted({ex.meta["task"] for ex in examples})
    if len(tasks) != 1:
        raise ValueError(f"examples must all come from one task; got tasks {tasks}")
    return tasks[0]
