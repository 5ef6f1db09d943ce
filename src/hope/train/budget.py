"""``hope train --minutes M``: the step count that fits a wall-clock budget.

The run starts on DEFAULT_STEPS' schedule and times its first CALIBRATION_STEPS steps (the first one
is not counted: it pays one-time costs such as the allocator's warm-up). Then `steps_for_budget`
fixes the step count so that the remaining steps, the periodic evaluations and the final one end
within M minutes of the first step's start, and from there on it is an ordinary ``--steps N`` run
whose warm-up and cosine decay end on time (``config.json`` records N; ``--resume`` continues it).
"""

import math

CALIBRATION_STEPS = 4


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
