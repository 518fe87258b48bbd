#!/usr/bin/env bash
# Builds mambaret._C with clang for coverage-guided fuzzing (-fsanitize=fuzzer-no-link,address) in
# a copy of the source tree, build-fuzz/src, so the in-place build stays as it is.
# bench/fuzz/run.py --instrumented imports mambaret from there and preloads atheris' AddressSanitizer
# + libFuzzer runtime.      Needs clang (apt-get install clang) and atheris (pip install atheris).
set -euo pipefail
cd "$(dirname "$0")/../.."
flags="-fsanitize=fuzzer-no-link,address -fno-omit-frame-pointer -g -O1"
# copied over the previous copy: its build/ folder stays, so only changed C is recompiled
mkdir -p build-fuzz/src
tar --exclude=./build --exclude='./build-*' --exclude=./.git --exclude='*.so' -cf - . | tar -xf - -C build-fuzz/src
cd build-fuzz/src
CC=clang LDSHARED="clang -shared" CFLAGS="$flags" LDFLAGS="$flags" MAMBARET_CUDA=0 \
    python3 setup.py build_ext --inplace -q 2>&1 | grep -v "^clang" | tail -3 || true
ls mambaret/_C*.so
