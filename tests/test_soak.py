"""A seconds-long run of bench/soak.py: 8 threads mixing encode, search, add and evaluate."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_short_soak_under_one_and_two_openmp_threads():
    done = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "soak.py"), "--seconds", "3",
                           "--omp", "1,2", "--warmup", "250"], capture_output=True, text=True, timeout=300)
    results = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(results) == 2, done.stdout + done.stderr
    for r in results:
        assert r["errors"] == [], r["errors"]
        assert all(count > 0 for count in r["calls_by_op"].values()), r["calls_by_op"]
        assert r["rss_ok"], r  # under 5 MB of growth after the warm-up, over the calls made
    assert done.returncode == 0, done.stderr
