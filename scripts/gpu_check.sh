#!/usr/bin/env bash
# The GPU checks, for a machine with a CUDA device and tdsclip importable:
#   1. the benchmark, B/16 8f at batch 8 and 16 (growth per clip from the two): ours by
#      default, with activation checkpointing and with CUDA graphs, and the same tower fully
#      fine-tuned;
#   2. the CUDA tests (python -m pytest -m gpu);
#   3. the benchmark of the torch.compile mode, in its own report (compiling takes a while).
# Reports (JSON), logs and the GPU's name land in OUTDIR; extra arguments go to the first
# benchmark (e.g. --reference-repo /scratch/TDS-CLIP to time the authors' model too).
# EXPERIMENT names another experiment (EXPERIMENT= : the default job's tiny model).
# BENCH_TIMEOUT, TEST_TIMEOUT, COMPILE_TIMEOUT: seconds for each step; 0 skips that step.
#   usage: bash scripts/gpu_check.sh OUTDIR [benchmark arguments]
set -uo pipefail
out=${1:?usage: bash scripts/gpu_check.sh OUTDIR [benchmark arguments]}
shift
mkdir -p "$out"
export PYTHONUNBUFFERED=1
python=${PYTHON:-python3}
experiment=${EXPERIMENT-ssv2_b16_8f}
status=0
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
# step NAME SECONDS COMMAND...: run it under a timeout, or skip it when SECONDS is 0.
step() {
    local name=$1 seconds=$2
    shift 2
    if [ "$seconds" = 0 ]; then
        echo "skipped: $name" | tee "$out/$name.log"
        return 0
    fi
    timeout "$seconds" "$@" 2>&1 | tee "$out/$name.log" || status=1
}
step bench_gpu "${BENCH_TIMEOUT:-600}" "$python" -m tdsclip.benchmark --experiment "$experiment" \
    --batch-sizes 8 16 --modes default checkpointing cuda_graph --full-finetune --repeats 5 \
    --rounds 1 --json "$out/bench_gpu.json" --markdown "$@"
step gpu_tests "${TEST_TIMEOUT:-300}" "$python" -m pytest -m gpu tests/test_gpu.py -q \
    -p no:cacheprovider
step bench_gpu_compile "${COMPILE_TIMEOUT:-300}" "$python" -m tdsclip.benchmark \
    --experiment "$experiment" --batch-sizes 8 16 --modes compile --repeats 5 --rounds 1 \
    --json "$out/bench_gpu_compile.json"
exit $status
