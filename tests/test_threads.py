"""One model shared by several Python threads gives the serial results (the GIL is released)."""
from __future__ import annotations

import threading

import numpy as np

import mambaret as mr


def test_concurrent_encoding_matches_serial(tiny_model_dir):
    enc = mr.MambaEncoder.from_pretrained(tiny_model_dir, threads=1, max_tokens=37)
    rng = np.random.default_rng(9)
    workloads = [[rng.integers(0, 300, int(n)).tolist() for n in rng.integers(1, 200, 12)] for _ in range(6)]
    serial = [enc.encode(w) for w in workloads]
    results: list = [None] * len(workloads)
    errors: list = []
    start = threading.Barrier(len(workloads))

    def work(i):
        try:
            start.wait()
            for _ in range(3):
                results[i] = enc.encode(workloads[i])
        except Exception as exc:  # reported below; a thread's exception would otherwise vanish
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(workloads))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for got, want in zip(results, serial):
        np.testing.assert_array_equal(got, want)


def test_gil_is_released_during_forward(tiny_model_dir):
    """A Python thread keeps running while another is inside a long forward call."""
    enc = mr.MambaEncoder.from_pretrained(tiny_model_dir, threads=1)
    long_input = [list(np.random.default_rng(0).integers(0, 300, 20000))]
    ticks = []
    done = threading.Event()

    def ticker():
        while not done.is_set():
            ticks.append(1)
            done.wait(0.001)

    t = threading.Thread(target=ticker)
    t.start()
    before = len(ticks)
    enc.encode(long_input)
    during = len(ticks) - before
    done.set()
    t.join()
    assert during > 3


def test_kept_workspace_grows_and_is_released(tiny_model_dir):
    """The workspace kept between calls never changes a result: small call, larger call (it
    grows), small again (it is reused), then after release_memory (allocated afresh)."""
    enc = mr.MambaEncoder.from_pretrained(tiny_model_dir, threads=2, max_tokens=4096)
    rng = np.random.default_rng(4)
    small = [rng.integers(0, 300, 9).tolist()]
    large = [rng.integers(0, 300, int(n)).tolist() for n in (700, 1500, 3)]
    first_small, first_large = enc.encode(small), enc.encode(large)
    np.testing.assert_array_equal(enc.encode(small), first_small)
    enc.release_memory()
    np.testing.assert_array_equal(enc.encode(large), first_large)
    enc.release_memory()
    enc.release_memory()  # twice is harmless
    np.testing.assert_array_equal(enc.encode(small), first_small)


def _openmp_spin_count(env_changes: dict) -> tuple[str, ...]:
    """(the spin count libgomp reports at start-up, GOMP_SPINCOUNT in os.environ after the
    import, show_config's openmp_wait) in a fresh interpreter that imports mambaret with
    env_changes applied."""
    import os
    import re
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(env_changes, OMP_DISPLAY_ENV="verbose")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = repo + os.pathsep + env.get("PYTHONPATH", "")
    code = ("import os, mambaret; print(os.environ.get('GOMP_SPINCOUNT')); "
            "print(mambaret.show_config(print_out=False)['openmp_wait'])")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    found = re.search(r"GOMP_SPINCOUNT = '(\d+)'", done.stderr)
    assert found, done.stderr
    return (found.group(1), *done.stdout.strip().splitlines())


def test_openmp_threads_spin_briefly_before_sleeping():
    """libgomp's default spin (300,000 turns at every barrier) made the default thread count
    slower than one thread on a busy machine; mambaret shortens it for its own runtime only."""
    from mambaret._native import OPENMP_SPIN_COUNT

    spins, left, said = _openmp_spin_count({})
    assert (spins, left) == (OPENMP_SPIN_COUNT, "None")  # and not left in the environment
    assert said == f"GOMP_SPINCOUNT={OPENMP_SPIN_COUNT} (mambaret's default)"


def test_users_openmp_wait_settings_win():
    from mambaret._native import OPENMP_SPIN_COUNT

    assert _openmp_spin_count({"GOMP_SPINCOUNT": "123"}) == ("123", "123", "GOMP_SPINCOUNT=123 (from the environment)")
    spins, _, said = _openmp_spin_count({"OMP_WAIT_POLICY": "active"})
    assert spins != OPENMP_SPIN_COUNT and said == "OMP_WAIT_POLICY=active (from the environment)"
