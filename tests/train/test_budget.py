"""``--minutes``: the step count that a wall-clock budget allows, and a run sized by it."""

import json

import pytest

from hope.train import train
from hope.train.budget import CALIBRATION_STEPS, steps_for_budget
from hope.train.metrics import read_metrics


def test_steps_fill_the_budget_with_the_evaluations_counted():
    # 60 s, 4 steps done in 4 s, 1 s a step; every evaluation costs 8 / 3 s.
    n = steps_for_budget(
        1.0, elapsed=4.0, step_seconds=1.0, done=4, eval_every=0, eval_batches=8, grad_accum=1
    )
    assert n == 4 + int(56 - 8 / 3)  # the final evaluation only
    n = steps_for_budget(
        1.0, elapsed=4.0, step_seconds=1.0, done=4, eval_every=10, eval_batches=8, grad_accum=1
    )
    periodic = (n - 1) // 10
    assert (n - 4) + (periodic + 1) * 8 / 3 <= 56 < (n + 1 - 4) + ((n // 10) + 1) * 8 / 3


def test_a_spent_budget_stops_at_once():
    assert (
        steps_for_budget(
            0.1, elapsed=30.0, step_seconds=1.0, done=4, eval_every=0, eval_batches=8, grad_accum=1
        )
        == 4
    )


def test_a_minutes_run_fixes_and_records_its_step_count(tiny_cfg):
    result = train(tiny_cfg(steps=None, minutes=0.02, eval_every=0, save_every=0))
    config = json.loads((result.run_dir / "config.json").read_text())
    assert result.step >= CALIBRATION_STEPS
    assert config["budget"]["minutes"] == 0.02 and config["budget"]["steps"] == result.step
    # the saved run is an ordinary --steps run, so --resume continues it
    assert config["train"]["steps"] == result.step and config["train"]["minutes"] is None
    # the schedule ends on time: the last step runs at the cosine's floor
    last = [r for r in read_metrics(result.run_dir) if r["split"] == "train"][-1]
    assert last["step"] == result.step and last["lr"] < 0.15 * 3e-3


def test_a_warm_up_longer_than_the_budget_is_refused(tiny_cfg):
    with pytest.raises(ValueError, match=r"train\.warmup_steps .* train\.minutes"):
        train(tiny_cfg(steps=None, minutes=0.001, warmup_steps=1000, eval_every=0, save_every=0))
