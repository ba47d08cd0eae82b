"""Shared fixtures. Real-data tests need the offline mirror ($REPRO_DATA_MIRROR) or prepared data."""
from __future__ import annotations

import pytest

from common import data


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
