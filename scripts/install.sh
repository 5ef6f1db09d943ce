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
"$PY" -m pip install -q -e ".[dev]"
