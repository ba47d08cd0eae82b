"""Notebook hygiene: clean sources, declared parameters, real reference outputs."""
from pathlib import Path

import nbformat
import papermill
import pytest

from common.reproduce import NOTEBOOKS_DIR, REQUIRED_PARAMETERS
from tools import nbtool

BOOKS = sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))


def test_there_are_notebooks():
    assert any(b.name.startswith("04_") for b in BOOKS)


@pytest.mark.parametrize("book", BOOKS, ids=lambda p: p.stem)
def test_notebook_is_clean(book: Path):
    assert nbtool.problems(nbformat.read(book, as_version=4)) == []


@pytest.mark.parametrize("book", BOOKS, ids=lambda p: p.stem)
def test_notebook_declares_parameters(book: Path):
    declared = set(papermill.inspect_notebook(str(book)))
    assert set(REQUIRED_PARAMETERS) <= declared


def test_strip_removes_everything_but_checked_outputs():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("print(1)"), nbformat.v4.new_code_cell("# NBVAL_CHECK_OUTPUT\nprint(2)")]
    for i, c in enumerate(nb.cells):
        c.execution_count = i + 1
        c.outputs = [nbformat.v4.new_output("stream", name="stdout", text=f"{i}\n"),
                     nbformat.v4.new_output("stream", name="stderr", text="progress\n")]
    assert len(nbtool.problems(nb)) == 2  # cell 0: a count and outputs; cell 1 is a checked cell
    nbtool.strip(nb)
    assert nb.cells[0].outputs == [] and [o.name for o in nb.cells[1].outputs] == ["stdout"]
    assert nb.cells[0].execution_count is None and nb.cells[1].execution_count == 2
    assert nbtool.problems(nb) == []
