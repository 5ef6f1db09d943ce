#!/usr/bin/env bash
# Retention probe of issue 10: trains hope, titans and hope-no-selfmod (tiny, 200 steps at seq-len 128
# on the built-in corpus, all at once), then probes the trained runs and fresh models side by side.
# Usage: bash benchmarks/retention.sh OUT_DIR [DEVICE] [FRESH_LENGTHS] [TRAINED_LENGTHS]
set -euo pipefail
out=${1:?output directory}
device=${2:-auto}
fresh_lengths=${3:-0,256,1024,4096,16384,65536}
trained_lengths=${4:-0,256,1024,4096,16384,65536}
presets=(hope titans hope-no-selfmod)
mkdir -p "$out"
for p in "${presets[@]}"; do
    python3 -m hope train --preset "$p" --steps 200 --seq-len 128 --device "$device" --eval-every 0 \
        --sample-tokens 0 --out "$out/run-$p" >"$out/train-$p.log" 2>&1 &
done
python3 -m hope retention --presets "$(IFS=,; echo "${presets[*]}")" --lengths "$fresh_lengths" \
    --device "$device" --out "$out/fresh" 2>&1 | tee "$out/fresh.log" &
wait
runs=$(for p in "${presets[@]}"; do printf '%s,' "$out/run-$p"; done)
python3 -m hope retention --runs "${runs%,}" --lengths "$trained_lengths" --device "$device" \
    --out "$out/trained" 2>&1 | tee "$out/trained.log"
