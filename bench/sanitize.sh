#!/usr/bin/env bash
# The C under AddressSanitizer + UndefinedBehaviorSanitizer, and under valgrind memcheck.
#
#   bench/sanitize.sh asan       build mambaret._C, and mambaret._cuda's host code when nvcc is found
#                                (MAMBARET_CUDA=0 leaves it out), with -fsanitize=address,undefined in a
#                                copy of the tree (build-sanitize/src) and run the tests that drive the
#                                C there, with the ASan runtime preloaded (CPython is not instrumented)
#   bench/sanitize.sh valgrind   tests/test_kernels.py under valgrind memcheck with the plain build;
#                                valgrind cannot run AVX-512, so MAMBARET_SIMD=avx2
#   bench/sanitize.sh asan tests/test_flat_index.py   (other tests: given after the mode)
#
# Exit status: pytest's (ASan/UBSan findings abort the run: halt_on_error), or 99 for a valgrind error.
# torch loads under the preloaded runtime (test_train_kernels drives the backward kernels through it);
# the HF-parity and sentence-transformers suites stay out for their time, Ray's for its processes.
# MAMBARET_SANITIZE_DIR: the build copy's folder (default build-sanitize).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
mode=${1:-asan}
shift || true
C_TESTS=(tests/test_kernels.py tests/test_flat_search_core.py tests/test_flat_index.py
         tests/test_flat_index_threads.py tests/test_errors.py tests/test_threads.py tests/test_dlpack.py
         tests/test_tokenization.py tests/test_chunking.py tests/test_crash_safe_files.py
         tests/test_costly_inputs.py tests/test_fuzz.py tests/test_soak.py tests/test_quantized_index.py
         tests/test_train_kernels.py tests/test_cuda.py tests/test_cuda_build.py)
tests=("$@")
[ ${#tests[@]} -eq 0 ] && tests=("${C_TESTS[@]}")

case "$mode" in
asan)
    flags="-fsanitize=address -fsanitize=undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g -O1"
    # copied over the previous copy: its build/ folder stays, so only changed C is recompiled
    dir=${MAMBARET_SANITIZE_DIR:-build-sanitize}
    mkdir -p "$dir/src"
    tar --exclude=./build --exclude='./build-*' --exclude=./.git --exclude='*.so' -cf - . | tar -xf - -C "$dir/src"
    ln -sfn "$(readlink -f "$ROOT/../shared")" "$dir/shared"  # tests read ../shared
    cd "$dir/src"
    rm -f mambaret/_cuda.*.so  # never test a stale, uninstrumented CUDA module
    # nvcc adds NVCC_APPEND_FLAGS: the .cu files' host code is instrumented, the device code is not
    # (one -Xcompiler a flag: nvcc cuts -Xcompiler values at commas)
    nvcc_flags=""
    for f in $flags; do nvcc_flags="$nvcc_flags -Xcompiler $f"; done
    CC=gcc CFLAGS="$flags" LDFLAGS="$flags" MAMBARET_CUDA=${MAMBARET_CUDA:-auto} NVCC_APPEND_FLAGS="$nvcc_flags" \
        python3 setup.py build_ext --inplace -q > build.log 2>&1 || { tail -30 build.log; exit 1; }
    tail -2 build.log
    export LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)"
    # leaks: CPython keeps its objects at exit, so leak reports would be noise;
    # protect_shadow_gap=0: the CUDA driver maps memory where ASan would otherwise protect its gap
    export ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:abort_on_error=0:allocator_may_return_null=1:protect_shadow_gap=0"
    export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
    export PYTHONMALLOC=malloc  # every Python allocation through malloc, where ASan sees it
    export PYTHONPATH=$PWD HF_HUB_OFFLINE=1
    # (the libFuzzer run brings its own sanitizer runtime: bench/fuzz/run.py --instrumented)
    python3 -m pytest -q -p no:cacheprovider -k "not libfuzzer" "${tests[@]}"
    ;;
valgrind)
    [ $# -eq 0 ] && tests=(tests/test_kernels.py)
    export MAMBARET_SIMD=avx2 PYTHONMALLOC=malloc PYTHONPATH=$ROOT HF_HUB_OFFLINE=1 OMP_NUM_THREADS=2
    # the interpreter itself, not a launcher script (valgrind does not follow exec by default)
    python=$(python3 -c "import sys; print(sys.executable)")
    valgrind --tool=memcheck --error-exitcode=99 --leak-check=no --track-origins=yes \
        --suppressions="$ROOT/bench/valgrind-python.supp" \
        "$python" -m pytest -q -p no:cacheprovider "${tests[@]}"
    ;;
*)
    echo "usage: bench/sanitize.sh asan|valgrind [tests...]" >&2
    exit 2
    ;;
esac
