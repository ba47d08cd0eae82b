"""The device payload: wheels pinned from the lock file, parts that fit a call, exact reassembly."""
from __future__ import annotations

import json
import os

import pytest

from tools import device_payload as dp


def test_wheels_are_the_locked_versions_of_what_the_device_lacks():
    specs = dp.wheel_specs()
    names = {s.split("==")[0].lower().replace("_", "-") for s in specs}
    assert {"papermill", "nbclient", "nbformat", "ipykernel", "nbconvert", "pyzmq"} <= names
    assert not names & {"torch", "torchvision", "numpy", "pandas", "matplotlib"}   # on the image
    assert all("==" in s for s in specs)


def test_split_parts_fit_and_reassemble_exactly(tmp_path):
    src = tmp_path / "archive.tar.gz"
    src.write_bytes(os.urandom(5 * 2 ** 20 + 123))
    folders = dp.split_file(src, tmp_path / "payload", part_bytes=2 ** 20)
    assert len(folders) == 6
    manifest = json.loads((folders[0] / dp.MANIFEST).read_text())
    assert [p["bytes"] for p in manifest["parts"]] == [2 ** 20] * 5 + [123]
    assert manifest["bytes"] == src.stat().st_size and manifest["sha256"] == dp.sha256(src)
    gathered = tmp_path / "there"
    gathered.mkdir()
    for folder in folders:                       # what the device calls copy together
        for f in folder.iterdir():
            (gathered / f.name).write_bytes(f.read_bytes())
    out = dp.assemble(gathered, tmp_path / "rebuilt.tar.gz")
    assert out.read_bytes() == src.read_bytes()

    part = gathered / manifest["parts"][2]["name"]
    data = bytearray(part.read_bytes())
    data[10] ^= 1
    part.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="part archive.tar.gz.part02 is corrupt"):
        dp.assemble(gathered, tmp_path / "again.tar.gz")
    assert not (tmp_path / "again.tar.gz").exists()
    part.unlink()
    with pytest.raises(FileNotFoundError, match="part02 missing"):
        dp.assemble(gathered, tmp_path / "again.tar.gz")


def test_plan_names_every_part_within_the_carry_limit(tmp_path):
    (tmp_path / "whl").mkdir()
    (tmp_path / "mnist").mkdir()
    src = tmp_path / "a.bin"
    src.write_bytes(b"x" * 3000)
    dp.split_file(src, tmp_path, part_bytes=1000)
    text = dp.plan(tmp_path)
    assert all(f'carry [".payload/cifar-{k}"]' in text for k in range(3))
    sizes = [float(x.split(" MiB")[0]) for x in text.split("(about ")[1:]]
    assert sizes and max(sizes) < 64


def test_plan_warns_when_a_part_and_the_tree_exceed_one_call(tmp_path):
    for d in ("whl", "mnist", "cifar-0"):
        (tmp_path / d).mkdir()
    with open(tmp_path / "cifar-0" / "a.part00", "wb") as f:   # sparse: sized, not written
        f.truncate(int((dp.CARRY_MIB - dp.tree_mib() + 1) * 2 ** 20))
    (tmp_path / "cifar-0" / dp.MANIFEST).write_text(json.dumps({"parts": [{"name": "a.part00"}]}))
    text = dp.plan(tmp_path)
    assert text.startswith("!! a call above carries") and "--part-mib" in text
    assert "REPRO_COMMIT=" in text and "timeout 560" in text


def _payload(root, size: int, part_bytes: int):
    for d in ("whl", "mnist"):
        (root / d).mkdir(parents=True, exist_ok=True)
    src = root / "archive.tar.gz"
    if not src.exists():
        src.write_bytes(os.urandom(size))
    return src, dp.split_file(src, root, part_bytes=part_bytes)


def test_rebuild_with_larger_parts_removes_the_old_ones(tmp_path):
    """`build --part-mib 40` after a default build: no stale parts for plan to list or the
    device to copy beside the new ones (they made `assemble` report part00 corrupt)."""
    root = tmp_path / "payload"
    _payload(root, 5000, 1000)                                   # 5 parts
    src, folders = _payload(root, 5000, 2500)                    # rebuilt: 2 parts
    assert sorted(p.name for p in root.glob("cifar-*")) == ["cifar-0", "cifar-1"]
    assert dp.check_payload(root) == folders
    text = dp.plan(root)
    assert 'carry [".payload/cifar-1"]' in text and "cifar-2" not in text
    gathered = tmp_path / "there"                                # the runbook's cp of every part
    gathered.mkdir()
    for folder in sorted(root.glob("cifar-*")):
        for f in folder.iterdir():
            (gathered / f.name).write_bytes(f.read_bytes())
    assert dp.assemble(gathered, tmp_path / "rebuilt").read_bytes() == src.read_bytes()


def test_plan_without_a_build_or_with_mixed_parts_says_build(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match=r"missing whl/, mnist/, cifar-<k>/.*device_payload.py build"):
        dp.plan(tmp_path)
    with pytest.raises(SystemExit, match="plan: no complete payload.*build"):
        dp.main(["plan", "--out", str(tmp_path)])
    _payload(tmp_path, 3000, 1000)
    assert "Call 4" in dp.plan(tmp_path)
    (tmp_path / "cifar-1" / dp.MANIFEST).write_text(json.dumps({"parts": []}))   # another build's
    with pytest.raises(ValueError, match="not one set.*build"):
        dp.plan(tmp_path)
