"""``hope train --minutes M``: the step count that fits a wall-clock budget.

A --minutes run times its first steps. After each of them the step count is re-estimated (the first
step is not counted once others are: it pays one-time costs such as the allocator's warm-up) and
the learning rate follows the schedule of the current estimate, so the warm-up is already the one of
the run's final length. Once at least CALIBRATION_STEPS steps covering CALIBRATION_SECONDS (at most
5% of the budget) are timed, the count is fixed so that the remaining steps, the periodic
evaluations and the final one end within M minutes of the first step's start; from there on it is
an ordinary ``--steps N`` run (``config.json`` records N under ``budget``; ``--resume`` continues it).
A machine that slows down after the timing overruns the budget by as much.
"""

import math
import time

from hope import distributed as dist
from hope.train.step import lr_factor

CALIBRATION_STEPS = 4
CALIBRATION_SECONDS = 2.0


def steps_for_budget(
    minutes: float,
    elapsed: float,
    step_seconds: float,
    done: int,
    eval_every: int,
    eval_batches: int,
    grad_accum: int,
) -> int:
    """The largest step count N >= ``done`` whose remaining steps and evaluations fit in ``minutes``.

    ``elapsed`` seconds have gone on the first ``done`` steps, each further step takes ``step_seconds``.
    An evaluation reads ``eval_batches`` micro-batches forward only, priced at a third of a training
    micro-batch (a backward pass costs about two forwards); checkpoints of CPU-sized models are ignored.
    """
    eval_seconds = step_seconds * eval_batches / (3 * grad_accum)

    def cost(n: int) -> float:
        periodic = (n - 1) // eval_every - done // eval_every if eval_every else 0
        return (n - done) * step_seconds + (periodic + 1) * eval_seconds

    left = 60 * minutes - elapsed
    per_step = step_seconds + (eval_seconds / eval_every if eval_every else 0.0)
    n = done + max(0, math.floor((left - eval_seconds) / per_step))
    while n > done and cost(n) > left:
        n -= 1
    return n


class Budget:
    """The step count of a --minutes run (``cfg.minutes``) while its first steps are timed."""

    def __init__(self, cfg):
        self.cfg, self.start, self.times = cfg, time.perf_counter(), []
        self.steps = cfg.total_steps  # DEFAULT_STEPS until the first step is timed
        self.seconds_per_step = math.nan

    def lr_factor(self, step: int) -> float:
        """The multiplier of ``cfg.lr`` at ``step`` on the schedule of the current estimate."""
        cfg = self.cfg
        warmup = cfg.warmup_steps if cfg.warmup_steps is not None else self.steps // 20
        return lr_factor(step, self.steps, warmup, cfg.min_lr_ratio)

    def record(self, seconds: float, done: int) -> bool:
        """Adds a step's time (``done`` steps are done); True once the step count is fixed. Rank 0's
        timing decides, so that every process follows the same schedule."""
        cfg = self.cfg
        self.times.append(seconds)
        timed = self.times[1:] or self.times
        self.seconds_per_step = sum(timed) / len(timed)
        elapsed = time.perf_counter() - self.start
        steps = steps_for_budget(
            cfg.minutes,
            elapsed,
            self.seconds_per_step,
            done,
            cfg.eval_every,
            cfg.eval_batches,
            cfg.grad_accum,
        )
        enough = min(CALIBRATION_SECONDS, 0.05 * 60 * cfg.minutes)
        fixed = steps <= done or (len(self.times) >= CALIBRATION_STEPS and sum(timed) >= enough)
        self.steps, fixed = dist.broadcast_object((steps, fixed) if dist.rank() == 0 else None)
        return fixed

    def fix(self) -> dict:
        """Makes ``cfg`` the ``--steps`` run the budget allows; returns the budget's record for config.json."""
        cfg = self.cfg
        if cfg.warmup_steps is not None and cfg.warmup_steps >= self.steps:
            raise ValueError(
                f"train.warmup_steps ({cfg.warmup_steps}) must be below the {self.steps} steps that "
                f"train.minutes={cfg.minutes:g} allows at {self.seconds_per_step:.3f} s a step"
            )
        record = {
            "minutes": cfg.minutes,
            "seconds_per_step": round(self.seconds_per_step, 4),
            "steps": self.steps,
        }
        cfg.steps, cfg.minutes = self.steps, None
        return record
