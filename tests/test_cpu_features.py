"""The one CPU-feature module (csrc/base/mr_cpu.c): the vector-path limit, read once from
MAMBARET_SIMD and changed for the process with _C.set_simd_limit, governs every kernel family."""
import os
import subprocess
import sys

import numpy as np
import pytest

from mambaret import _C

PATH_NAMES = {"portable": "portable C", "avx2": "AVX2", "avx512": "AVX-512"}


@pytest.fixture
def restore_limit():
    previous = _C.set_simd_limit("auto")
    _C.set_simd_limit(previous)
    yield
    _C.set_simd_limit(previous)


def test_limit_lowers_every_family(restore_limit):
    widest = _C.build_info()["simd"]
    _C.set_simd_limit("portable")
    assert _C.build_info()["simd"].startswith("portable C")
    # the search kernels' automatic choice follows the same limit: portable scores equal the reference
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 256, (300, 16), dtype=np.uint8)
    queries = codes[:5].copy()
    auto = _C.hamming_search(queries, [codes], 7, 1, "auto")
    reference = _C.hamming_search(queries, [codes], 7, 1, "reference")
    np.testing.assert_array_equal(auto[0], reference[0])
    np.testing.assert_array_equal(auto[1], reference[1])
    previous = _C.set_simd_limit("auto")
    assert previous == "portable"
    assert _C.build_info()["simd"] == widest


def test_limit_names(restore_limit):
    for name in ("portable", "avx2", "avx512", "auto"):
        _C.set_simd_limit(name)
    with pytest.raises(ValueError, match="simd limit"):
        _C.set_simd_limit("sse9")
    with pytest.raises(TypeError):
        _C.set_simd_limit(3)
    assert set(_C.code_kernels(False)) <= set(PATH_NAMES)
    # int8 codes' AVX-512 kernel is VNNI's, present exactly where the int8 linears' zmm VNNI one is
    assert set(_C.code_kernels(True)) <= set(PATH_NAMES)
    assert ("avx512" in _C.code_kernels(True)) == _C.int8_kernels()["avx512vnni"]


def test_environment_is_read_once():
    """MAMBARET_SIMD at start narrows the path; changing it afterwards changes nothing."""
    script = ("import os; from mambaret import _C; a = _C.build_info()['simd']; "
              "os.environ['MAMBARET_SIMD'] = 'avx512'; print(a); print(_C.build_info()['simd'])")
    env = dict(os.environ, MAMBARET_SIMD="portable")
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    first, second = run.stdout.strip().splitlines()
    assert first.startswith("portable C") and second == first
