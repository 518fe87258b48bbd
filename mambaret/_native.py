"""Loads the C core, points it at the fastest BLAS available and resolves thread counts."""
from __future__ import annotations

import os
import warnings

# libgomp's threads spin up to 300,000 times (milliseconds) at every barrier and between
# parallel regions before they sleep. On a busy machine a spinning thread holds its core while
# the thread it waits for is descheduled, and the default thread count ends up slower than one
# thread; a thread that sleeps sooner is woken promptly. A spin of this many turns (a fraction of
# a millisecond) still covers the short waits of a quiet machine. libgomp reads the setting once,
# when it is loaded with the extension, so it is put in the environment for that moment only;
# a user's own OMP_WAIT_POLICY or GOMP_SPINCOUNT is left as it is.
OPENMP_SPIN_COUNT = "10000"
_OPENMP_WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def _libgomp_loaded() -> bool:
    try:
        with open("/proc/self/maps") as maps:
            return "/libgomp.so" in maps.read()
    except OSError:  # not Linux: nothing to tell
        return False


def _load_core():
    """(the extension, how its OpenMP threads wait, for show_config)."""
    user_set = [f"{name}={os.environ[name]}" for name in _OPENMP_WAIT_VARIABLES if name in os.environ]
    if user_set:
        wait = ", ".join(user_set) + " (from the environment)"
    elif _libgomp_loaded():
        wait = "libgomp was loaded before mambaret: its own settings apply"
    else:
        wait = f"GOMP_SPINCOUNT={OPENMP_SPIN_COUNT} (mambaret's default)"
        os.environ["GOMP_SPINCOUNT"] = OPENMP_SPIN_COUNT
    try:
        from . import _C as core
    finally:
        if not user_set:
            os.environ.pop("GOMP_SPINCOUNT", None)
    return core, wait


_C, _openmp_wait = _load_core()
_blas_description = "builtin (plain C)"


def _scipy_openblas():
    """(path, sgemm symbol, threads symbol, name) of the scipy-openblas32 wheel, or None."""
    try:
        import scipy_openblas32
    except ImportError:
        return None
    path = os.path.join(scipy_openblas32.get_lib_dir(), f"lib{scipy_openblas32.get_library()}.so")
    if not os.path.exists(path):
        return None
    version = getattr(scipy_openblas32, "__version__", "")
    return path, "scipy_cblas_sgemm", "scipy_openblas_set_num_threads", f"OpenBLAS (scipy-openblas32 {version})".replace(" )", ")")


def configure_blas(choice: str | None = None) -> str:
    """Selects the BLAS for models created afterwards.

    choice: "openblas" (the scipy-openblas32 wheel, the default), "builtin" (plain C), or a path
    to a shared library exporting cblas_sgemm. The environment variable MAMBARET_BLAS gives the
    default choice.
    """
    global _blas_description
    choice = (choice or os.environ.get("MAMBARET_BLAS") or "openblas").strip()
    if choice == "builtin":
        _C.set_blas(None)
    elif choice == "openblas":
        found = _scipy_openblas()
        if found is None:
            warnings.warn("scipy-openblas32 is not installed: matrix products use the slow built-in fallback",
                          RuntimeWarning, stacklevel=2)
            _C.set_blas(None)
        else:
            path, sgemm, threads, name = found
            _C.set_blas(path, sgemm, threads, name)
    else:
        _C.set_blas(choice, "cblas_sgemm", "openblas_set_num_threads", choice)
    _blas_description = _C.build_info()["blas"]
    return _blas_description


def default_threads(threads: int | None = None) -> int:
    """threads if given, else OMP_NUM_THREADS, else the CPUs this process may run on."""
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads <= 0:
            raise ValueError(f"threads must be a positive int, got {threads!r}")
        return threads
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env:
        try:
            value = int(env.split(",")[0])
            if value > 0:
                return value
        except ValueError:
            pass
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def show_config(print_out: bool = True) -> dict:
    """Reports the BLAS, the SIMD path, threads and whether the CUDA module can run."""
    from .encoding.cuda import cuda_available

    info = dict(_C.build_info())
    if info.get("openmp"):
        info["openmp_wait"] = _openmp_wait
    info["default_threads"] = default_threads()
    info["cuda_available"] = cuda_available()
    if print_out:
        width = max(len(k) for k in info)
        for key, value in info.items():
            print(f"{key:<{width}}  {value}")
    return info


def _configure_blas_from_environment() -> None:
    """configure_blas() at import: a MAMBARET_BLAS that cannot be used is a warning, not a
    failed import, and the default BLAS is used instead."""
    try:
        configure_blas()
    except (RuntimeError, OSError, ValueError) as exc:
        if not os.environ.get("MAMBARET_BLAS", "").strip():
            raise
        warnings.warn(f"MAMBARET_BLAS={os.environ['MAMBARET_BLAS']!r} cannot be used ({exc}); "
                      f"using the default BLAS instead", RuntimeWarning, stacklevel=2)
        configure_blas("openblas")


_configure_blas_from_environment()
