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


def test_architecture_registry_runs_three_model_types():
    from mambaret.arch.registry import ARCHITECTURES

    assert {k: a.name for k, a in ARCHITECTURES.items()} == {"mamba": "Mamba-1", "mamba2": "Mamba-2",
                                                             "falcon_mamba": "FalconMamba"}
    with pytest.raises(ValueError, match=r"model_type 'jamba' \(a hybrid with attention layers\) is not supported; "
                                         r"mambaret runs Mamba-1 'mamba', Mamba-2 'mamba2', FalconMamba"):
        mr.parse_config({"model_type": "jamba", "hidden_size": 8, "num_hidden_layers": 1})
    with pytest.raises(ValueError, match=r"model_type 'bert' is not supported"):
        mr.parse_config({"model_type": "bert", "hidden_size": 8, "num_hidden_layers": 1})
