#!/usr/bin/env bash
# The Triton path on a GPU in few calls (device time is scarce): the triton == chunked tests, one-layer
# timings and profiles at 125m shapes, the whole-model table at T = 4096, batch-1 inference and the
# 10M-token soak, the dissection study a slice at a time. Name the stages to run (default: tests layer speed); each has its own time limit and writes under $OUT (default runs/gpu_check),
# so what finished comes back even if a later stage runs out of time.
#
#   OUT=$OUT bash benchmarks/gpu_check.sh tests layer      # on the GPU machine
#   OUT=$OUT bash benchmarks/gpu_check.sh speed
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-runs/gpu_check}
mkdir -p "$out"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
stages=${*:-tests layer speed}
for stage in $stages; do
    echo "== $stage ($(date -u +%H:%M:%S))"
    case $stage in
    tests)  # each kernel configuration compiles once (20-50 s), so the GPU runs a spread of the variants
        timeout "${TESTS_S:-240}" python3 -m pytest -q -p no:cacheprovider tests/core/test_titans_triton.py \
            -k "${TESTS_K:-hope or titans-lmm or gated-deltanet or every or whole_model or variants or vjp or stand_in}" >"$out/tests.txt" 2>&1
        tail -8 "$out/tests.txt" ;;
    layer)
        # SIGABRT on time-out: PYTHONFAULTHANDLER prints where every thread was
        TORCH_LOGS=${LAYER_LOGS:-recompiles} PYTHONFAULTHANDLER=1 timeout -s ABRT "${LAYER_S:-420}" \
            python3 benchmarks/titans_layer.py --presets "${LAYER_PRESETS:-hope}" --seq-len "${LAYER_T:-4096}" \
            --batch-size "${LAYER_B:-8}" \
            --impls "${LAYER_IMPLS:-triton,triton:share_inverse=false,triton:dots=bf16}" --profile --out "$out/layer" >"$out/layer.txt" 2>&1
        grep -v -i warn "$out/layer.txt" | tail -8 ;;
    speed)
        timeout "${SPEED_S:-540}" python3 benchmarks/speed.py --presets "${SPEED_PRESETS:-transformer,hope}" \
            --size 125m --seq-lens "${SPEED_T:-4096}" --steps 2 --warmup 1 --out "$out/speed" \
            --flops docs/results/flops-125m/results.json,docs/results/flops-125m-16k/results.json >"$out/speed.txt" 2>&1
        grep -v -i warn "$out/speed.txt" | tail -8 ;;
    study)  # training at the dissection study's size (issue 16's budget), profiled; first the CMS walk's and
        # the graphed step's GPU tests
        # the graph tests first: twice (2026-12-02) the CMS tests used the whole limit before them
        timeout "${STUDY_TESTS_S:-300}" python3 -m pytest -q -p no:cacheprovider \
            "tests/bench/test_bench.py::test_fit_with_cuda_graphs_trains_as_eager" tests/train/test_graphs.py \
            tests/core/test_cms_walk.py tests/core/test_cms.py >"$out/cms-tests.txt" 2>&1
        tail -3 "$out/cms-tests.txt"
        timeout "${SPEED_S:-540}" python3 benchmarks/speed.py --presets "${STUDY_PRESETS:-transformer,hope,hope-no-cms,titans}" \
            --size study-small --seq-lens 512 --batches 8 --steps 5 --warmup 2 --vocab-size 32768 --profile \
            --impls "${STUDY_IMPLS:-auto+graphs}" ${STUDY_ARGS:-} \
            --out "$out/study" >"$out/study.txt" 2>&1
        grep "^|" "$out/study/results.md" ;;
    variants)  # the step against its variants (the defaults: the kernel backward, combo_kernels), hope at the study's size graphed, a process each
        i=0
        for v in "" "--titans-backward vjp" "--inductor combo_kernels=false" \
                "--titans-backward vjp --inductor combo_kernels=false"; do
            i=$((i + 1))
            timeout "${VARIANT_S:-140}" python3 benchmarks/speed.py --presets "${VARIANT_PRESETS:-hope}" \
                --size study-small --seq-lens 512 --batches 8 --steps 5 --warmup 2 --vocab-size 32768 \
                --impls auto+graphs $v --out "$out/variants/$i" >"$out/variants-$i.txt" 2>&1
            echo "variant $i (${v:-default}):"; grep "^| 512" "$out/variants/$i/results.md"
        done ;;
    backward)  # the Titans backward kernels (KERNEL.backward="triton", the default; ops/titans/chunk_bwd.py) against the vjp
        # backward: their tests, one hope layer at 125m (error against chunked, profiled), the graphed study-small step
        timeout "${TESTS_S:-240}" python3 -m pytest -q -p no:cacheprovider tests/core/test_titans_chunk_bwd.py \
            tests/core/test_titans_triton.py -k "kernel_backward or evolution_backward" >"$out/backward-tests.txt" 2>&1
        tail -3 "$out/backward-tests.txt"
        timeout "${LAYER_S:-300}" python3 benchmarks/titans_layer.py --presets hope --seq-len "${LAYER_T:-4096}" \
            --batch-size "${LAYER_B:-8}" --impls triton:backward=vjp,triton --profile --out "$out/backward-layer" \
            >"$out/backward-layer.txt" 2>&1
        grep -v -i warn "$out/backward-layer.txt" | tail -4
        i=0
        for v in "--titans-backward vjp" ""; do
            i=$((i + 1))
            timeout "${VARIANT_S:-140}" python3 benchmarks/speed.py --presets "${VARIANT_PRESETS:-hope}" \
                --size study-small --seq-lens 512 --batches 8 --steps 5 --warmup 2 --vocab-size 32768 \
                --impls auto+graphs --profile $v --out "$out/backward-step/$i" >"$out/backward-step-$i.txt" 2>&1
            echo "step $i (${v:-default}):"; grep "^| 512" "$out/backward-step/$i/results.md"
        done ;;
    overlap)  # graphed steps of small models on several streams of one process (a thread runner for --jobs?)
        timeout "${OVERLAP_S:-300}" python3 benchmarks/overlap.py --preset "${OVERLAP_PRESET:-hope}" --size study-small \
            --jobs "${OVERLAP_JOBS:-1,2,4}" --steps 10 --out "$out/overlap" >"$out/overlap.txt" 2>&1
        grep -v -i warn "$out/overlap.txt" | tail -8 ;;
    dissect)  # the dissection study, a slice a call: --resume keeps what earlier calls finished (the
        # directory comes with the working tree; copy $out/dissect back over it and commit). A model
        # paused at --max-minutes keeps its checkpoint in /tmp on the device, which a call made while the
        # machine is still warm continues from (too large to come back). A hope model is ten segments of
        # about 60 s (200 steps and a measurement) after about 90 s of start-up. The pause
        # rule keeps the next segment inside --max-minutes, and no model starts that its preset's earlier runs
        # say cannot finish in the time left, so a call trains whole models (a hope model is one call).
        dir=${DISSECT_DIR:-docs/results/dissect-small} keep=/tmp/hope-dissect-out/${DISSECT_SIZE:-small}
        # a warm machine's copy of the results is newer than the one that travelled with the tree
        if [ -f "$keep/results.json" ]; then mkdir -p "$dir" && cp "$keep"/*.* "$dir"/; fi
        timeout "${DISSECT_S:-585}" python3 -m hope bench-suite dissect --size "${DISSECT_SIZE:-small}" \
            --presets "${DISSECT_PRESETS:-hope,hope-no-cms,hope-no-selfmod,hope-no-surprise,titans,transformer}" \
            --seeds "${DISSECT_SEEDS:-3}" --jobs "${DISSECT_JOBS:-1}" --device cuda --cuda-graphs \
            --max-minutes "${DISSECT_MIN:-8.7}" --partial-dir "/tmp/hope-dissect-partial/${DISSECT_SIZE:-small}" \
            --resume --out "$dir" >"$out/dissect.txt" 2>&1
        mkdir -p "$out/dissect" "$keep" && cp "$dir"/*.* "$out/dissect/" && cp "$dir"/*.* "$keep"/
        grep -v -i warn "$out/dissect.txt" | tail -8 ;;
    inference)  # prefill and decode at batch 1 (issue 12): the plain and the compiled decode step
        timeout "${INFER_S:-420}" python3 benchmarks/inference.py --presets "${INFER_PRESETS:-transformer,titans,hope}" \
            --size 125m --contexts "${INFER_T:-4096,65536}" ${INFER_ARGS:-} --out "$out/inference" >"$out/inference.txt" 2>&1
        grep -v -i warn "$out/inference.txt" | tail -10 ;;
    cms-read)  # the CMS one-token read as kernels (hope.ops.cms_step) against PyTorch's matmuls (issue 12)
        timeout "${TESTS_S:-240}" python3 -m pytest -q -p no:cacheprovider tests/core/test_cms_step.py \
            >"$out/cms-read-tests.txt" 2>&1
        tail -3 "$out/cms-read-tests.txt"
        for read in triton torch; do
            timeout "${INFER_S:-240}" python3 benchmarks/inference.py --presets "${INFER_PRESETS:-hope}" --size 125m \
                --contexts "${INFER_T:-4096}" --compile --cms-read "$read" ${INFER_ARGS:-} --out "$out/cms-read-$read" \
                >"$out/cms-read-$read.txt" 2>&1
            echo "cms read $read:"; grep -v -i warn "$out/cms-read-$read.txt" | grep "^|" | tail -3
        done ;;
    stream)  # Streamer's CUDA graphs against eager pieces, then the streamed column at batch 1 (issue 12)
        timeout "${TESTS_S:-240}" python3 -m pytest -q -p no:cacheprovider tests/core/test_stream.py tests/core/test_decode.py \
            >"$out/stream-tests.txt" 2>&1
        tail -4 "$out/stream-tests.txt"
        timeout "${INFER_S:-420}" python3 benchmarks/inference.py --presets "${INFER_PRESETS:-hope}" --size 125m \
            --contexts "${INFER_T:-16384}" --decode-steps 64 ${INFER_ARGS:-} --out "$out/stream" >"$out/stream.txt" 2>&1
        grep -v -i warn "$out/stream.txt" | tail -6 ;;
    soak)  # 10M tokens streamed through hope-125m with test-time learning on
        timeout "${SOAK_S:-540}" python3 benchmarks/inference.py --presets hope --size 125m --soak "${SOAK_TOKENS:-10000000}" \
            --out "$out/soak" >"$out/soak.txt" 2>&1
        grep -v -i warn "$out/soak.txt" | tail -6 ;;
    *) echo "unknown stage '$stage' (accepted: tests, layer, speed, study, variants, backward, overlap, dissect, inference, cms-read, stream, soak)" >&2; exit 2 ;;
    esac
done
