"""Every CUDA op against its CPU twin on a GPU: builds the dev/cuda harnesses (one program per
op, each holding kernel variants and the production launcher) and runs each in its `check`
mode, which compares every variant with the CPU reference on odd shapes in float32 and
bfloat16 and exits non-zero on a mismatch. Skipped without nvcc or a visible GPU (fails
instead under MAMBARET_REQUIRE_GPU=1)."""
from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

import pytest

DEV_CUDA = pathlib.Path(__file__).resolve().parent.parent / "dev" / "cuda"
OPS = ["embed", "rmsnorm", "conv_silu", "selective_scan", "ssd_scan", "pool_l2", "gemm", "batch"]


def _gpu_visible() -> bool:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False
    out = subprocess.run([smi, "-L"], capture_output=True, text=True)
    return out.returncode == 0 and "GPU" in out.stdout


def _nvcc() -> str | None:
    return shutil.which("nvcc") or next((p for p in (os.path.join(h, "bin", "nvcc") for h in
                                         (os.environ.get("CUDA_HOME"), "/usr/local/cuda") if h)
                                         if os.path.exists(p)), None)


pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(_nvcc() is None, reason="nvcc not found: the dev/cuda harnesses cannot be built"),
    pytest.mark.skipif(not _gpu_visible(), reason="no GPU visible (nvidia-smi -L)"),
]


@pytest.fixture(scope="module")
def harnesses():
    nvcc = _nvcc()
    env = dict(os.environ, CUDA_HOME=os.path.dirname(os.path.dirname(os.path.realpath(nvcc))))
    jobs = str(min(len(OPS), os.cpu_count() or 1))
    build = subprocess.run(["make", "-C", str(DEV_CUDA), "-j", jobs, *OPS], capture_output=True, text=True, env=env)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    return DEV_CUDA


@pytest.mark.parametrize("op", OPS)
def test_cuda_op_matches_its_cpu_twin(harnesses, op):
    run = subprocess.run([str(harnesses / op), "check"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and "MISMATCH" not in run.stdout, run.stdout[-3000:] + run.stderr[-3000:]
    assert " OK" in run.stdout
