"""Data: MNIST and CIFAR-10 from an offline mirror or torchvision's download, subsets, batches.

Environment variables
---------------------
``REPRO_DATA_MIRROR``
    A folder laid out like ``shared/datasets/`` (``mnist/*.gz``,
    ``cifar10/cifar-10-python.tar.gz``). When set, files are copied / extracted from it exactly
    where torchvision would otherwise download them, and nothing is downloaded.
``REPRO_DATA_ROOT``
    Where prepared data lives (default ``<repo>/data``, git-ignored).

What is checked (data from elsewhere never executes code)
---------------------------------------------------------
* MNIST: the four ``.gz`` files must have torchvision's md5s (mirror and download alike).
* CIFAR-10: the archive (the mirror's, or the one downloaded into the data root) must have one
  of the md5s in :data:`CIFAR_ACCEPTED_MD5`: the official archive's or the shared mirror's
  documented rebuild's; any other is refused before anything is extracted. Extraction is ours,
  member by member: only regular files directly in ``cifar-10-batches-py/`` (and that folder);
  an absolute path, a ``..``, a link, a device or a duplicate refuses the archive, and nothing
  is written outside a temporary folder in the data root, renamed into place once complete.
* CIFAR-10 batches (freshly extracted or already in the data root) are read by a restricted
  unpickler that admits only numpy's array reconstruction (:data:`CIFAR_PICKLE_GLOBALS`);
  any other global (``os.system``, ``builtins.exec``, ...) is refused before it is called.
* Preparing holds an exclusive lock (``<root>/.prepare-cifar10.lock``, ``.prepare-mnist.lock``)
  and checks again once it has it, so processes sharing a fresh data root prepare it once.
* Every OSError while writing (copy, extract, lock) is one :class:`DataError` line naming the
  path and the fix (a writable folder with free space in ``$REPRO_DATA_ROOT``).

Splits follow the papers: MNIST train = the first 50,000 official training images,
valid = the last 10,000, test = the official 10,000 (``t10k``). CIFAR-10 train = the 50,000
``data_batch_*`` images, test = ``test_batch``.
"""
from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import os
import pickle
import shutil
import socket
import tarfile
import tempfile
import zlib
from pathlib import Path, PurePosixPath
from typing import IO, Any, Callable, Iterator, Literal, Mapping, Sequence
from urllib.error import URLError

import numpy as np
import torch

from .runtime import REPO_ROOT

try:
    import fcntl
except ImportError:   # not POSIX: no lock between processes (the project runs on Linux)
    fcntl = None      # type: ignore[assignment]

MIRROR_ENV = "REPRO_DATA_MIRROR"
ROOT_ENV = "REPRO_DATA_ROOT"
CIFAR_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR_DIR = "cifar-10-batches-py"
CIFAR_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                 "dog", "frog", "horse", "ship", "truck")
CIFAR_OFFICIAL_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR_MIRROR_MD5 = "1ebbcc703898ce46f21613afc1214153"
# md5 -> what it is. The only archives extracted; tests swap in a small crafted archive's md5.
CIFAR_ACCEPTED_MD5: Mapping[str, str] = {
    CIFAR_OFFICIAL_MD5: "the official archive",
    CIFAR_MIRROR_MD5: "the shared mirror's rebuild, shared/datasets/README.md",
}
MNIST_TRAIN_SIZE = 50_000
SPACE_NEEDED = "about 190 MB for CIFAR-10 (360 MB when downloaded), 70 MB for MNIST"


class DataError(RuntimeError):
    """Data missing, corrupt or inconsistent. The message says which file and how to fix it."""


def data_root() -> Path:
    return Path(os.environ.get(ROOT_ENV) or REPO_ROOT / "data").expanduser().resolve()


def mirror_dir() -> Path | None:
    value = os.environ.get(MIRROR_ENV, "").strip()
    return Path(value).expanduser().resolve() if value else None


def _remedies(what: str, expected: Sequence[str]) -> str:
    listing = "\n".join(f"  - {e}" for e in expected)
    return (
        f"{what}\nExpected files:\n{listing}\n"
        f"Remedies: (1) point ${MIRROR_ENV} at a folder laid out like shared/datasets/ "
        f"(e.g. export {MIRROR_ENV}=../shared/datasets), or (2) unset ${MIRROR_ENV} on a "
        f"machine with internet access so torchvision downloads the official files."
    )


def hash_file(path: Path, algorithm: str = "sha256", chunk: int = 1 << 20) -> str:
    """Hex digest of the file at ``path``, read in chunks (archives of hundreds of MB)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def md5sum(path: Path) -> str:
    return hash_file(path, "md5")


DOWNLOAD_TIMEOUT_S = 60.0   # a stalled connection fails instead of hanging


@contextlib.contextmanager
def _download_timeout(seconds: float = DOWNLOAD_TIMEOUT_S) -> Iterator[None]:
    """torchvision's downloads (urllib) give up after ``seconds`` without data."""
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


# --------------------------------------------------------------------------- writing
_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
# errors of a write step inside code we do not own (torchvision): everything else is a network
# or data problem there
_WRITE_ERRNOS = _DISK_FULL | {errno.EROFS, errno.EACCES, errno.EPERM}


def _write_error(path: Path, e: OSError, doing: str) -> DataError:
    """One line: what could not be written where, why, and the fix."""
    reason = e.strerror or str(e) or type(e).__name__
    if e.filename and str(e.filename) != str(path):
        reason += f": {e.filename}"
    if e.errno in _DISK_FULL:
        fix = (f"free space on that disk, or point ${ROOT_ENV} at a writable folder on a disk "
               f"with room ({SPACE_NEEDED})")
    else:
        fix = f"point ${ROOT_ENV} at a writable folder with free space ({SPACE_NEEDED})"
    return DataError(f"cannot write prepared data to {path} ({doing}: {type(e).__name__}: "
                     f"{reason}). Fix: {fix}.")


def _is_write_error(e: BaseException) -> bool:
    return isinstance(e, OSError) and not isinstance(e, URLError) and e.errno in _WRITE_ERRNOS


@contextlib.contextmanager
def _writing(path: Path, doing: str) -> Iterator[None]:
    """Any OSError of the enclosed write step becomes one DataError line (path and fix)."""
    try:
        yield
    except OSError as e:
        raise _write_error(path, e, doing) from e


def _writable(folder: Path) -> None:
    """Create ``folder``, or stop with a DataError saying how to choose another data root."""
    with _writing(folder, "create folder / write test file"):
        folder.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-")
        probe.close()


@contextlib.contextmanager
def _prepare_lock(root: Path, name: str) -> Iterator[None]:
    """Hold ``root/.prepare-<name>.lock`` exclusively (flock; released when the process dies).

    Processes preparing the same data root take turns; whoever comes second must check again
    whether the data are complete before writing anything.
    """
    _writable(root)
    path = root / f".prepare-{name}.lock"
    with _writing(path, "open lock file"):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0),
                     0o666)
    try:
        if fcntl is not None:
            with _writing(path, "lock"):
                fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)   # releases the lock


def _atomic_copy(src: Path, dst: Path) -> None:
    _writable(dst.parent)
    with _writing(dst, f"copy from {src}"):
        fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.")
        os.close(fd)
        try:
            shutil.copyfile(src, tmp)
            os.replace(tmp, dst)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


# --------------------------------------------------------------------------- MNIST
def _mnist_resources() -> list[tuple[str, str]]:
    from torchvision.datasets import MNIST

    return [(name, md5) for name, md5 in MNIST.resources]


def _open_mnist(root: Path) -> tuple[Any, Any]:
    """torchvision's train and test MNIST under ``root`` (downloading or extracting as needed)."""
    from torchvision.datasets import MNIST

    with _download_timeout():
        return MNIST(str(root), train=True, download=True), MNIST(str(root), train=False, download=True)


def _prepare_mnist(root: Path) -> tuple[Any, Any]:
    """:func:`prepare_mnist`'s work; returns the train and test datasets it read, so they are
    read once."""
    raw = root / "MNIST" / "raw"
    mirror = mirror_dir()
    resources = _mnist_resources()
    if mirror is not None:
        src_dir = mirror / "mnist"
        expected = [str(src_dir / name) for name, _ in resources]
        missing = [e for e in expected if not Path(e).is_file()]
        if missing:
            raise DataError(_remedies(f"MNIST files missing from the mirror {src_dir}: "
                                      f"{[Path(m).name for m in missing]}", expected))
    # torchvision decompresses into raw/ in place: one process at a time, readers included
    with _prepare_lock(root, "mnist"):
        if mirror is not None:
            for name, md5 in resources:
                src, dst = src_dir / name, raw / name
                if dst.is_file() and md5sum(dst) == md5:
                    continue
                got = md5sum(src)
                if got != md5:
                    raise DataError(f"corrupt MNIST file in the mirror: {src} has md5 {got}, "
                                    f"expected {md5} (torchvision's list). Replace it with the "
                                    f"official file.")
                _atomic_copy(src, dst)
        _writable(raw)
        try:
            try:
                return _open_mnist(root)
            except RuntimeError:
                # a damaged extracted copy beside intact, verified .gz files: re-extract it once
                if not all((raw / n).is_file() and md5sum(raw / n) == md5 for n, md5 in resources):
                    raise
                with _writing(raw, "remove the damaged extracted copy"):
                    for f in raw.iterdir():
                        if f.is_file() and not f.name.endswith(".gz"):
                            f.unlink()
                return _open_mnist(root)
        except OSError as e:
            if _is_write_error(e):   # disk full / read-only while torchvision extracts
                raise _write_error(raw, e, "extract MNIST") from e
            raise DataError(_remedies(f"could not prepare MNIST under {raw}: {e}",
                                      [name for name, _ in resources])) from e
        except RuntimeError as e:  # torchvision: "Error downloading ..." / "Dataset not found"
            if isinstance(e, DataError):
                raise
            raise DataError(_remedies(f"could not prepare MNIST under {raw}: {e}",
                                      [name for name, _ in resources])) from e


def prepare_mnist(root: Path | None = None) -> Path:
    """Make ``root/MNIST/raw`` hold the verified official files; return ``root``.

    With a mirror, the four ``.gz`` files are md5-checked against torchvision's own list and
    copied to ``MNIST/raw/``, so ``MNIST(download=True)`` verifies them and skips downloading.
    """
    root = Path(root) if root else data_root()
    _prepare_mnist(root)
    return root


@functools.lru_cache(maxsize=4)
def _mnist_arrays(root: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    tr, te = _prepare_mnist(Path(root))
    if len(tr.data) != 60_000 or len(te.data) != 10_000:
        raw = Path(root) / "MNIST" / "raw"
        raise DataError(f"the prepared MNIST files in {raw} hold {len(tr.data)} / {len(te.data)} "
                        f"images, expected 60,000 / 10,000: delete {raw} and run again.")
    return tr.data, tr.targets, te.data, te.targets


def load_mnist(split: Literal["train", "valid", "test", "train_full"],
               root: Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST ``(x, y)``: ``x`` float32 ``[N, 784]`` with pixels in [0, 1], ``y`` int64 ``[N]``.

    ``train`` = first 50,000 official training images, ``valid`` = last 10,000,
    ``train_full`` = all 60,000, ``test`` = the official 10,000.
    """
    xtr, ytr, xte, yte = _mnist_arrays(str(Path(root) if root else data_root()))
    if split == "train":
        x, y = xtr[:MNIST_TRAIN_SIZE], ytr[:MNIST_TRAIN_SIZE]
    elif split == "valid":
        x, y = xtr[MNIST_TRAIN_SIZE:], ytr[MNIST_TRAIN_SIZE:]
    elif split == "train_full":
        x, y = xtr, ytr
    elif split == "test":
        x, y = xte, yte
    else:
        raise ValueError(f"unknown MNIST split {split!r}; use train, valid, test or train_full")
    return x.reshape(len(x), -1).float().div_(255.0), y.long().clone()


def binarize(x: torch.Tensor, mode: Literal["dynamic", "threshold"] = "dynamic",
             generator: torch.Generator | None = None, threshold: float = 0.5) -> torch.Tensor:
    """Binarise pixel intensities in [0, 1].

    ``dynamic``: a fresh Bernoulli sample with p = intensity, to be called once per minibatch
    (Kingma et al. 2014; the authors' code). ``threshold``: ``x > threshold``.
    """
    if mode == "dynamic":
        return torch.bernoulli(x, generator=generator)
    if mode == "threshold":
        return (x > threshold).to(x.dtype)
    raise ValueError(f"unknown binarisation mode {mode!r}; use 'dynamic' or 'threshold'")


# --------------------------------------------------------------------------- CIFAR-10
def _cifar_complete(folder: Path) -> bool:
    return all((folder / b).is_file() for b in (*CIFAR_TRAIN_BATCHES, "test_batch"))


def prepare_cifar10(root: Path | None = None) -> Path:
    """Make ``root/cifar-10-batches-py`` exist; return that folder.

    The archive is the mirror's ``cifar10/cifar-10-python.tar.gz`` or, without a mirror, the
    official one downloaded into ``root`` (torchvision's ``download_url``, md5-checked). Either
    must have an md5 in :data:`CIFAR_ACCEPTED_MD5` (the mirror's is a documented rebuild, not the
    official bytes: shared/datasets/README.md); it is then extracted member by member
    (:func:`_extract_cifar`) into a temporary folder renamed into place once complete, under
    ``root/.prepare-cifar10.lock``.
    """
    root = Path(root) if root else data_root()
    target = root / CIFAR_DIR
    if _cifar_complete(target):
        return target
    mirror = mirror_dir()
    archive = None if mirror is None else mirror / "cifar10" / CIFAR_ARCHIVE
    if archive is not None and not archive.is_file():
        raise DataError(_remedies(f"CIFAR-10 archive missing from the mirror: {archive}",
                                  [str(archive)]))
    with _prepare_lock(root, "cifar10"):
        if _cifar_complete(target):   # another process prepared it while this one waited
            return target
        for stale in root.glob(".cifar-extract-*"):   # left by a process killed mid-way
            shutil.rmtree(stale, ignore_errors=True)
        if archive is None:
            archive = _download_cifar_archive(root)
        _check_cifar_archive(archive)
        _extract_cifar(archive, root, target)
    return target


def _download_cifar_archive(root: Path) -> Path:
    """The official archive in ``root`` (downloaded unless a verified copy is there)."""
    from torchvision.datasets.utils import download_url

    try:
        with _download_timeout():
            download_url(CIFAR_URL, str(root), CIFAR_ARCHIVE, CIFAR_OFFICIAL_MD5)
    except Exception as e:  # network errors come in many types
        if _is_write_error(e):
            raise _write_error(root / CIFAR_ARCHIVE, e, "download") from e
        raise DataError(_remedies(f"could not download CIFAR-10 into {root}: {e}",
                                  [f"cifar10/{CIFAR_ARCHIVE}"])) from e
    return root / CIFAR_ARCHIVE


def _check_cifar_archive(archive: Path) -> None:
    """Refuse (before extracting anything) an archive whose md5 is not an accepted one."""
    try:
        got = md5sum(archive)
    except OSError as e:
        raise DataError(f"cannot read the CIFAR-10 archive {archive} ({type(e).__name__}: {e}). "
                        f"Fix: make it readable, or replace it with a good copy.") from e
    if got not in CIFAR_ACCEPTED_MD5:
        accepted = " or ".join(f"{md5} ({what})" for md5, what in CIFAR_ACCEPTED_MD5.items())
        raise DataError(
            f"refused the CIFAR-10 archive {archive}: its md5 is {got}, accepted are only "
            f"{accepted}; nothing was extracted. Fix: replace it with the official "
            f"{CIFAR_ARCHIVE} or the shared mirror's copy, or unset ${MIRROR_ENV} to download the "
            f"official archive.")


def _cifar_member(member: tarfile.TarInfo, archive: Path) -> PurePosixPath:
    """The member's path if it may be extracted: ``cifar-10-batches-py`` itself (a folder) or a
    regular file directly in it. Anything else (absolute, ``..``, a link, a device, a fifo,
    another folder) refuses the whole archive, whatever tarfile's own filters would do."""
    name = member.name
    path = PurePosixPath(name)
    if name.startswith("/") or path.is_absolute():
        problem = "an absolute path"
    elif ".." in path.parts:
        problem = "a path with '..'"
    elif member.issym() or member.islnk():
        problem = f"a {'symbolic' if member.issym() else 'hard'} link to {member.linkname!r}"
    elif not (member.isreg() or member.isdir()):
        problem = "a device, fifo or other special file"
    elif not path.parts or path.parts[0] != CIFAR_DIR or len(path.parts) > 2 \
            or (member.isreg() and len(path.parts) != 2):
        problem = f"not a file directly in {CIFAR_DIR}/"
    else:
        return path
    raise DataError(f"refused the CIFAR-10 archive {archive}: member {name!r} is {problem}; "
                    f"nothing was written outside a temporary folder (removed). Fix: replace "
                    f"the archive with the official {CIFAR_ARCHIVE} or the shared mirror's copy.")


def _copy_member(src: IO[bytes], dest: Path, chunk: int = 1 << 20) -> None:
    """Write ``src`` to the new file ``dest`` (never through an existing file or link)."""
    with _writing(dest, "extract"):
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
                     | getattr(os, "O_NOFOLLOW", 0), 0o644)
    try:
        while True:
            block = src.read(chunk)   # archive errors propagate as they are
            if not block:
                break
            with _writing(dest, "extract"):
                view = memoryview(block)
                while view:
                    view = view[os.write(fd, view):]
    finally:
        with _writing(dest, "extract"):
            os.close(fd)


def _extract_cifar(archive: Path, root: Path, target: Path) -> None:
    """Extract the (md5-checked) ``archive`` into a temporary folder in ``root`` and rename its
    ``cifar-10-batches-py`` to ``target``. Every member is checked (:func:`_cifar_member`)
    before anything of it is written."""
    with _writing(root, "create a temporary folder"):
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=".cifar-extract-"))
    try:
        try:
            with tarfile.open(archive, "r:gz") as tar:
                seen: set[PurePosixPath] = set()
                for member in tar:   # streamed: checked one by one, before it is written
                    rel = _cifar_member(member, archive)
                    if rel in seen:
                        raise DataError(f"refused the CIFAR-10 archive {archive}: member "
                                        f"{member.name!r} appears twice. Fix: replace the archive "
                                        f"with the official {CIFAR_ARCHIVE} or the mirror's copy.")
                    seen.add(rel)
                    dest = tmp.joinpath(*rel.parts)
                    with _writing(dest, "create folder"):
                        (dest if member.isdir() else dest.parent).mkdir(exist_ok=True)
                    if member.isreg():
                        src = tar.extractfile(member)
                        assert src is not None
                        _copy_member(src, dest)
        except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
            # write errors became DataErrors above: these are reading the archive
            raise DataError(f"corrupt CIFAR-10 archive {archive}: {type(e).__name__}: {e}. "
                            f"Replace it with a good copy (md5 of the official archive: "
                            f"{CIFAR_OFFICIAL_MD5}, of the shared mirror's copy: "
                            f"{CIFAR_MIRROR_MD5}).") from e
        extracted = tmp / CIFAR_DIR
        if not extracted.is_dir():
            raise DataError(f"corrupt CIFAR-10 archive {archive}: no {CIFAR_DIR}/ inside")
        if not _cifar_complete(extracted):
            missing = [b for b in (*CIFAR_TRAIN_BATCHES, "test_batch")
                       if not (extracted / b).is_file()]
            raise DataError(f"corrupt CIFAR-10 archive {archive}: {CIFAR_DIR}/ lacks {missing}")
        with _writing(target, "move the extracted folder into place"):
            if target.is_symlink() or target.is_file():
                target.unlink()
            elif target.exists():   # an incomplete earlier copy (we hold the lock)
                shutil.rmtree(target)
            os.replace(extracted, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _numpy_reconstruct() -> Callable[..., Any]:
    try:
        from numpy._core.multiarray import _reconstruct   # numpy >= 2
    except ImportError:
        from numpy.core.multiarray import _reconstruct    # type: ignore[no-redef]
    return _reconstruct


# (module, name) -> the object. Exactly what the batches reference: the official archive
# (Python 2 pickles, numpy 1: numpy.core.multiarray) and the mirror's (protocol 4, numpy 2:
# numpy._core.multiarray) rebuild a uint8 array from bytes; dicts, lists, str and int need none.
CIFAR_PICKLE_GLOBALS: Mapping[tuple[str, str], Callable[[], Any]] = {
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
}


class _RefusedGlobal(pickle.UnpicklingError):
    pass


class _CifarUnpickler(pickle.Unpickler):
    """An unpickler that resolves only :data:`CIFAR_PICKLE_GLOBALS` (nothing is imported by
    name); any other global, e.g. ``os.system`` in a ``__reduce__`` payload, is refused before
    it could be called."""

    def find_class(self, module: str, name: str) -> Any:
        make = CIFAR_PICKLE_GLOBALS.get((module, name))
        if make is None:
            raise _RefusedGlobal(f"{module}.{name}")
        return make()


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch as (uint8 NHWC images, int64 labels), through :class:`_CifarUnpickler`."""
    try:
        with open(path, "rb") as f:
            d = _CifarUnpickler(f, encoding="latin1").load()
        if not isinstance(d, dict):
            raise TypeError(f"a {type(d).__name__}, not a dict")
        data = d["data"]
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8:
            raise TypeError(f"'data' is {type(data).__name__} {getattr(data, 'dtype', '')}, "
                            f"not a uint8 array")
        labels = np.asarray(d["labels"], dtype=np.int64)
    except _RefusedGlobal as e:
        allowed = ", ".join(f"{m}.{n}" for m, n in CIFAR_PICKLE_GLOBALS)
        raise DataError(f"refused to load CIFAR-10 batch {path}: it references the global {e}, "
                        f"which no CIFAR-10 batch needs (admitted: {allowed}); nothing in it ran. "
                        f"Fix: delete {path.parent} and prepare it again from a verified archive "
                        f"(official or the shared mirror's).") from e
    except Exception as e:  # noqa: BLE001 - malformed pickles fail in many ways
        raise DataError(f"corrupt CIFAR-10 batch {path}: {type(e).__name__}: {e}. Delete "
                        f"{path.parent} to re-extract it.") from e
    if data.ndim != 2 or data.shape[1] != 3072 or labels.ndim != 1 or len(data) != len(labels) \
            or (len(labels) and not 0 <= labels.min() <= labels.max() < len(CIFAR_CLASSES)):
        raise DataError(f"corrupt CIFAR-10 batch {path}: data shape {data.shape}, "
                        f"{len(labels)} labels. Delete {path.parent} to re-extract it.")
    # rows are R plane, then G, then B, each 32x32 row-major -> NHWC
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


@functools.lru_cache(maxsize=4)
def _cifar_arrays(root: str, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    folder = prepare_cifar10(Path(root))
    names = CIFAR_TRAIN_BATCHES if split == "train" else ("test_batch",)
    parts = [_read_cifar_batch(folder / n) for n in names]
    x = np.ascontiguousarray(np.concatenate([p[0] for p in parts]))
    y = np.concatenate([p[1] for p in parts])
    expected = 50_000 if split == "train" else 10_000
    if len(x) != expected or np.bincount(y, minlength=10).tolist() != [expected // 10] * 10:
        raise DataError(f"CIFAR-10 {split} in {folder} has {len(x)} images with class counts "
                        f"{np.bincount(y).tolist()}; expected {expected // 10} per class")
    return torch.from_numpy(x), torch.from_numpy(y)


def load_cifar10(split: Literal["train", "test"],
                 root: Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-10 ``(x, y)``: ``x`` uint8 NHWC ``[N, 32, 32, 3]``, ``y`` int64 ``[N]``."""
    if split not in ("train", "test"):
        raise ValueError(f"unknown CIFAR-10 split {split!r}; use train or test")
    x, y = _cifar_arrays(str(Path(root) if root else data_root()), split)
    return x.clone(), y.clone()


def to_float_nchw(x: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC in 0..255 -> float32 contiguous NCHW in [0, 1] (see :func:`runtime.memory_format`)."""
    if x.dtype != torch.uint8 or x.ndim != 4:
        raise ValueError(f"expected uint8 NHWC images, got {x.dtype} with shape {tuple(x.shape)}")
    return x.permute(0, 3, 1, 2).float().div_(255.0).contiguous()


# --------------------------------------------------------------------------- subsets
def class_counts(labels: torch.Tensor, num_classes: int = 10) -> list[int]:
    return torch.bincount(labels.cpu(), minlength=num_classes).tolist()


def imbalanced_subset(labels: torch.Tensor, counts: Mapping[int, int] | Sequence[int],
                      seed: int) -> torch.Tensor:
    """Sorted indices of a seeded random subset holding ``counts[c]`` examples of class ``c``.

    ``counts`` is a per-class sequence, or a mapping where absent classes keep all examples.
    """
    labels = labels.cpu()
    num_classes = int(labels.max()) + 1
    if isinstance(counts, Mapping):
        wanted = [counts.get(c, None) for c in range(num_classes)]
    else:
        if len(counts) != num_classes:
            raise ValueError(f"{len(counts)} counts given for {num_classes} classes")
        wanted = list(counts)
    g = torch.Generator().manual_seed(seed)
    picked = []
    for c, n in enumerate(wanted):
        idx = torch.nonzero(labels == c, as_tuple=False).flatten()
        n = len(idx) if n is None else int(n)
        if not 0 <= n <= len(idx):
            raise ValueError(f"class {c}: asked for {n} examples, only {len(idx)} exist")
        picked.append(idx[torch.randperm(len(idx), generator=g)[:n]])
    return torch.sort(torch.cat(picked)).values


def balanced_subset(labels: torch.Tensor, n_per_class: int, seed: int) -> torch.Tensor:
    """Sorted indices of a seeded subset with exactly ``n_per_class`` examples of every class."""
    num_classes = int(labels.max()) + 1
    return imbalanced_subset(labels, [n_per_class] * num_classes, seed)


# --------------------------------------------------------------------------- batches
class DeviceBatches:
    """Minibatches sliced from tensors that already live on the device.

    No DataLoader, no per-sample Python: each epoch draws one index permutation (or none when
    ``shuffle=False``) and yields tuples of slices. ``len()`` is the number of batches per epoch.
    """

    def __init__(self, *tensors: torch.Tensor, batch_size: int, shuffle: bool = True,
                 drop_last: bool = False, seed: int = 0) -> None:
        if not tensors:
            raise ValueError("DeviceBatches needs at least one tensor")
        n = len(tensors[0])
        if any(len(t) != n for t in tensors):
            raise ValueError(f"tensors differ in length: {[len(t) for t in tensors]}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.tensors, self.n, self.batch_size = tensors, n, batch_size
        self.shuffle, self.drop_last = shuffle, drop_last
        self.device = tensors[0].device
        self.generator = torch.Generator(device=self.device).manual_seed(seed)

    def __len__(self) -> int:
        return self.n // self.batch_size if self.drop_last else -(-self.n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        order = (torch.randperm(self.n, device=self.device, generator=self.generator)
                 if self.shuffle else None)
        for b in range(len(self)):
            lo, hi = b * self.batch_size, min((b + 1) * self.batch_size, self.n)
            if order is None:
                yield tuple(t[lo:hi] for t in self.tensors)
            else:
                idx = order[lo:hi]
                yield tuple(t[idx] for t in self.tensors)
