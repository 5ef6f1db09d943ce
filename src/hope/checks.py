"""The value checks every config and generator uses: each raises a ValueError that names the field
(``train.seq_len``, ``titans.chunk_size``, ``seed``), what it accepts, and what it got."""

import math
from collections.abc import Iterable
from typing import Any


def check_choice(name: str, value: Any, accepted: Iterable[Any]) -> None:
    accepted = list(accepted)
    if value not in accepted:
        raise ValueError(f"{name} must be one of {accepted}, got {value!r}")


def check_int(name: str, value: Any, minimum: int = 1) -> None:
    """An int (not a bool) >= ``minimum``."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def check_number(
    name: str, value: Any, lo: float = 0.0, hi: float = math.inf, lo_open: bool = False, hi_open: bool = False
) -> None:
    """A finite int or float (not a bool) in the interval from ``lo`` to ``hi`` (each end open or closed)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
    if not ok:
        bound = f"{'>' if lo_open else '>='} {lo:g}"
        if hi != math.inf:
            bound += f" and {'<' if hi_open else '<='} {hi:g}"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")


def check_shape(name: str, value: Any, shape: Iterable[int]) -> None:
    """A tensor of exactly ``shape`` (a state handed to a model it was not made by fails here)."""
    shape = tuple(shape)
    got = tuple(getattr(value, "shape", ()))
    if got != shape:
        raise ValueError(f"{name} must have shape {shape} for this model and batch, got {got}")
