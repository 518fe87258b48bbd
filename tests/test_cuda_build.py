"""The CUDA sources are compiled at install time whenever nvcc is present (no GPU needed), so
a compile error fails the install; this checks that the module came out of it and speaks the
C ABI that mambaret._C expects."""
from __future__ import annotations

import importlib.util
import os
import shutil

import pytest


def _nvcc():
    return shutil.which("nvcc") or next((p for p in (os.path.join(h, "bin", "nvcc") for h in
                                         (os.environ.get("CUDA_HOME"), "/usr/local/cuda") if h) if os.path.exists(p)),
                                        None)


@pytest.mark.skipif(_nvcc() is None, reason="nvcc not found: the CUDA module is not built here")
@pytest.mark.skipif(os.environ.get("MAMBARET_CUDA", "auto") == "0", reason="MAMBARET_CUDA=0 disables the CUDA build")
def test_cuda_module_was_built_and_exports_its_abi():
    if importlib.util.find_spec("mambaret._cuda") is None:
        pytest.fail("nvcc is present but mambaret._cuda was not built (is cuBLAS installed? "
                    "pip install nvidia-cublas==13.0.2.14; MAMBARET_CUDA=1 makes that an install error)")
    from mambaret import _cuda

    assert _cuda.ABI_VERSION == 2  # event calls take the device (version 1 did not)
    assert type(_cuda._C_API).__name__ == "PyCapsule"
