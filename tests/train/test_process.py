"""Real processes: SIGKILL mid-run then resume, and 2-process torchrun (gloo, CPU) against one process."""

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file
from tiny_run import train_argv

from hope.train import load_for_inference, train
from hope.train.checkpoint import latest_checkpoint, list_checkpoints
from hope.train.metrics import read_metrics

TINY = train_argv(eval_every=0, log_every=1)


def _hope(*args, **kw):
    return subprocess.run(
        [sys.executable, "-m", "hope", *args], capture_output=True, text=True, timeout=240, check=False, **kw
    )


def test_sigkill_mid_run_then_resume(corpus, tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hope",
            "train",
            *TINY,
            "--data",
            str(corpus),
            "--steps",
            "100000",
            "--save-every",
            "2",
            "--keep-checkpoints",
            "3",
            "--out",
            str(run),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while (
            len(list_checkpoints(run)) < 3
        ):  # several saves happened: the kill lands amid save/prune traffic
            assert proc.poll() is None and time.monotonic() < deadline, "training did not get going"
            time.sleep(0.01)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    last = latest_checkpoint(run)
    step = int(last.name.removeprefix("step_"))
    model, _, _, loaded_step = load_for_inference(run)
    assert loaded_step == step and all(torch.isfinite(p).all() for p in model.parameters())

    result = _hope("train", "--resume", str(run), "--steps", str(step + 3))
    assert result.returncode == 0, result.stderr
    assert f"resuming at step {step}" in result.stderr
    steps = [r["step"] for r in read_metrics(run) if r["split"] == "train"]
    assert steps == list(range(1, step + 4))  # nothing lost, nothing logged twice
    assert latest_checkpoint(run).name == f"step_{step + 3:08d}"


@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun not on PATH")
@pytest.mark.parametrize(
    "preset,sharding",
    # HOPE at seq_len 32: the read-outs of its 64-token CMS level get no gradient, which DDP must expect.
    [("transformer", "ddp"), ("transformer", "fsdp"), ("hope", "ddp"), ("hope", "fsdp")],
)
def test_two_processes_match_one(preset, sharding, corpus, tmp_path, tiny_cfg):
    single = train(tiny_cfg("single", preset=preset, steps=4, save_every=0, eval_every=0, lr=1e-2))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        "torchrun",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "hope",
        "train",
        *train_argv(preset=preset, eval_every=0, log_every=1, steps=4, save_every=0, lr=1e-2),
        "--data",
        str(corpus),
        "--out",
        str(tmp_path / "double"),
    ]
    if sharding == "fsdp":
        cmd.append("--fsdp")
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, check=False)
    assert result.returncode == 0, "\n".join(l for l in result.stderr.splitlines() if "train:" not in l)[
        -4000:
    ]
    assert "2 process(es)" in result.stderr

    def curve(run):
        return [
            (r["step"], r["split"], r["loss"]) for r in read_metrics(run) if r["split"] in ("train", "val")
        ]

    one, two = curve(single.run_dir), curve(tmp_path / "double")
    assert [c[:2] for c in one] == [c[:2] for c in two]
    assert [c[2] for c in two] == pytest.approx([c[2] for c in one], rel=1e-5, abs=1e-6)
    a = load_file(latest_checkpoint(single.run_dir) / "model.safetensors")
    b = load_file(latest_checkpoint(tmp_path / "double") / "model.safetensors")
    assert a.keys() == b.keys()
    # Adam turns reduction-order noise in near-zero gradients into sign-like updates of size ~lr, so
    # weights agree to a small fraction of one step (lr = 1e-2), not to float precision.
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-4)
