"""Offline benchmark suites: seeded generators and scorers that need no model.

``SUITES`` maps a suite name to its module; every module follows the :class:`~hope.suites.common.Suite`
protocol (``tasks``, ``generate``, ``score``, ``chance``) and every example is an
:class:`~hope.suites.common.Example` (see ``hope.suites.common`` for how a model answers one)::

    from hope.suites import get_suite
    suite = get_suite("formal")
    examples = suite.generate("dyck-2", n=100, length=100, seed=0, min_length=51)
    metrics = suite.score(examples, predictions)  # {"accuracy": ..., ...}

This package imports no model code, so it can be used (and tested) on its own.
"""

from __future__ import annotations

from hope.suites import adapt, babi, continual, formal, mad, niah
from hope.suites.common import IGNORE, Example, LazyText, Suite

SUITES: dict[str, Suite] = {module.name: module for module in (niah, babi, formal, mad, continual, adapt)}  # type: ignore[misc]
"""Suite name -> suite module."""


def get_suite(name: str) -> Suite:
    """The suite called ``name``; ValueError naming the accepted names otherwise."""
    if name not in SUITES:
        raise ValueError(f"suite must be one of {', '.join(sorted(SUITES))}; got {name!r}")
    return SUITES[name]


__all__ = ["IGNORE", "SUITES", "Example", "LazyText", "Suite", "get_suite"]
