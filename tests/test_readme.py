"""The README's code blocks run as written: every ```python block in order, as one session, and
every ```bash block, unless the line before it says `<!-- not run: why -->` (placeholder paths,
installs, long runs)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import pytest

from conftest import REPO_ROOT

README = REPO_ROOT / "README.md"
FENCE = re.compile(r"^```(\w*)\s*$")
NOT_RUN = re.compile(r"^<!-- not run: (.+\S) -->$")


def code_blocks():
    """(language, first line number, code, why it is not run or None) of every fenced block."""
    lines = README.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        opened = FENCE.match(lines[i])
        if not opened:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        before = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        marker = NOT_RUN.match(before.strip())
        blocks.append((opened.group(1), i + 1, "\n".join(lines[i + 1:end]), marker.group(1) if marker else None))
        i = end + 1
    return blocks


def test_every_block_runs_or_says_why_not():
    blocks = code_blocks()
    runnable = [b for b in blocks if b[0] in ("python", "bash") and b[3] is None]
    assert len([b for b in runnable if b[0] == "python"]) >= 5, "the README's Python snippets are not found"
    for language, line, _, why in blocks:
        if why is not None:
            assert language in ("python", "bash"), f"README line {line}: only python and bash blocks are run"


def test_readme_code_runs(tmp_path):
    """The Python blocks in one interpreter (a session: later blocks use earlier names), then the
    bash blocks; in a scratch folder, importing this checkout."""
    runnable = [b for b in code_blocks() if b[0] in ("python", "bash") and b[3] is None]
    python = [(line, code) for language, line, code, _ in runnable if language == "python"]
    script = ["import sys"]
    for line, code in python:
        script.append(f"print('README line {line}', file=sys.stderr, flush=True)")
        script.append(f"exec(compile({code!r}, 'README.md:{line}', 'exec'))")
    env = {**os.environ, "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    if any(language == "python" for language, *_ in runnable):
        done = subprocess.run([sys.executable, "-c", "\n".join(script)], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, f"a README Python block failed:\n{done.stderr[-4000:]}"
    for language, line, code, _ in runnable:
        if language == "bash":
            done = subprocess.run(["bash", "-euo", "pipefail", "-c", textwrap.dedent(code)], cwd=REPO_ROOT, env=env,
                                  capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, f"README line {line} failed:\n{done.stderr[-4000:]}"
