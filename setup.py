"""Builds mambaret._C from csrc/ (always) and mambaret._cuda from cuda/ (when nvcc is found).

MAMBARET_CUDA=auto|0|1 chooses the CUDA build: auto builds it when nvcc is found, 0 never,
1 requires it (the build fails without nvcc).
"""
import glob
import os
import shutil
import sys

import numpy
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))


def cuda_mode():
    mode = os.environ.get("MAMBARET_CUDA", "auto").strip().lower()
    if mode not in ("auto", "0", "1"):
        sys.exit(f"MAMBARET_CUDA must be auto, 0 or 1, got {mode!r}")
    return mode


def core_extension():
    # the core's folders (base, gemm, ops, models, search) and the binding (python)
    sources = sorted(glob.glob(os.path.join("csrc", "*", "*.c")))
    return Extension(
        "mambaret._C",
        sources=sources,
        # rebuild when a header changes
        depends=sorted(glob.glob(os.path.join("csrc", "*.h")) + glob.glob(os.path.join("csrc", "*", "*.h"))),
        include_dirs=["csrc", "csrc/python", numpy.get_include()],
        extra_compile_args=["-O3", "-std=c11", "-fopenmp", "-fno-math-errno", "-Wall", "-Wextra",
                            "-Wno-unused-parameter", "-Wno-missing-field-initializers",
                            "-Wno-cast-function-type"],
        extra_link_args=["-fopenmp"],
        libraries=["dl", "m"],
        define_macros=[("NPY_TARGET_VERSION", "NPY_1_23_API_VERSION")],
    )


def find_nvcc():
    """nvcc on PATH, else under CUDA_HOME, else the default toolkit folder."""
    found = shutil.which("nvcc")
    if found:
        return found
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home and os.path.exists(os.path.join(home, "bin", "nvcc")):
            return os.path.join(home, "bin", "nvcc")
    return None


class BuildExt(build_ext):
    """Adds the optional CUDA module when nvcc is available (see cuda/build_cuda.py)."""

    def finalize_options(self):
        # added before setuptools prepares the extension list, so it is treated like any other
        mode = cuda_mode()
        has_sources = glob.glob(os.path.join(HERE, "cuda", "*.cu"))
        if mode != "0" and has_sources and not any(getattr(e, "is_cuda", False) for e in self.distribution.ext_modules):
            nvcc = find_nvcc()
            if nvcc:
                sys.path.insert(0, os.path.join(HERE, "cuda"))
                from build_cuda import cuda_extension  # noqa: E402  (lives beside the kernels)

                ext = cuda_extension(nvcc, required=mode == "1")
                if ext is not None:
                    self.distribution.ext_modules.append(ext)
            elif mode == "1":
                raise RuntimeError("MAMBARET_CUDA=1 but nvcc was not found (PATH, CUDA_HOME, /usr/local/cuda)")
        super().finalize_options()

    def build_extension(self, ext):
        if getattr(ext, "is_cuda", False):
            ext.build(self)
        else:
            super().build_extension(ext)


setup(ext_modules=[core_extension()], cmdclass={"build_ext": BuildExt})
