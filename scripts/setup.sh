#!/usr/bin/env bash
# Installs mambaret and everything its tests need on a fresh machine (CPython 3.10+, pip,
# gcc). Where nvcc exists, cuBLAS's headers come from the nvidia-cublas wheel and the optional
# CUDA module is built too (MAMBARET_CUDA=0 skips it).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3}
PIP=("$PYTHON" -m pip install --disable-pip-version-check -q)
[ "${CI:-}" = "true" ] && PIP+=(--progress-bar off)

# torch is pinned: the CPU build is what the tests compare against
"${PIP[@]}" "torch==2.13.0"

if [ "${MAMBARET_CUDA:-auto}" != "0" ] && { command -v nvcc >/dev/null || [ -x /usr/local/cuda/bin/nvcc ]; }; then
    "${PIP[@]}" "nvidia-cublas==13.0.2.14"
    # the build runs in an isolated environment: tell it where the wheel put cuBLAS
    MAMBARET_CUBLAS_HOME=$("$PYTHON" - <<'PY'
import os, site, sys
for base in site.getsitepackages() + [site.getusersitepackages()] + sys.path:
    path = os.path.join(base, "nvidia", "cu13")
    if os.path.exists(os.path.join(path, "include", "cublas_v2.h")):
        print(path)
        break
PY
)
    export MAMBARET_CUBLAS_HOME
    export MAMBARET_CUDA=${MAMBARET_CUDA:-1}
fi

"${PIP[@]}" -e ".[test]"
