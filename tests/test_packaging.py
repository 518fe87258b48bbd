"""The source distribution carries every source and header and installs into a working package."""
from __future__ import annotations

import glob
import os
import subprocess
import sys
import tarfile

import pytest

from conftest import REPO_ROOT


@pytest.fixture(scope="module")
def sdist(tmp_path_factory):
    pytest.importorskip("build", reason="the 'build' package makes the sdist")
    out = tmp_path_factory.mktemp("sdist")
    subprocess.run([sys.executable, "-m", "build", "--sdist", "--no-isolation", "--outdir", str(out), str(REPO_ROOT)],
                   check=True, capture_output=True)
    (path,) = glob.glob(str(out / "mambaret-*.tar.gz"))
    return path


def test_sdist_has_every_source(sdist):
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    for pattern in ("csrc/*.h", "csrc/*/*.c", "csrc/*/*.h", "cuda/*.cu", "cuda/*.cuh", "cuda/*.h", "cuda/*.c", "cuda/*.py",
                    "mambaret/*.py", "mambaret/*/*.py", "mambaret/*/*/*.py", "mambaret/models/default/*",
                    "mambaret/models/default/*/*"):
        for path in glob.glob(str(REPO_ROOT / pattern)):
            rel = os.path.relpath(path, REPO_ROOT)
            assert rel in names, f"{rel} is missing from the sdist"
    assert {"setup.py", "pyproject.toml", "README.md", "LICENSE"} <= names


def test_sdist_installs_and_runs(sdist, tmp_path):
    target = tmp_path / "site"
    env = {**os.environ, "MAMBARET_CUDA": "0"}  # the CPU build is what every user gets
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "--quiet",
                    "--target", str(target), sdist], check=True, env=env, capture_output=True)
    script = (
        "import numpy as np, mambaret as mr, sys\n"
        "assert mr.__file__.startswith(sys.argv[1]), mr.__file__\n"
        "from mambaret.arch.random_model import write_random_model\n"
        "path = write_random_model(sys.argv[2], seed=0, hidden_size=16, num_hidden_layers=1, vocab_size=50)\n"
        "enc = mr.MambaEncoder.from_pretrained(path, threads=1)\n"
        "print(enc.encode([[1, 2, 3]]).shape)\n"
        "import importlib.util; assert importlib.util.find_spec('mambaret.nn'), 'mambaret.nn not installed'\n"
        "assert importlib.util.find_spec('mambaret.app.serve.app'), 'mambaret.app.serve not installed'\n"
        "assert hasattr(mr._C, 'train_selective_scan_backward')\n"
        "import os\n"
        "for name in ('modules.json', '1_Pooling/config.json', '2_Normalize/config.json', 'model.safetensors'):\n"
        "    assert os.path.isfile(os.path.join(mr.DEFAULT_MODEL, name)), name  # the sentence-transformers files\n"
    )
    result = subprocess.run([sys.executable, "-c", script, str(target), str(tmp_path / "model")],
                            cwd=str(tmp_path), env={**env, "PYTHONPATH": str(target)}, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(1, 16)"
