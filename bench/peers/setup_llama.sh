#!/usr/bin/env bash
# Builds llama-cpp-python from source (native CPU flags) in a virtual environment outside the
# repository, for bench/cpu_bench.py's llama.cpp peer. Benchmark set-up only: never run in CI.
# Takes about half an hour on 2 cores.
#
#   bash bench/peers/setup_llama.sh [VENV_DIR]      (default /work/peers/llama-venv)
set -euo pipefail

VENV="${1:-${MAMBARET_BENCH_LLAMA_VENV:-/work/peers/llama-venv}}"
LLAMA_CPP_PYTHON_VERSION="0.3.36"   # vendors llama.cpp with ggml 0.25.3 and gguf-py 0.19.0
GGUF_VERSION="0.19.0"

python3 -m venv "$VENV"
"$VENV/bin/pip" install --upgrade pip
"$VENV/bin/pip" install numpy safetensors "gguf==$GGUF_VERSION"
# OpenMP threads, -march=native kernels; no CUDA, no curl
CMAKE_ARGS="-DGGML_NATIVE=ON -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DGGML_OPENMP=ON" \
CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}" \
    "$VENV/bin/pip" install -v --no-binary llama-cpp-python "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION"
"$VENV/bin/python" -c "import llama_cpp; print('llama-cpp-python', llama_cpp.__version__); print(llama_cpp.llama_print_system_info().decode())"
echo "use: python bench/cpu_bench.py --llama-python $VENV/bin/python"
