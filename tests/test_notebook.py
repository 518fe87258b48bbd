"""Executes notebooks/quickstart.ipynb end to end, so that it cannot fall out of step with the API."""
from __future__ import annotations

import json
import os
import sys

import pytest

from conftest import REPO_ROOT, SHARED_DATA

NOTEBOOK = REPO_ROOT / "notebooks" / "quickstart.ipynb"
METRICS = ["ndcg@10", "mrr@10", "recall@100", "map"]
CELL_TIMEOUT_S = 300


def _require(module: str, why: str):
    return pytest.importorskip(module, reason=f"{module} is not installed ({why}; pip install 'mambaret[test]')")


@pytest.fixture
def python3_kernel(tmp_path, monkeypatch):
    """A 'python3' kernel that runs this interpreter and imports this checkout's mambaret."""
    _require("ipykernel", "it runs the notebook's kernel")
    spec_dir = tmp_path / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3", "language": "python"}))
    # JUPYTER_PATH is searched before the user's and the system's kernels, which may name
    # another interpreter
    monkeypatch.setenv("JUPYTER_PATH", os.pathsep.join(filter(None, [str(tmp_path),
                                                                    os.environ.get("JUPYTER_PATH")])))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO_ROOT),
                                                                   os.environ.get("PYTHONPATH")])))
    return "python3"


def _stream_text(cell) -> str:
    return "".join(out.get("text", "") for out in cell.get("outputs", []) if out.get("output_type") == "stream")


def test_quickstart_notebook_runs(python3_kernel):
    if not (SHARED_DATA / "vaswani").is_dir():
        pytest.skip(f"{SHARED_DATA} (Vaswani) not found: it sits beside the repository in CI only")
    nbformat = _require("nbformat", "it reads the notebook")
    nbclient = _require("nbclient", "it executes the notebook")
    _require("matplotlib", "the notebook plots")
    _require("bm25s", "the notebook runs the BM25 baseline")

    notebook = nbformat.read(str(NOTEBOOK), as_version=4)
    # read the results back as data rather than parsing the printed table
    notebook.cells.append(nbformat.v4.new_code_cell(
        "import json; print(json.dumps({'results': results, 'mambaret': mr.__file__}))"))
    nbclient.NotebookClient(notebook, kernel_name=python3_kernel, timeout=CELL_TIMEOUT_S,
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()

    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.execution_count for cell in code_cells), "a code cell did not run"
    assert not any(out.get("output_type") == "error" for cell in code_cells for out in cell.outputs)

    evaluation = [cell for cell in code_cells if "mr.evaluate(" in cell.source]
    assert len(evaluation) == 1, "the notebook should have one evaluation cell"
    table = _stream_text(evaluation[0])
    for name in METRICS + ["BM25"]:
        assert name in table, f"{name!r} missing from the evaluation output:\n{table}"

    report = json.loads(_stream_text(code_cells[-1]))
    assert os.path.samefile(os.path.dirname(report["mambaret"]), REPO_ROOT / "mambaret"), report["mambaret"]
    results = report["results"]
    assert len(results) == 2 and "BM25" in results
    for system, values in results.items():
        assert sorted(values) == sorted(METRICS), system
        assert all(0.0 <= v <= 1.0 for v in values.values()), (system, values)
    # BM25 on Vaswani scores about 0.35 nDCG@10; far less means loading or evaluation broke
    assert results["BM25"]["ndcg@10"] > 0.2, results["BM25"]
    # the packaged default model scores 0.35 nDCG@10 on Vaswani (README); far less means the
    # notebook no longer shows the real model
    dense = next(values for system, values in results.items() if system != "BM25")
    assert dense["ndcg@10"] > 0.3, dense

    plot = [cell for cell in code_cells if "plt." in cell.source]
    assert plot and any("image/png" in out.get("data", {}) for out in plot[0].outputs), "no figure was drawn"
