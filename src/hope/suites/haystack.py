"""Background text for long-context suites (``niah``, ``babi``, ``continual``): loading, normalising,
and laying out a haystack of any length with sentences inserted at chosen depths.

Real text comes from the caller, else from the package's built-in corpus
(``hope.data.corpus.builtin_text``), else from :data:`FALLBACK_TEXT`, a short public-domain passage
vendored here so the suites never depend on another module being present.
"""

from __future__ import annotations

import bisect
import functools
import random
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from hope.checks import check_number
from hope.suites.common import LazyText

FALLBACK_TEXT = (
    "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be "
    "in want of a wife. However little known the feelings or views of such a man may be on his first "
    "entering a neighbourhood, this truth is so well fixed in the minds of the surrounding families, that "
    "he is considered the rightful property of some one or other of their daughters. My dear Mr. Bennet, "
    "said his lady to him one day, have you heard that Netherfield Park is let at last? Mr. Bennet replied "
    "that he had not. But it is, returned she; for Mrs. Long has just been here, and she told me all about "
    "it. Mr. Bennet made no answer. Do you not want to know who has taken it? cried his wife impatiently. "
    "You want to tell me, and I have no objection to hearing it. This was invitation enough. Why, my dear, "
    "you must know, Mrs. Long says that Netherfield is taken by a young man of large fortune from the "
    "north of England; that he came down on Monday in a chaise and four to see the place, and was so much "
    "delighted with it, that he agreed with Mr. Morris immediately; that he is to take possession before "
    "Michaelmas, and some of his servants are to be in the house by the end of next week. "
)
"""The opening of *Pride and Prejudice* (Jane Austen, 1813; public domain), lightly re-punctuated."""

NOISE_TEXT = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
"""RULER's repeated-noise haystack (Hsieh et al., 2024, "RULER", S-NIAH-1)."""

_SENTENCE_END = re.compile(r"[.!?][\"')\]]* ")


@dataclass(frozen=True)
class Haystack:
    """Normalised background text that tiles seamlessly, with the offsets where a sentence may be inserted.

    ``unit`` is single-spaced ASCII ending in a space; ``boundaries`` are the sorted offsets in
    ``[0, len(unit))`` that start a sentence (0 is always one, because ``unit`` is cut after a
    sentence end so that repeating it stays well-formed).
    """

    unit: str
    boundaries: tuple[int, ...]


def normalise(text: str) -> str:
    """ASCII, single-spaced text (so one character is one byte is one byte-level token)."""
    if not text.isascii():  # decomposing first keeps accented letters as their base letter
        text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"\s+", " ", text).strip()


def make_haystack(text: str) -> Haystack:
    """Cut ``text`` after its last sentence end and index its sentence starts."""
    flat = normalise(text) + " "
    ends = [m.end() for m in _SENTENCE_END.finditer(flat)]
    if not ends:
        # Text without sentence punctuation (verse, lists) still tiles at word boundaries.
        ends = [m.end() for m in re.finditer(" ", flat)]
    if len(flat.strip()) < 20 or not ends:
        raise ValueError(f"haystack must contain at least 20 characters of text; got {len(flat.strip())}")
    unit = flat[: ends[-1]]
    return Haystack(unit=unit, boundaries=(0, *[e for e in ends[:-1]]))


@functools.lru_cache(maxsize=4)
def _cached_haystack(text: str) -> Haystack:
    return make_haystack(text)


def real_haystack(haystack: str | None) -> Haystack:
    """The caller's text, else the built-in corpus, else :data:`FALLBACK_TEXT`."""
    if haystack is None:
        try:
            from hope.data.corpus import builtin_text

            haystack = builtin_text()
        except Exception:
            # The corpus module belongs to the data package and may be absent or mid-edit; the
            # vendored passage keeps every suite usable without it.
            haystack = FALLBACK_TEXT
    if not isinstance(haystack, str):
        raise ValueError(f"haystack must be a str or None; got {type(haystack).__name__}")
    return _cached_haystack(haystack)


def noise_haystack() -> Haystack:
    """RULER's repeated-noise haystack."""
    return _cached_haystack(NOISE_TEXT)


def layout(
    hay: Haystack,
    rng: random.Random,
    prefix: str,
    suffix: str,
    inserts: Sequence[str],
    depths: Sequence[float],
    length: int,
) -> LazyText:
    """A :class:`LazyText` of exactly ``length`` characters: ``prefix``, then the haystack with each
    ``inserts[i]`` placed at the sentence boundary nearest ``depths[i]`` (a fraction of the haystack),
    then ``suffix``. The haystack starts at a random sentence of ``hay``. Inserts that land on the
    same boundary keep their given order, so sorted depths keep a story in order.
    """
    for depth in depths:
        check_number("depth", depth, 0, 1)
    fixed = len(prefix) + len(suffix) + sum(len(s) for s in inserts)
    if length < fixed + 1:
        raise ValueError(f"length must be at least {fixed + 1} characters for this example; got {length}")
    filler = length - fixed
    start = rng.choice(hay.boundaries)
    size = len(hay.unit)
    offsets = [_boundary_near(hay, start, filler, depth * filler) for depth in depths]
    placed = sorted(zip(offsets, inserts), key=lambda p: p[0])  # stable: ties keep the given order
    return LazyText(
        prefix=prefix,
        unit=hay.unit,
        start=start % size,
        filler_chars=filler,
        inserts=tuple(placed),
        suffix=suffix,
    )


def _boundary_near(hay: Haystack, start: int, filler: int, target: float) -> int:
    """Filler offset of the sentence start nearest ``target`` within ``[0, filler]``, for a haystack
    beginning at sentence ``start`` (so offset 0 is always a sentence start)."""
    size = len(hay.unit)
    bounds = (*hay.boundaries, size)
    cycle, within = divmod(start + target, size)
    i = bisect.bisect_right(bounds, within)  # bounds[i - 1] <= within < bounds[i]
    before = int(cycle * size + bounds[i - 1] - start)
    after = int(cycle * size + bounds[min(i, len(bounds) - 1)] - start)
    return min((o for o in (before, after) if o <= filler), key=lambda o: (abs(o - target), o))
