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

    assert _cuda.ABI_VERSION == 8  # 8 added Mamba-2's SSD scan for training; 7: mr_config gained int8; 6 added layer exits (exit_layer, exit heads); 5: mr_config gained Mamba-2 and FalconMamba fields; 4 gave it its architecture; 3 added the training kernels; 2 made event calls take the device
    assert type(_cuda._C_API).__name__ == "PyCapsule"


@pytest.mark.skipif(_nvcc() is None, reason="nvcc not found: the CUDA module is not built here")
@pytest.mark.skipif(os.environ.get("MAMBARET_CUDA", "auto") == "0", reason="MAMBARET_CUDA=0 disables the CUDA build")
def test_cuda_training_entries_check_arguments_and_report_errors():
    """The training entries' binding and argument checks run on any machine the module loads on:
    bad offsets are refused before anything reaches the device, and without a usable GPU a valid
    call raises the CUDA error instead of crashing. (Their results are tested in test_train_cuda.py.)"""
    import numpy as np

    import mambaret as mr
    from mambaret import _C

    offsets = np.array([0, 5], np.int64)
    ptr = offsets.ctypes.data
    # S=1, offsets [0, 5] but T=4; pointers 1 are never dereferenced before the check fails
    with pytest.raises(ValueError, match="offsets must run from 0 to 4"):
        _C.cuda_train_selective_scan(0, None, 1, ptr, 4, 8, 4, 1, 1, 8, 1, 8, 0, 1, 1, 1, 8, 0, 0, 0, 1, y=1)
    with pytest.raises(ValueError, match="state size|bad shape"):
        _C.cuda_train_selective_scan(0, None, 1, ptr, 5, 8, 300, 1, 1, 8, 1, 8, 0, 1, 1, 1, 8, 0, 0, 0, 1, y=1)
    with pytest.raises(ValueError, match="bad shape"):
        _C.cuda_train_conv_silu(0, None, 5, 8, 65, 1, 1, 8, 1, 0, 1)
    with pytest.raises(TypeError):
        _C.cuda_train_conv_silu(0, None, 5, 8, 4, "pos", 1, 8, 1, 0, 1)
    if not mr.cuda_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            _C.cuda_train_conv_silu(0, None, 5, 8, 4, 1, 1, 8, 1, 0, 1)


@pytest.mark.skipif(_nvcc() is None, reason="nvcc not found: the CUDA module is not built here")
@pytest.mark.skipif(os.environ.get("MAMBARET_CUDA", "auto") == "0", reason="MAMBARET_CUDA=0 disables the CUDA build")
def test_cuda_ssd_scan_entries_check_arguments_and_report_errors():
    """Mamba-2's SSD scan entries, as above: shapes, strides and offsets are refused before the
    device is touched. (Results: test_train_cuda.py.)"""
    import numpy as np

    import mambaret as mr
    from mambaret import _C

    offsets = np.array([0, 5], np.int64)
    ptr = offsets.ctypes.data

    def forward(T=5, H=2, P=4, G=1, N=4, ldx=8, lddt=2, ldbc=8):
        # device, stream, S, offsets, T, H, P, G, N, x, ldx, dt, lddt, dt_bias, A, dt_min, dt_max, B, C, ldbc, D,
        # boundaries, y; pointers 1 are never dereferenced before the checks
        return _C.cuda_train_ssd_scan(0, None, 1, ptr, T, H, P, G, N, 1, ldx, 1, lddt, 1, 1, 0.0, float("inf"), 1, 1,
                                      ldbc, 1, 1, 1)

    with pytest.raises(ValueError, match="offsets must run from 0 to 4"):
        forward(T=4)
    with pytest.raises(ValueError, match="bad shape"):
        forward(N=300)
    with pytest.raises(ValueError, match="bad shape"):
        forward(H=3, G=2)
    with pytest.raises(ValueError, match="row stride"):
        forward(ldx=7)
    with pytest.raises(ValueError, match="row stride"):
        forward(ldbc=3)
    backward_args = (0, None, 1, ptr, 5, 2, 4, 1, 4, 1, 8, 1, 2, 1, 1, 0.0, 1.0, 1, 1, 8, 1, 1)
    with pytest.raises(ValueError, match="gradient row stride"):
        _C.cuda_train_ssd_scan_backward(*backward_args, 1, 7, 1, 1, 1, 1, 1, 1, 1)
    with pytest.raises(ValueError, match="together"):
        _C.cuda_train_ssd_scan_backward(*backward_args, 1, 8, 1, 1, 1, 1, 1, 1, 0)
    with pytest.raises(TypeError):
        _C.cuda_train_ssd_scan_backward(*backward_args)
    if not mr.cuda_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            forward()
        with pytest.raises(RuntimeError, match="CUDA"):
            _C.cuda_train_ssd_scan_backward(*backward_args, 1, 8, 1, 1, 1, 1, 1, 1, 1)
