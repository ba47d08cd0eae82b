"""common.training checkpoints: plain data only (``weights_only=True``), exact round trip."""
from __future__ import annotations

import pathlib
import pickle
import re
from typing import Any

import pytest
import torch

from common import training


class _TouchOnLoad:
    """Unpickling this calls ``marker.touch()``: what a crafted checkpoint could do."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[pathlib.Path]]:
        return (pathlib.Path.touch, (self.marker,))


def test_crafted_checkpoint_is_refused_without_running_its_code(tmp_path):
    marker, ck = tmp_path / "pwned", tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.zeros(2)}, "payload": _TouchOnLoad(marker)}, ck)
    with pytest.raises(pickle.UnpicklingError,
                       match=f"{re.escape(str(ck))} is not a plain-data checkpoint") as err:
        training.load_checkpoint(ck)
    assert isinstance(err.value, training.UnsafeCheckpointError)
    assert not marker.exists()


def test_save_refuses_state_that_could_not_be_loaded_back(tmp_path):
    with pytest.raises(TypeError, match="non-plain objects.*PosixPath"):
        training.save_checkpoint(tmp_path / "x.pt", {"path": pathlib.Path("a")})
    assert not (tmp_path / "x.pt").exists()


def test_representative_state_round_trips_exactly(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    gen = torch.Generator().manual_seed(7)
    plain = {"epoch": 3, "lr": 0.1, "key": "abc", "done": False, "none": None, "pair": (1, "a"),
             "history": [{"epoch": 1, "loss": [1.5, 2.25]}]}
    tensors = {"model": model.state_dict(), "opt": opt.state_dict(),
               "rng": torch.get_rng_state(), "gen": gen.get_state()}
    ck = training.save_checkpoint(tmp_path / "sub" / "ok.pt", {**plain, **tensors})
    got = training.load_checkpoint(ck)
    assert got is not None and {k: got.pop(k) for k in plain} == plain
    torch.testing.assert_close(got, tensors, rtol=0, atol=0)
    assert training.load_checkpoint(tmp_path / "missing.pt") is None
