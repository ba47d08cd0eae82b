"""Data from elsewhere never executes code, and preparing data is safe to run twice at once.

Issue #23: a ``__reduce__`` payload in ``data_batch_1`` of a mirror's CIFAR archive ran a shell
command, because batches were read with ``pickle.load`` and the archive was not checksummed.
These tests build small CIFAR-like archives (a few images per batch) and accept their md5 by
swapping :data:`common.data.CIFAR_ACCEPTED_MD5`; the default set is checked to be the two real
archives only.
"""
from __future__ import annotations

import errno
import gzip
import hashlib
import io
import os
import pickle
import shutil
import struct
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import numpy as np
import pytest

from common import data
from common.runtime import REPO_ROOT

BATCHES = (*data.CIFAR_TRAIN_BATCHES, "test_batch")
_MIRROR = data.mirror_dir()   # read before isolated_env removes the variable
_REAL_ARCHIVE = None if _MIRROR is None else _MIRROR / "cifar10" / data.CIFAR_ARCHIVE


# ----------------------------------------------------------------- crafted batches and archives
def _batch(i: int, n: int = 20) -> dict:
    rng = np.random.default_rng(i)
    return {"batch_label": f"batch {i}", "labels": [int(v) for v in rng.integers(0, 10, n)],
            "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            "filenames": [f"img_{i}_{k}.png" for k in range(n)]}


def _batch_files(payload: object | None = None) -> dict[str, bytes]:
    """name -> pickled bytes of a small CIFAR-10 layout; ``payload`` goes into data_batch_1,
    first in its dict, so it would run before anything else is read."""
    files = {}
    for i, name in enumerate(BATCHES):
        d = _batch(i)
        if payload is not None and name == "data_batch_1":
            d = {"x": payload, **d}
        files[name] = pickle.dumps(d, protocol=4)
    files["batches.meta"] = pickle.dumps({"label_names": list(data.CIFAR_CLASSES)}, protocol=4)
    return files


def _expected_digest() -> str:
    h = hashlib.sha256()
    for i, _ in enumerate(BATCHES):
        d = _batch(i)
        h.update(d["data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).tobytes())
        h.update(np.asarray(d["labels"], dtype=np.int64).tobytes())
    return h.hexdigest()


def _add(tar: tarfile.TarFile, name: str, payload: bytes = b"", **attrs) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    info.mode = 0o644
    for k, v in attrs.items():
        setattr(info, k, v)
    tar.addfile(info, io.BytesIO(payload) if info.isreg() else None)


def _archive(path: Path, files: dict[str, bytes] | None = None, extra=()) -> Path:
    """A .tar.gz of ``cifar-10-batches-py/<files>``; ``extra`` = (name, bytes, attrs) members
    appended after them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        _add(tar, data.CIFAR_DIR, type=tarfile.DIRTYPE, mode=0o755)
        for name, blob in (files if files is not None else _batch_files()).items():
            _add(tar, f"{data.CIFAR_DIR}/{name}", blob)
        for name, blob, attrs in extra:
            _add(tar, name, blob, **attrs)
    return path


@pytest.fixture
def mirror(isolated_env, monkeypatch):
    """Make a mirror with a crafted archive; its md5 is accepted unless ``accept=False``."""
    def make(files=None, extra=(), accept=True) -> Path:
        archive = _archive(isolated_env / "mirror" / "cifar10" / data.CIFAR_ARCHIVE, files, extra)
        monkeypatch.setenv(data.MIRROR_ENV, str(isolated_env / "mirror"))
        if accept:
            monkeypatch.setattr(data, "CIFAR_ACCEPTED_MD5", {data.md5sum(archive): "test archive"})
        return archive
    return make


def _leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith(".cifar-extract-")) \
        if root.is_dir() else []


# ----------------------------------------------------------------- __reduce__ payloads
class _Reduce:
    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _payloads(marker: Path) -> dict[str, _Reduce]:
    return {
        "os.system": _Reduce(os.system, f"touch {marker}"),
        "builtins.exec": _Reduce(exec, f"open({str(marker)!r}, 'w').write('ran')"),
        "subprocess.call": _Reduce(subprocess.call, ["touch", str(marker)]),
    }


PAYLOADS = ("os.system", "builtins.exec", "subprocess.call")


def test_the_payloads_would_run_under_a_plain_pickle_load(tmp_path):
    """The payloads are real: plain ``pickle.load`` runs each (what the old reader did)."""
    for i, (name, payload) in enumerate(_payloads(tmp_path / "m").items()):
        marker = tmp_path / f"m{i}"
        pickle.loads(pickle.dumps(_payloads(marker)[name]))
        assert marker.exists(), name


@pytest.mark.parametrize("kind", PAYLOADS)
def test_payload_in_an_extracted_batch_is_refused(isolated_env, kind):
    marker = isolated_env / "marker"
    folder = isolated_env / "data" / data.CIFAR_DIR
    folder.mkdir(parents=True)
    for name, blob in _batch_files(_payloads(marker)[kind]).items():
        (folder / name).write_bytes(blob)
    with pytest.raises(data.DataError, match="refused to load CIFAR-10 batch") as e:
        data.load_cifar10("train")
    assert not marker.exists()
    msg = str(e.value)
    assert str(folder / "data_batch_1") in msg and "global" in msg and "delete" in msg.lower()
    refused = {"os.system": ("posix.system", "nt.system"), "builtins.exec": ("builtins.exec",),
               "subprocess.call": ("subprocess.call",)}[kind]
    assert any(r in msg for r in refused), msg


@pytest.mark.parametrize("kind", PAYLOADS)
def test_payload_in_a_mirror_archive_is_refused(isolated_env, mirror, kind):
    """Even an archive whose md5 is accepted cannot run code through its batches."""
    marker = isolated_env / "marker"
    mirror(_batch_files(_payloads(marker)[kind]))
    with pytest.raises(data.DataError, match="refused to load CIFAR-10 batch .*data_batch_1"):
        data.load_cifar10("train")
    assert not marker.exists()


def test_payload_archive_with_the_default_checksums_is_refused_unextracted(isolated_env, mirror):
    marker = isolated_env / "marker"
    archive = mirror(_batch_files(_payloads(marker)["os.system"]), accept=False)
    with pytest.raises(data.DataError, match="refused the CIFAR-10 archive"):
        data.load_cifar10("train")
    assert not marker.exists()
    assert not (isolated_env / "data" / data.CIFAR_DIR).exists()
    assert archive.is_file()


def test_other_globals_are_refused_and_only_numpy_arrays_admitted(tmp_path):
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({"data": np.zeros((1, 3072), np.uint8), "labels": [0],
                                   "extra": Path("x")}, protocol=4))
    with pytest.raises(data.DataError, match="global pathlib.PosixPath|global pathlib.WindowsPath"):
        data._read_cifar_batch(path)
    assert set(data.CIFAR_PICKLE_GLOBALS) == {
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct")}


def test_batch_that_is_not_a_uint8_dict_is_corrupt(tmp_path):
    path = tmp_path / "data_batch_1"
    for bad in ([1, 2], {"data": np.zeros((1, 3072), np.float32), "labels": [0]},
                {"data": np.zeros((1, 3072), np.uint8), "labels": [10]}):
        path.write_bytes(pickle.dumps(bad, protocol=4))
        with pytest.raises(data.DataError, match="corrupt CIFAR-10 batch"):
            data._read_cifar_batch(path)


def _py2_batch(images: np.ndarray, labels: list[int]) -> bytes:
    """A batch pickled the way the official archive's are (Python 2 cPickle, protocol 2,
    numpy 1.x: ``numpy.core.multiarray._reconstruct``, byte strings as BINSTRING), by hand,
    since Python 3 cannot write that form."""
    def s(b: bytes) -> bytes:
        return b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + struct.pack("<I", len(b)) + b

    def i(v: int) -> bytes:
        return b"J" + struct.pack("<i", v)

    dtype = (b"cnumpy\ndtype\n" + s(b"u1") + i(0) + i(1) + b"\x87R"
             + b"(" + i(3) + s(b"|") + b"NNN" + i(-1) + i(-1) + i(0) + b"tb")
    array = (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + i(0) + b"\x85"
             + s(b"b") + b"\x87R" + b"(" + i(1) + i(images.shape[0]) + i(images.shape[1])
             + b"\x86" + dtype + b"\x89" + s(images.tobytes()) + b"tb")
    label_list = b"](" + b"".join(i(v) for v in labels) + b"e"
    return (b"\x80\x02}(" + s(b"batch_label") + s(b"training batch 1 of 5") + s(b"labels")
            + label_list + s(b"data") + array + s(b"filenames") + b"](" + s(b"a.png") + b"e"
            + b"u.")


def test_official_python2_batch_format_loads(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (3, 3072), dtype=np.uint8)
    blob = _py2_batch(images, [3, 1, 4])
    ref = pickle.loads(blob, encoding="latin1")   # the hand-made pickle is well-formed
    assert np.array_equal(ref["data"], images) and ref["labels"] == [3, 1, 4]
    path = tmp_path / "data_batch_1"
    path.write_bytes(blob)
    x, y = data._read_cifar_batch(path)
    assert np.array_equal(x, images.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    assert y.tolist() == [3, 1, 4]


# ----------------------------------------------------------------- checksum
def test_default_accepted_digests_are_the_two_real_archives():
    assert set(data.CIFAR_ACCEPTED_MD5) == {"c58f30108f718f92721af3b95e74349a",
                                            "1ebbcc703898ce46f21613afc1214153"}


def test_bad_checksum_is_refused_before_extraction(isolated_env, mirror, monkeypatch):
    archive = mirror(accept=False)
    opened = []
    monkeypatch.setattr(tarfile, "open", lambda *a, **k: opened.append(a))
    with pytest.raises(data.DataError) as e:
        data.prepare_cifar10()
    msg = str(e.value)
    assert str(archive) in msg and data.md5sum(archive) in msg
    assert data.CIFAR_OFFICIAL_MD5 in msg and data.CIFAR_MIRROR_MD5 in msg and "Fix:" in msg
    assert "\n" not in msg
    assert opened == []
    root = isolated_env / "data"
    assert not (root / data.CIFAR_DIR).exists() and _leftovers(root) == []


def test_crafted_archive_loads_without_tarfiles_extract(isolated_env, mirror, monkeypatch):
    """The member checks are ours: tarfile's extract/extractall (and its filters) are not used."""
    def refuse(*a, **k):
        raise AssertionError("tarfile extraction used")
    monkeypatch.setattr(tarfile.TarFile, "extractall", refuse)
    monkeypatch.setattr(tarfile.TarFile, "extract", refuse)
    mirror()
    folder = data.prepare_cifar10()
    assert sorted(p.name for p in folder.iterdir()) == sorted([*BATCHES, "batches.meta"])
    h = hashlib.sha256()
    for name in BATCHES:
        x, y = data._read_cifar_batch(folder / name)
        h.update(x.tobytes())
        h.update(y.tobytes())
    assert h.hexdigest() == _expected_digest()
    assert _leftovers(isolated_env / "data") == []


def test_downloaded_archive_goes_through_the_same_checks(isolated_env, monkeypatch):
    """Without a mirror the official archive is downloaded into the root (torchvision's
    ``download_url``, md5-checked there) and then checked and extracted like a mirror's."""
    import torchvision.datasets.utils as tv_utils

    marker = isolated_env / "marker"
    crafted = _archive(isolated_env / "crafted.tar.gz", _batch_files(_payloads(marker)["builtins.exec"]))
    calls = []

    def fake_download(url, root, filename, md5):
        calls.append((url, filename, md5))
        shutil.copyfile(crafted, Path(root) / filename)

    monkeypatch.setattr(tv_utils, "download_url", fake_download)
    with pytest.raises(data.DataError, match="refused the CIFAR-10 archive"):
        data.prepare_cifar10()   # default digests: the crafted download is not the official one
    assert calls == [(data.CIFAR_URL, data.CIFAR_ARCHIVE, data.CIFAR_OFFICIAL_MD5)]
    monkeypatch.setattr(data, "CIFAR_ACCEPTED_MD5", {data.md5sum(crafted): "test archive"})
    with pytest.raises(data.DataError, match="refused to load CIFAR-10 batch .*global builtins.exec"):
        data.load_cifar10("train")
    assert not marker.exists()

    def offline(*a, **k):
        raise OSError(errno.ENETUNREACH, "Network is unreachable")

    shutil.rmtree(isolated_env / "data" / data.CIFAR_DIR)
    (isolated_env / "data" / data.CIFAR_ARCHIVE).unlink()
    monkeypatch.setattr(tv_utils, "download_url", offline)
    with pytest.raises(data.DataError, match="could not download CIFAR-10(.|\n)*REPRO_DATA_MIRROR"):
        data.prepare_cifar10()


def test_incomplete_folder_and_stale_temporaries_are_replaced(isolated_env, mirror):
    mirror()
    root = isolated_env / "data"
    (root / data.CIFAR_DIR).mkdir(parents=True)
    (root / data.CIFAR_DIR / "data_batch_1").write_bytes(b"half")   # no other batches
    (root / ".cifar-extract-killed" / data.CIFAR_DIR).mkdir(parents=True)
    folder = data.prepare_cifar10()
    assert data._read_cifar_batch(folder / "data_batch_1")[0].shape == (20, 32, 32, 3)
    assert _leftovers(root) == []


# ----------------------------------------------------------------- safe extraction
def _bad_members(tmp: Path) -> dict[str, tuple]:
    outside = tmp / "outside.txt"
    return {
        "dotdot": ("../evil", b"x", {}),
        "dotdot-inside": (f"{data.CIFAR_DIR}/../../evil", b"x", {}),
        "absolute": (str(tmp / "abs-evil"), b"x", {}),
        "symlink": (f"{data.CIFAR_DIR}/link", b"", {"type": tarfile.SYMTYPE, "linkname": str(outside)}),
        "symlink-dotdot": (f"{data.CIFAR_DIR}/up", b"", {"type": tarfile.SYMTYPE, "linkname": "../.."}),
        "hardlink": (f"{data.CIFAR_DIR}/hard", b"", {"type": tarfile.LNKTYPE, "linkname": "/etc/passwd"}),
        "device": (f"{data.CIFAR_DIR}/dev", b"", {"type": tarfile.CHRTYPE, "devmajor": 1, "devminor": 3}),
        "fifo": (f"{data.CIFAR_DIR}/fifo", b"", {"type": tarfile.FIFOTYPE}),
        "elsewhere": ("evil.txt", b"x", {}),
        "subfolder": (f"{data.CIFAR_DIR}/sub/evil", b"x", {}),
        "duplicate": (f"{data.CIFAR_DIR}/data_batch_1", b"x", {}),
    }


@pytest.mark.parametrize("case", sorted(_bad_members(Path("/x"))))
def test_archive_with_an_unsafe_member_is_refused(isolated_env, mirror, case):
    name, blob, attrs = _bad_members(isolated_env)[case]
    mirror(extra=[(name, blob, attrs)])
    # a link followed by a file of the same name would write through the link
    with pytest.raises(data.DataError, match="refused the CIFAR-10 archive") as e:
        data.prepare_cifar10()
    assert repr(name) in str(e.value)
    root = isolated_env / "data"
    assert not (root / data.CIFAR_DIR).exists() and _leftovers(root) == []
    for p in (isolated_env / "evil", isolated_env / "abs-evil", isolated_env / "outside.txt",
              isolated_env / "data" / "evil", isolated_env / "data" / "evil.txt"):
        assert not p.exists(), p


def test_symlink_then_file_does_not_write_through(isolated_env, mirror):
    outside = isolated_env / "outside.txt"
    mirror(extra=[(f"{data.CIFAR_DIR}/x", b"", {"type": tarfile.SYMTYPE, "linkname": str(outside)}),
                  (f"{data.CIFAR_DIR}/x", b"overwritten", {})])
    with pytest.raises(data.DataError, match="link"):
        data.prepare_cifar10()
    assert not outside.exists()


# ----------------------------------------------------------------- real mirror
@pytest.mark.skipif(_REAL_ARCHIVE is None or not _REAL_ARCHIVE.is_file(),
                    reason="needs the offline mirror's CIFAR-10 archive")
def test_real_mirror_archive_passes_every_check(isolated_env, monkeypatch):
    """Default checksums, member checks and the restricted unpickler accept the real archive;
    its batches reference only numpy's array reconstruction."""
    monkeypatch.setenv(data.MIRROR_ENV, str(_MIRROR))
    seen = set()

    class Recording(data._CifarUnpickler):
        def find_class(self, module, name):
            seen.add((module, name))
            return super().find_class(module, name)

    monkeypatch.setattr(data, "_CifarUnpickler", Recording)
    data._cifar_arrays.cache_clear()
    try:
        x, y = data.load_cifar10("train")
        xt, yt = data.load_cifar10("test")
    finally:
        data._cifar_arrays.cache_clear()
    assert x.shape == (50_000, 32, 32, 3) and xt.shape == (10_000, 32, 32, 3)
    assert data.class_counts(y) == [5000] * 10 and data.class_counts(yt) == [1000] * 10
    assert seen and seen <= set(data.CIFAR_PICKLE_GLOBALS), seen
    assert sorted(p.name for p in (isolated_env / "data").iterdir()) == [
        ".prepare-cifar10.lock", data.CIFAR_DIR]


# ----------------------------------------------------------------- two processes, one root
# Each racer waits at a start barrier, then prepares. Entering the step that writes (tarfile.open
# of the archive for CIFAR-10, torchvision's MNIST for MNIST), it waits up to HOLD seconds for the
# other racer to be in that step too: without the lock both are, deterministically (old code:
# two extractions, the second deleting the folder the first reads); with it, never.
RACER = textwrap.dedent('''
    import hashlib, os, sys, tarfile, time
    from pathlib import Path
    what, barrier, log, md5 = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
    HOLD = 2.0
    from common import data

    def note(line):
        with open(log, "a") as f:
            f.write(f"{os.getpid()} {line}\\n")

    def wait_for(tag, parties, timeout):
        deadline = time.monotonic() + timeout
        while len(list(barrier.glob(tag + ".*"))) < parties and time.monotonic() < deadline:
            time.sleep(0.01)
        return len(list(barrier.glob(tag + ".*"))) >= parties

    def exclusive(tag, func):
        def wrapped(*a, **k):
            mine = barrier / f"{tag}.{os.getpid()}"
            mine.touch()
            note(f"enter {tag} overlap={wait_for(tag, 2, HOLD)}")
            try:
                return func(*a, **k)
            finally:
                mine.unlink()
        return wrapped

    if what == "cifar":
        data.CIFAR_ACCEPTED_MD5 = {md5: "test archive"}
        real_open = tarfile.open
        extract = exclusive("extract", real_open)
        tarfile.open = lambda name, *a, **k: (extract if str(name).endswith(data.CIFAR_ARCHIVE)
                                              else real_open)(name, *a, **k)
    else:
        from torchvision.datasets import MNIST
        MNIST.resources = [tuple(r.split(":")) for r in md5.split(",")]
        data._open_mnist = exclusive("open", data._open_mnist)
    (barrier / f"start.{os.getpid()}").touch()
    assert wait_for("start", 2, 120), "the other racer never started"
    h = hashlib.sha256()
    if what == "cifar":
        folder = data.prepare_cifar10()
        for b in (*data.CIFAR_TRAIN_BATCHES, "test_batch"):
            x, y = data._read_cifar_batch(folder / b)
            h.update(x.tobytes()); h.update(y.tobytes())
    else:
        tr, te = data._prepare_mnist(data.data_root())
        for t in (tr.data, tr.targets, te.data, te.targets):
            h.update(t.numpy().tobytes())
    print("DIGEST", h.hexdigest())
''')


def _race(tmp: Path, what: str, mirror_dir: Path, key: str) -> tuple[list[str], list[str]]:
    barrier, log = tmp / "barrier", tmp / "log"
    barrier.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("REPRO_")}
    env.update({data.ROOT_ENV: str(tmp / "data"), data.MIRROR_ENV: str(mirror_dir),
                "PYTHONPATH": str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")})
    procs = [subprocess.Popen([sys.executable, "-c", RACER, what, str(barrier), str(log), key],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, f"a racer failed:\n{out}\n{err}"
    digests = [line.split()[1] for out, _ in outs for line in out.splitlines()
               if line.startswith("DIGEST")]
    return digests, log.read_text().splitlines() if log.exists() else []


def test_two_processes_prepare_cifar_in_one_fresh_root(isolated_env):
    archive = _archive(isolated_env / "mirror" / "cifar10" / data.CIFAR_ARCHIVE)
    digests, log = _race(isolated_env, "cifar", isolated_env / "mirror", data.md5sum(archive))
    assert digests == [_expected_digest()] * 2
    assert not any("overlap=True" in line for line in log), log
    assert len([line for line in log if "enter extract" in line]) == 1, log   # extracted once
    root = isolated_env / "data"
    assert sorted(p.name for p in root.iterdir()) == [".prepare-cifar10.lock", data.CIFAR_DIR]


def _idx(magic: int, array: np.ndarray) -> bytes:
    return struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape) \
        + array.astype(np.uint8).tobytes()


def _mnist_mirror(folder: Path) -> str:
    """Four small MNIST files (idx, gzipped) under ``folder/mnist``; returns their
    ``name:md5`` list as torchvision's resources would hold it."""
    rng = np.random.default_rng(0)
    (folder / "mnist").mkdir(parents=True)
    resources = []
    for prefix, n in (("train", 300), ("t10k", 100)):
        for kind, magic, arr in (("images", 2051, rng.integers(0, 256, (n, 28, 28))),
                                 ("labels", 2049, rng.integers(0, 10, n))):
            name = f"{prefix}-{kind}-idx{3 if kind == 'images' else 1}-ubyte.gz"
            (folder / "mnist" / name).write_bytes(gzip.compress(_idx(magic, arr), mtime=0))
            resources.append(f"{name}:{data.md5sum(folder / 'mnist' / name)}")
    return ",".join(resources)


def test_two_processes_prepare_mnist_in_one_fresh_root(isolated_env):
    key = _mnist_mirror(isolated_env / "mirror")
    digests, log = _race(isolated_env, "mnist", isolated_env / "mirror", key)
    assert len(digests) == 2 and digests[0] == digests[1]
    assert not any("overlap=True" in line for line in log), log
    assert len([line for line in log if "enter open" in line]) == 2, log


# ----------------------------------------------------------------- OSErrors while writing
def _one_line_write_error(msg: str, path: Path) -> None:
    assert "\n" not in msg, msg
    assert f"cannot write prepared data to {path}" in msg, msg
    assert data.ROOT_ENV in msg and "Fix:" in msg, msg


def test_disk_full_while_extracting_is_one_line(isolated_env, mirror, monkeypatch):
    mirror()
    real_open = os.open
    hit = []

    def full(path, flags, *a, **k):
        if ".cifar-extract-" in str(path) and flags & os.O_CREAT:
            hit.append(path)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real_open(path, flags, *a, **k)

    monkeypatch.setattr(os, "open", full)
    with pytest.raises(data.DataError) as e:
        data.prepare_cifar10()
    msg = str(e.value)
    _one_line_write_error(msg, Path(hit[0]))
    assert "free space" in msg and "No space left" in msg
    root = isolated_env / "data"
    assert not (root / data.CIFAR_DIR).exists() and _leftovers(root) == []


def test_read_only_root_while_renaming_is_one_line(isolated_env, mirror, monkeypatch):
    mirror()
    real_replace = os.replace

    def ro(src, dst, *a, **k):
        if str(dst).endswith(data.CIFAR_DIR):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return real_replace(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", ro)
    with pytest.raises(data.DataError) as e:
        data.prepare_cifar10()
    _one_line_write_error(str(e.value), isolated_env / "data" / data.CIFAR_DIR)
    assert "writable folder" in str(e.value)
    assert _leftovers(isolated_env / "data") == []


def test_lock_errors_are_one_line(isolated_env, mirror, monkeypatch):
    mirror()
    lock = isolated_env / "data" / ".prepare-cifar10.lock"
    real_open = os.open

    def ro(path, flags, *a, **k):
        if str(path) == str(lock):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *a, **k)

    monkeypatch.setattr(os, "open", ro)
    with pytest.raises(data.DataError) as e:
        data.prepare_cifar10()
    _one_line_write_error(str(e.value), lock)
    monkeypatch.setattr(os, "open", real_open)

    if data.fcntl is None:
        return

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(data.fcntl, "flock", no_locks)
    with pytest.raises(data.DataError) as e:
        data.prepare_cifar10()
    _one_line_write_error(str(e.value), lock)


@pytest.fixture
def mnist_mirror(isolated_env, monkeypatch):
    key = _mnist_mirror(isolated_env / "mirror")
    monkeypatch.setattr(data, "_mnist_resources", lambda: [tuple(r.split(":")) for r in key.split(",")])
    monkeypatch.setenv(data.MIRROR_ENV, str(isolated_env / "mirror"))
    return isolated_env / "data" / "MNIST" / "raw"


def test_read_only_root_while_copying_mnist_is_one_line(mnist_mirror, monkeypatch):
    def ro(src, dst, *a, **k):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dst))

    monkeypatch.setattr(shutil, "copyfile", ro)
    with pytest.raises(data.DataError) as e:
        data.prepare_mnist()
    msg = str(e.value)
    _one_line_write_error(msg, mnist_mirror)
    assert "Read-only file system" in msg and "writable folder" in msg


def test_disk_full_while_torchvision_extracts_mnist_is_one_line(mnist_mirror, monkeypatch):
    def full(root):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(mnist_mirror / "t10k-images-idx3-ubyte"))

    monkeypatch.setattr(data, "_open_mnist", full)
    with pytest.raises(data.DataError) as e:
        data.prepare_mnist()
    _one_line_write_error(str(e.value), mnist_mirror)
    assert str(mnist_mirror / "t10k-images-idx3-ubyte") in str(e.value)
    assert "free space" in str(e.value)
