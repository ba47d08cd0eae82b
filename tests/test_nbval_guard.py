"""The nbval run fails fast, naming notebook and cell, when a kernel dies or a cell hangs."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from common.runtime import REPO_ROOT


def _notebook(path: Path, *sources: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    nbformat.write(nb, path)
    return path


def _nbval(book: Path, cell_timeout: int, limit: float) -> tuple[subprocess.CompletedProcess, float]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    t0 = time.monotonic()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "tools.nbval_guard",
             "--nbval-lax", "--nbval-current-env", f"--nbval-cell-timeout={cell_timeout}",
             str(book)], cwd=book.parent, env=env, capture_output=True, text=True, timeout=limit)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"nbval still running after {limit:.0f} s:\n{e.stdout}")
    return proc, time.monotonic() - t0


def test_dead_kernel_fails_the_cell_within_seconds(tmp_path):
    book = _notebook(tmp_path / "dies.ipynb", "print('before')", "import os; os.abort()",
                     "print('after')")
    proc, took = _nbval(book, cell_timeout=600, limit=180)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "the kernel died" in out and "dies.ipynb::Cell 1" in out, out
    assert "killed by signal 6" in out, out
    assert "2 failed, 1 passed" in out, out
    assert took < 120, f"took {took:.0f} s although the cell timeout is 600 s"


def test_stuck_cell_fails_after_the_cell_timeout(tmp_path):
    book = _notebook(tmp_path / "hangs.ipynb", "import time; time.sleep(3600)", "print('next')")
    proc, took = _nbval(book, cell_timeout=5, limit=180)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "hangs.ipynb::Cell 0" in out and "Timeout of 5 seconds exceeded" in out, out
    assert took < 120
