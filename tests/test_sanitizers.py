"""The C core under AddressSanitizer + UndefinedBehaviorSanitizer, as CI runs it.

`bench/sanitize.sh asan` rebuilds mambaret._C with `-fsanitize=address,undefined` in a copy of
the tree (build-sanitize/) and runs tests that drive the C under the preloaded runtime; a report
stops that run (halt_on_error) and fails this test. The rebuild and the instrumented tests take
minutes, so this runs where CI is set (or MAMBARET_SANITIZE=1) and is skipped elsewhere; the
script's default list (all the C-driving tests, the CUDA module's host code included) and valgrind
are run by hand: bench/results/reliability.md.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# forward and backward kernels, both search paths, the binding's error paths and every reader's
# fuzz seeds; the thread soak and the costly-input tests stay with the full run
CI_TESTS = ["tests/test_kernels.py", "tests/test_train_kernels.py", "tests/test_flat_search_core.py",
            "tests/test_flat_index.py", "tests/test_quantized_index.py", "tests/test_errors.py",
            "tests/test_tokenization.py", "tests/test_dlpack.py", "tests/test_fuzz.py"]


def _asan_runtime() -> str | None:
    if shutil.which("gcc") is None:
        return None
    path = subprocess.run(["gcc", "-print-file-name=libasan.so"], capture_output=True, text=True).stdout.strip()
    return path if os.path.isabs(path) and os.path.exists(path) else None


@pytest.mark.skipif(not (os.environ.get("CI") or os.environ.get("MAMBARET_SANITIZE") == "1"),
                    reason="minutes of rebuild and instrumented tests: set CI=1 or MAMBARET_SANITIZE=1 to run")
@pytest.mark.skipif(_asan_runtime() is None, reason="gcc's AddressSanitizer runtime (libasan) is not installed")
def test_c_core_is_clean_under_address_and_undefined_behaviour_sanitizers():
    env = dict(os.environ, MAMBARET_CUDA="0")  # the CUDA host code has its own, longer run (nvcc)
    proc = subprocess.run(["bash", os.path.join("bench", "sanitize.sh"), "asan", *CI_TESTS], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=45 * 60)
    out = proc.stdout + proc.stderr
    reports = re.findall(r"ERROR: AddressSanitizer[^\n]*|runtime error:[^\n]*", out)
    assert not reports, "sanitizer reports:\n" + "\n".join(reports[:10]) + "\n" + out[-4000:]
    assert proc.returncode == 0, out[-4000:]
    summary = re.findall(r"(\d+) passed", out)
    assert summary and int(summary[-1]) > 100, out[-4000:]  # the tests ran, not just the build
