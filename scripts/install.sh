#!/usr/bin/env bash
# Installs hope and its test dependencies into the current Python environment.
# An existing torch is respected; where none is importable we install the CPU build pinned below,
# so that a machine without a GPU never downloads a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
    "$PY" -m pip install -q "torch==${HOPE_TORCH_VERSION:-2.13.0}"
fi
# The hf extra (transformers, lm-eval) is installed too, so the tests of hope.hf run everywhere.
"$PY" -m pip install -q -e ".[dev,hf]"
# CUDA builds of torch bring their own Triton. Without one, the tests run the Triton kernels in
# Triton's interpreter: 3.6 is the GPU machine's version, and its interpreter needs NumPy < 2.3.
if ! "$PY" -c "import triton" >/dev/null 2>&1; then
    "$PY" -m pip install -q "triton==3.6.0" "numpy<2.3"
fi
