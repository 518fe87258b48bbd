"""A short run of bench/soak.py: 8 threads mixing encode, search, add and evaluate."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_short_soak_under_one_and_two_openmp_threads():
    # a number of calls, not a time, so that a slow machine (or a sanitizer build) runs the same test
    done = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "soak.py"), "--calls", "800",
                           "--seconds", "240", "--omp", "1,2", "--warmup", "200"],
                          capture_output=True, text=True, timeout=600)
    results = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(results) == 2, done.stdout + done.stderr
    for r in results:
        assert r["errors"] == [], r["errors"]
        assert r["calls"] >= 800 and all(count > 0 for count in r["calls_by_op"].values()), r
        # under 5 MB of growth after the warm-up; AddressSanitizer's quarantine keeps freed memory
        if "libasan" not in os.environ.get("LD_PRELOAD", ""):
            assert r["rss_ok"], r
