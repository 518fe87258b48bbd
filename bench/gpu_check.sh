#!/usr/bin/env bash
# The whole GPU validation in one command, for a machine with a GPU and no network: builds the
# extension in place, runs the GPU tests (a skip is a failure there), compute-sanitizer over a
# short parity run, every dev/cuda harness (check, then timing) and the GPU benchmark. Output
# goes to $OUT (default bench/results/gpu-run), one log per step; the exit code is the first
# failure's.
#   bash bench/gpu_check.sh            # everything
#   STEPS="tests harnesses" bash bench/gpu_check.sh
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT=${OUT:-bench/results/gpu-run}
STEPS=${STEPS:-"build tests sanitizer harnesses bench"}
mkdir -p "$OUT"
export PYTHONPATH=$PWD HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 MAMBARET_REQUIRE_GPU=1
status=0
step() {  # step NAME COMMAND...: runs it, logs to $OUT/NAME.log, keeps the first failure
    local name=$1; shift
    echo "== $name: $*" | tee -a "$OUT/summary.txt"
    local t0=$SECONDS
    "$@" >"$OUT/$name.log" 2>&1
    local rc=$?
    echo "   rc=$rc in $((SECONDS - t0)) s" | tee -a "$OUT/summary.txt"
    tail -n 3 "$OUT/$name.log" | sed 's/^/   /' | tee -a "$OUT/summary.txt"
    [ "$rc" -ne 0 ] && [ "$status" -eq 0 ] && status=$rc
    return 0
}
nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1
for s in $STEPS; do
    case $s in
    build) step build env MAMBARET_CUDA=1 MAKEFLAGS=-j16 MAMBARET_NVCC_JOBS=16 python3 setup.py build_ext --inplace ;;
    tests) step tests python3 -m pytest -q -ra tests/test_cuda.py tests/test_cuda_build.py tests/test_cuda_ops.py tests/test_train_cuda.py ;;
    sanitizer) step sanitizer python3 -m pytest -q -ra tests/test_cuda.py -k compute_sanitizer ;;
    harnesses)
        step harness-build make -C dev/cuda -j16
        for op in embed rmsnorm conv_silu selective_scan ssd_scan pool_l2 gemm batch conv_silu_backward selective_scan_backward ssd_scan_backward; do step "harness-$op" "dev/cuda/$op"; done ;;
    bench) step bench python3 bench/gpu_bench.py ;;
    *) echo "unknown step $s" >&2; status=2 ;;
    esac
done
exit "$status"
