#!/usr/bin/env bash
# The Triton path on a GPU in one call (device time is scarce): the triton == chunked tests, one-layer
# timings at 125m shapes, then the whole-model table at T = 4096. Each stage has its own time limit
# and writes under $OUT (default runs/gpu_check), so what finished comes back even if a later stage
# runs out of time.
#
#   OUT=$OUT bash benchmarks/gpu_check.sh            # on the GPU machine
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-runs/gpu_check}
mkdir -p "$out"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
# Each kernel configuration compiles once (20-50 s), so the GPU runs a spread of the variants.
timeout "${TESTS_S:-240}" python3 -m pytest -q -p no:cacheprovider tests/core/test_titans_triton.py \
    -k "hope or titans-lmm or gated-deltanet or every or whole_model" 2>&1 | tail -15 >"$out/tests.txt"
cat "$out/tests.txt"
timeout "${LAYER_S:-240}" python3 benchmarks/titans_layer.py --presets hope,titans,gated-deltanet \
    --out "$out/layer" 2>&1 | grep -v -i warn | tail -12
timeout "${SPEED_S:-420}" python3 benchmarks/speed.py --presets transformer,hope,gated-deltanet,titans \
    --size 125m --seq-lens 4096 --steps 2 --warmup 1 --out "$out/speed" 2>&1 | grep -v -i warn | tail -12
