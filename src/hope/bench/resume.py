"""Continuing a `bench-suite` run (`--resume`): which settings may change (`RESUMABLE`), the finished
models kept (`resumable_runs`), those of other slices carried over (`unplanned_runs`), and the models
in training.

A model in training keeps a checkpoint of its last save (weights, optimizer, what its run recorded,
the run's settings), so a run cut off, or paused at a deadline, continues where it was. `Partial` is
one model's; the drivers refuse to overwrite one without `--resume` (`refuse_unresumed`) and continue
one only under the settings it was trained with (`check_partial`). Writes go through
`hope.train.checkpoint`: a kill mid-save leaves the last complete save.
"""

from __future__ import annotations

import json
import shutil
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from hope.bench.report import to_json
from hope.train.checkpoint import latest_checkpoint, load_checkpoint, read_record, save_checkpoint


RESUMABLE = (
    "resume", "jobs", "out", "presets", "seeds", "models", "max_minutes", "cuda_graphs", "partial_dir"
)  # fmt: skip
"""Settings a resumed run may change: which models it adds, and how it runs them."""


def check_same_settings(before: dict, resolved: dict, where: Path) -> None:
    """ValueError naming the first setting (`RESUMABLE` aside) in which the run recorded at `where`
    (its resolved config `before`, JSON form) differs from `resolved`."""
    new = json.loads(to_json(resolved))  # the JSON forms compare: tuples are lists there
    for name in sorted(set(before) | set(new)):
        if name not in RESUMABLE and before.get(name) != new.get(name):
            raise ValueError(
                f"--resume: {where} was run with {name}={before.get(name)!r}, this run has {new.get(name)!r};"
                " resume with the same settings or pick another --out"
            )


def resumable_runs(path: Path, resolved: dict, key: Callable, model: Callable) -> dict[tuple, dict]:
    """The finished runs of the results at `path` by `key(run)`, if they were trained with the settings
    `resolved` names (ValueError naming the first that differs, `RESUMABLE` aside); a run whose model
    configuration, ``resolved["models"]`` at the path `model(run)`, changed is not kept."""
    old = json.loads(path.read_text())
    new = json.loads(to_json(resolved))
    before = old.get("config", {})
    check_same_settings(before, resolved, path)

    def config(models: dict, run: dict):
        for part in model(run):
            models = models.get(part) if isinstance(models, dict) else None
        return models

    return {
        key(run): run
        for run in old.get("runs", [])
        if config(before.get("models", {}), run) is not None
        and config(before.get("models", {}), run) == config(new["models"], run)
    }


def unplanned_runs(
    path: Path, resolved: dict, planned: set, key: Callable, model: Callable
) -> tuple[list, dict]:
    """The finished runs at `path` that this call does not plan (another slice's presets or seeds), as
    they are, and their models' configurations (nested in ``config["models"]`` as `model(run)` says):
    a slice adds to the results and never drops what an earlier one finished. A run whose model is
    also in `resolved` with another configuration is not carried. Call after `resumable_runs`, which
    checks the settings the runs share."""
    old = json.loads(path.read_text())
    before, new = old.get("config", {}).get("models", {}), json.loads(to_json(resolved)).get("models", {})
    runs, models = [], {}
    for run in old.get("runs", []):
        if key(run) in planned:
            continue
        *outer, last = model(run)
        src, now, dst = before, new, models
        for part in outer:
            src, now, dst = src.get(part, {}), now.get(part, {}), dst.setdefault(part, {})
        if last not in src or (last in now and now[last] != src[last]):
            continue
        runs.append(run)
        dst[last] = src[last]
    return runs, models


class Partial:
    """One model's saves in `path`, with the run's resolved `settings` (JSON form); `deadline`
    (`time.monotonic()`, None: none) is when a save says to pause."""

    def __init__(self, path: Path, settings: dict, deadline: float | None = None):
        self.path, self.settings, self.deadline = Path(path), settings, deadline
        self._since = time.monotonic()

    def resume(self, model, optimizer) -> dict | None:
        """Loads the last save into `model` and `optimizer` and returns its record (`step` included),
        or None when there is none."""
        saved = latest_checkpoint(self.path)
        self._since = time.monotonic()
        return None if saved is None else load_checkpoint(saved, model, optimizer)

    def save(self, step: int, model, optimizer, record: dict) -> bool:
        """Saves the model at `step` with `record`; True when a segment as long as the one since the
        last save would end past the deadline (the caller then pauses)."""
        save_checkpoint(self.path, step, model, optimizer, {"config": self.settings, **record}, keep=1)
        now = time.monotonic()
        segment, self._since = now - self._since, now
        return self.deadline is not None and now + segment > self.deadline


def refuse_unresumed(paths: Sequence[Path]) -> None:
    """FileExistsError naming the first of `paths` that holds a model in training."""
    for path in paths:
        if latest_checkpoint(path) is not None:
            raise FileExistsError(f"{path} holds a model in training; --resume to continue it, or remove it")


def check_partial(path: Path, settings: dict, model: Sequence[str], log: Callable[[str], None]) -> None:
    """A save may be continued only under the settings it was made with (ValueError naming the first
    that differs); if its model's configuration (``settings["models"]`` at the keys `model`) changed,
    it is dropped and the model trains again from the start."""
    saved = latest_checkpoint(path)
    if saved is None:
        return
    before = read_record(saved)["config"]
    check_same_settings(before, settings, path)
    old, new = before["models"], settings["models"]
    for key in model:
        old, new = (old or {}).get(key), new[key]
    if old != new:
        log(f"{path}: its model configuration changed since; it trains again from the start")
        shutil.rmtree(path)


def fits(deadline: float | None, partial: Partial, took: Sequence[float]) -> bool:
    """Whether a model whose earlier runs (of its preset) took `took` seconds ends before `deadline`
    if it starts now, by their median. One with a save to continue, or with no earlier run, always
    starts (its saves pause it): a fresh start that cannot finish would only leave a save that a
    device's lost /tmp takes with it."""
    if deadline is None or not took or latest_checkpoint(partial.path) is not None:
        return True
    return time.monotonic() + statistics.median(took) <= deadline


def may_start(deadline: float | None, paused: Sequence) -> bool:
    """Whether a driver starts another model: none after one paused, none past the deadline (one that
    starts late pauses at its first save)."""
    return not paused and (deadline is None or time.monotonic() < deadline)
