"""Shared fixtures. Real-data tests need the offline mirror ($REPRO_DATA_MIRROR) or prepared data."""
from __future__ import annotations

import nbformat
import pytest

from common import data, reproduce


def _real_data_available() -> bool:
    mirror = data.mirror_dir()
    if mirror is not None:
        return (mirror / "mnist").is_dir()
    return (data.data_root() / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file()


needs_real_data = pytest.mark.skipif(
    not _real_data_available(),
    reason=f"no MNIST: set ${data.MIRROR_ENV} (CI sets it to ../shared/datasets)")


@pytest.fixture
def isolated_env(monkeypatch, tmp_path):
    """No profile/out/mirror variables leaking in from the caller; data root in tmp."""
    for var in ("REPRO_PROFILE", "REPRO_OUT", "REPRO_DEVICE", data.MIRROR_ENV):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv(data.ROOT_ENV, str(tmp_path / "data"))
    return tmp_path


# ------------------------------------------------ make reproduce on throw-away notebooks
PARAMS = "PROFILE = None\nOUT_DIR = None\n"


def write_book(path, body: str):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(PARAMS)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    books, res = tmp_path / "notebooks", tmp_path / "results"
    books.mkdir()
    res.mkdir()
    monkeypatch.setattr(reproduce, "NOTEBOOKS_DIR", books)
    monkeypatch.setattr(reproduce, "RESULTS_DIR", res)
    monkeypatch.delenv("REPRO_PROFILE", raising=False)
    return books, res


GOOD = ("import json, pathlib\n"
        "pathlib.Path(OUT_DIR, 'metrics.json').write_text(json.dumps({'profile': PROFILE, 'v': 1}))\n")


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: one thread avoids OpenMP thrashing on a shared 2-core machine (a module
    opts in with ``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
