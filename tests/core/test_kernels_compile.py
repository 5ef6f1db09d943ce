"""The Titans kernels and the CMS read compile for a Hopper GPU (sm_90) on any machine: Triton's interpreter, which
runs them on the CPU in the other tests, accepts code its compiler refuses (a name rebound to another
shape in one branch, a pointer chosen by a runtime condition), so CI compiles them too, at tiny
shapes, in a process without TRITON_INTERPRET (`hope.ops.titans.compile_for`)."""

import json
import os
import subprocess
import sys

import pytest

triton = pytest.importorskip("triton")


def test_titans_kernels_compile_for_hopper_within_its_shared_memory():
    ptxas = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
    if not os.path.exists(ptxas):
        pytest.skip("this Triton has no CUDA backend")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    args = ["--head-dim", "16", "--hidden", "32", "--heads", "2", "--num-warps", "4", "--d-model", "64"]
    out = subprocess.run(
        [sys.executable, "-m", "hope.ops.titans.compile_for", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert len(rows) == 9, out.stderr[-2000:]  # 7 Titans kernels, the CMS read's 2
    for row in rows:
        assert "error" not in row, row
        assert row["fits"] and row["registers"] > 0, row
    assert out.returncode == 0
