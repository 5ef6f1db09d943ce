#!/usr/bin/env bash
# Installs hope into the current Python environment: `bash scripts/install.sh` what `hope train` and
# `hope generate` need (the quick start: 40–67 s on a fresh 2-core machine); `--dev` adds the tests'
# dependencies, the hf extra (transformers, lm-eval) and Triton's CPU interpreter (~3 more minutes).
# An existing torch is respected; where none is importable we install the CPU build pinned below,
# so that a machine without a GPU never downloads a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
case "${1:-}" in
"") dev=0 ;;
--dev) dev=1 ;;
*) echo "usage: bash scripts/install.sh [--dev]; got '$1'" >&2; exit 2 ;;
esac
# Unpacking and byte-compiling torch and sympy takes one core ~45 s, so where torch is missing it
# installs in the background while the other dependencies install beside it; no package is in both
# halves, and the final `pip install -e .` resolves everything again, so this only changes the speed.
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
    torch_pin="torch==${HOPE_TORCH_VERSION:-2.13.0}"
    others=$("$PY" -c 'import tomllib; print(*(d for d in tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"] if not d.startswith("torch")))' 2>/dev/null || true)
    if [ -n "$others" ]; then
        "$PY" -m pip install -q --no-deps "$torch_pin" sympy &
        torch_job=$!
        # shellcheck disable=SC2086  # one word per requirement
        "$PY" -m pip install -q $others networkx
        wait "$torch_job"
    else  # Python 3.10 has no tomllib
        "$PY" -m pip install -q "$torch_pin"
    fi
fi
if [ "$dev" = 0 ]; then
    "$PY" -m pip install -q -e .
    exit 0
fi
# The hf extra is installed too, so the tests of hope.hf run everywhere.
"$PY" -m pip install -q -e ".[dev,hf]"
# CUDA builds of torch bring their own Triton. Without one, the tests run the Triton kernels in
# Triton's interpreter: 3.6 is the GPU machine's version, and its interpreter needs NumPy < 2.3.
if ! "$PY" -c "import triton" >/dev/null 2>&1; then
    "$PY" -m pip install -q "triton==3.6.0" "numpy<2.3"
fi
