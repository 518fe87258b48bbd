"""The fuzz targets of bench/fuzz: seeds and past findings replayed, and a short libFuzzer run each."""
import glob
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FUZZ = os.path.join(ROOT, "bench", "fuzz")
sys.path.insert(0, FUZZ)
import targets  # noqa: E402

REGRESSIONS = sorted(glob.glob(os.path.join(FUZZ, "regressions", "*")))


@pytest.mark.parametrize("target", sorted(targets.TARGETS))
def test_seeds_are_read_without_findings(target):
    seeds = sorted(glob.glob(os.path.join(FUZZ, "corpus", target, "*")))
    assert seeds, f"no seed corpus for {target}"
    for path in seeds:
        with open(path, "rb") as f:
            targets.TARGETS[target](f.read())  # seeds are valid inputs: no exception at all


@pytest.mark.parametrize("path", REGRESSIONS, ids=[os.path.basename(p) for p in REGRESSIONS])
def test_past_findings_stay_fixed(path):
    target = os.path.basename(path).split("-")[0]
    with open(path, "rb") as f:
        data = f.read()
    with pytest.raises(targets.ALLOWED[target]):
        targets.TARGETS[target](data)


def test_every_target_has_a_seed_corpus_and_regressions_name_targets():
    assert sorted(os.listdir(os.path.join(FUZZ, "corpus"))) == sorted(targets.TARGETS)
    assert all(os.path.basename(p).split("-")[0] in targets.TARGETS for p in REGRESSIONS)


def test_short_libfuzzer_run_of_every_target(tmp_path):
    pytest.importorskip("atheris")
    done = subprocess.run([sys.executable, os.path.join(FUZZ, "run.py"), "--seconds", "1", "--jobs", "4",
                           "--artifacts", str(tmp_path)], capture_output=True, text=True, timeout=900)
    results = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert sorted(r["target"] for r in results) == sorted(targets.TARGETS), done.stdout + done.stderr
    unclean = [r for r in results if not r["clean"]]
    assert not unclean, unclean[0].get("log_tail", unclean[0])
    assert all(r["iterations"] > 0 for r in results)
