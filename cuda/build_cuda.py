"""Builds the optional extension mambaret._cuda from the sources in this folder.

nvcc compiles the .cu kernels (sm_80 and sm_90 machine code plus compute_90 PTX), the C
compiler the module init and the plain-C core files it shares with mambaret._C
(csrc/base/mr_error.c, csrc/models/mr_sched.c, csrc/models/mr_tensors.c), and the host linker joins them with the static CUDA
runtime and cuBLAS. cuBLAS comes from CUDA_HOME (a full toolkit) or, failing that, from the
`nvidia-cublas` wheel's nvidia/cu13 (or nvidia/cublas) folder; the rpath points at that folder,
relative to the installed module when both live in the same site-packages.

Environment: CUDA_HOME (default: nvcc's parent folder), MAMBARET_CUBLAS_HOME (a folder with
include/cublas_v2.h and lib/libcublas.so*), MAMBARET_NVCC_JOBS (parallel nvcc processes).
"""
from __future__ import annotations

import glob
import os
import subprocess
import sys
import sysconfig
import time
from concurrent.futures import ThreadPoolExecutor

from setuptools import Extension

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
ARCH_FLAGS = ["-gencode", "arch=compute_80,code=sm_80",
              "-gencode", "arch=compute_90,code=sm_90",
              "-gencode", "arch=compute_90,code=compute_90"]
NVCC_FLAGS = ["-O3", "-std=c++17", "-lineinfo", "--expt-relaxed-constexpr", "-Xcompiler", "-fPIC,-fvisibility=hidden",
              "-Xptxas", "-warn-spills"]
SHARED_C_SOURCES = [os.path.join("csrc", "base", "mr_error.c"), os.path.join("csrc", "models", "mr_sched.c"),
                     os.path.join("csrc", "models", "mr_tensors.c")]


def cuda_home(nvcc: str) -> str:
    """The toolkit folder: CUDA_HOME / CUDA_PATH, else nvcc's parent (nvcc may be a wrapper
    script elsewhere on PATH), else /usr/local/cuda."""
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"),
                  os.path.dirname(os.path.dirname(os.path.realpath(nvcc))), "/usr/local/cuda"]
    for home in candidates:
        if home and os.path.exists(os.path.join(home, "include", "cuda_runtime.h")):
            return home
    raise RuntimeError(f"no CUDA toolkit (include/cuda_runtime.h) found for {nvcc}; set CUDA_HOME")


def _cublas_lib(lib_dir: str) -> str | None:
    """The linker argument for libcublas in lib_dir: -lcublas, or -l:libcublas.so.N where the
    wheel ships no unversioned link."""
    if os.path.exists(os.path.join(lib_dir, "libcublas.so")):
        return "-lcublas"
    versioned = sorted(glob.glob(os.path.join(lib_dir, "libcublas.so.*")), key=len)
    return f"-l:{os.path.basename(versioned[0])}" if versioned else None


def _wheel_cublas_dirs():
    """(include, lib) folders of an nvidia-cublas wheel on sys.path, newest layout first."""
    for base in sys.path:
        for sub in ("nvidia/cu13", "nvidia/cublas"):
            inc, lib = os.path.join(base, sub, "include"), os.path.join(base, sub, "lib")
            if os.path.exists(os.path.join(inc, "cublas_v2.h")) and os.path.isdir(lib):
                yield inc, lib, sub


def find_cublas(home: str) -> dict:
    """Where cuBLAS's headers and library are, and which rpath entries the module needs."""
    explicit = os.environ.get("MAMBARET_CUBLAS_HOME")
    candidates = []
    if explicit:
        candidates.append((os.path.join(explicit, "include"), os.path.join(explicit, "lib"), None))
    candidates += [(os.path.join(home, "include"), os.path.join(home, d), None)
                   for d in ("lib64", "lib", "targets/x86_64-linux/lib", "targets/sbsa-linux/lib")]
    candidates += list(_wheel_cublas_dirs())
    for inc, lib, wheel_sub in candidates:
        if not os.path.exists(os.path.join(inc, "cublas_v2.h")):
            continue
        flag = _cublas_lib(lib)
        if not flag:
            continue
        rpath = [lib]
        if wheel_sub:  # installed module: site-packages/mambaret/_cuda*.so -> site-packages/nvidia/...
            rpath.insert(0, "$ORIGIN/../" + wheel_sub + "/lib")
        return {"include": inc, "lib": lib, "flag": flag, "rpath": rpath}
    raise RuntimeError(
        "nvcc was found but cuBLAS was not: install its headers and library with "
        "`pip install nvidia-cublas==13.0.2.14` (or set MAMBARET_CUBLAS_HOME), or build without CUDA "
        "with MAMBARET_CUDA=0")


def _run(cmd: list[str]) -> None:
    print(" ".join(cmd), flush=True)
    result = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if result.stdout:
        print(result.stdout, end="", flush=True)
    if result.returncode != 0:
        raise RuntimeError(f"command failed with exit code {result.returncode}: {cmd[0]} ... {cmd[-1]}")


class CudaExtension(Extension):
    """An extension that build_ext hands back to us (setup.py checks `is_cuda`)."""

    is_cuda = True

    def __init__(self, nvcc: str):
        self.nvcc = nvcc
        self.cu_sources = sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(HERE, "*.cu")))
        c_sources = [os.path.join("cuda", "cuda_module.c")] + SHARED_C_SOURCES
        super().__init__("mambaret._cuda", sources=self.cu_sources + c_sources)
        self.c_sources = c_sources

    def build(self, cmd) -> None:
        start = time.time()
        home = cuda_home(self.nvcc)
        cublas = find_cublas(home)
        build_temp = os.path.join(cmd.build_temp, "cuda")
        os.makedirs(build_temp, exist_ok=True)
        includes = [os.path.join(ROOT, "cuda"), os.path.join(ROOT, "csrc"), cublas["include"]]
        inc_flags = [f"-I{p}" for p in includes]

        def compile_cu(src: str) -> str:
            obj = os.path.join(build_temp, os.path.basename(src) + ".o")
            _run([self.nvcc, "-c", os.path.join(ROOT, src), "-o", obj] + NVCC_FLAGS + ARCH_FLAGS + inc_flags)
            return obj

        jobs = int(os.environ.get("MAMBARET_NVCC_JOBS") or os.cpu_count() or 1)
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            cu_objects = list(pool.map(compile_cu, self.cu_sources))
        c_objects = cmd.compiler.compile(
            self.c_sources, output_dir=build_temp,  # relative: setup.py runs in the source root
            include_dirs=includes + [sysconfig.get_paths()["include"]],
            extra_postargs=["-O2", "-std=c11", "-fPIC", "-fvisibility=hidden"])

        output = cmd.get_ext_fullpath(self.name)
        os.makedirs(os.path.dirname(output), exist_ok=True)
        cudart_dirs = [os.path.join(home, d) for d in ("lib64", "lib", "targets/x86_64-linux/lib")
                       if os.path.exists(os.path.join(home, d, "libcudart_static.a"))]
        if not cudart_dirs:
            raise RuntimeError(f"libcudart_static.a not found under CUDA_HOME={home}")
        link_args = ([f"-L{cudart_dirs[0]}", f"-L{cublas['lib']}", cublas["flag"], "-lcudart_static",
                      "-lstdc++", "-lpthread", "-ldl", "-lrt", "-lm"]
                     + [f"-Wl,-rpath,{p}" for p in cublas["rpath"]])
        cmd.compiler.link_shared_object(cu_objects + c_objects, output, extra_postargs=link_args)
        print(f"mambaret._cuda built in {time.time() - start:.1f} s with {self.nvcc} "
              f"(cuBLAS from {cublas['lib']})", flush=True)


def cuda_extension(nvcc: str, required: bool = False) -> CudaExtension | None:
    """The extension to build, or None (with a warning) when the toolkit or cuBLAS is missing
    and the build was not required (MAMBARET_CUDA=1 turns that into an error)."""
    try:
        find_cublas(cuda_home(nvcc))
    except RuntimeError as exc:
        if required:
            raise
        print(f"WARNING: building without mambaret._cuda: {exc}", file=sys.stderr, flush=True)
        return None
    return CudaExtension(nvcc)
