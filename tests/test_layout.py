"""The package's folders: the old import paths that the README and notebook name still reach the
same objects, mambaret.evaluate and mambaret.similarity are functions, and the library does not
import the command line."""
from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import mambaret as mr

REPO_ROOT = Path(__file__).resolve().parent.parent

OLD_PATHS = {
    "mambaret.bm25": "mambaret.evaluation.bm25",
    "mambaret.datasets": "mambaret.evaluation.datasets",
    "mambaret.distributed": "mambaret.encoding.distributed",
    "mambaret.quantization": "mambaret.search.quantization",
    "mambaret.random_model": "mambaret.arch.random_model",
    "mambaret.retrieval": "mambaret.search.retrieval",
}


@pytest.mark.parametrize("old, new", sorted(OLD_PATHS.items()))
def test_old_import_paths_re_export_the_public_names(old, new):
    shim, module = importlib.import_module(old), importlib.import_module(new)
    names = getattr(module, "__all__", None) or [n for n in vars(module) if not n.startswith("_")
                                                  and getattr(vars(module)[n], "__module__", None) == new]
    assert names and set(names) <= set(shim.__all__)
    for name in shim.__all__:
        assert getattr(shim, name) is getattr(module, name), name


def test_functions_not_modules():
    assert callable(mr.evaluate) and callable(mr.similarity)
    assert mr.datasets.load_beir is importlib.import_module("mambaret.evaluation.datasets").load_beir
    assert mr.quantization.calibrate_ranges is importlib.import_module("mambaret.search.quantization").calibrate_ranges


def test_the_library_does_not_import_the_command_line():
    code = ("import sys, mambaret, mambaret.encoding.corpus, mambaret.search.retrieval, mambaret.evaluation.bm25; "
            "assert not [m for m in sys.modules if m.startswith('mambaret.app')], 'mambaret.app imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(REPO_ROOT))


def test_architecture_registry_has_mamba_1():
    from mambaret.arch.registry import ARCHITECTURES

    assert list(ARCHITECTURES) == ["mamba"] and ARCHITECTURES["mamba"].name == "Mamba-1"
    with pytest.raises(ValueError, match=r"model_type 'mamba2' is not supported \(only Mamba-1, 'mamba'\)"):
        mr.parse_config({"model_type": "mamba2", "hidden_size": 8, "num_hidden_layers": 1})
