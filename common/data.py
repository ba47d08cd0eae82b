"""Data: MNIST and CIFAR-10 from an offline mirror or torchvision's download, subsets, batches.

Environment variables
---------------------
``REPRO_DATA_MIRROR``
    A folder laid out like ``shared/datasets/`` (``mnist/*.gz``,
    ``cifar10/cifar-10-python.tar.gz``). When set, files are copied / extracted from it exactly
    where torchvision would otherwise download them, and nothing is downloaded.
``REPRO_DATA_ROOT``
    Where prepared data lives (default ``<repo>/data``, git-ignored).

Splits follow the papers: MNIST train = the first 50,000 official training images,
valid = the last 10,000, test = the official 10,000 (``t10k``). CIFAR-10 train = the 50,000
``data_batch_*`` images, test = ``test_batch``.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import pickle
import shutil
import socket
import tarfile
import tempfile
import zlib
from pathlib import Path
from typing import Any, Iterator, Literal, Mapping, Sequence

import numpy as np
import torch

from .runtime import REPO_ROOT

MIRROR_ENV = "REPRO_DATA_MIRROR"
ROOT_ENV = "REPRO_DATA_ROOT"
CIFAR_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR_DIR = "cifar-10-batches-py"
CIFAR_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                 "dog", "frog", "horse", "ship", "truck")
MNIST_TRAIN_SIZE = 50_000


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


def _writable(folder: Path) -> None:
    """Create ``folder``, or stop with a DataError saying how to choose another data root."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-")
        probe.close()
    except OSError as e:
        raise DataError(f"cannot write prepared data to {folder} ({type(e).__name__}: {e}). Point "
                        f"${ROOT_ENV} at a writable folder.") from e


def _atomic_copy(src: Path, dst: Path) -> None:
    _writable(dst.parent)
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
            for f in raw.iterdir():
                if f.is_file() and not f.name.endswith(".gz"):
                    f.unlink()
            return _open_mnist(root)
    except (RuntimeError, OSError) as e:  # torchvision: "Error downloading ..." / "Dataset not found"
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
def prepare_cifar10(root: Path | None = None) -> Path:
    """Make ``root/cifar-10-batches-py`` exist; return that folder.

    With a mirror, ``cifar10/cifar-10-python.tar.gz`` is extracted (into a temporary folder,
    renamed into place once complete). The mirror archive is not byte-identical to the official
    one (see shared/datasets/README.md), so its md5 is not checked; the batches are validated
    when read instead. Without a mirror torchvision downloads and md5-checks the official archive.
    """
    root = Path(root) if root else data_root()
    target = root / CIFAR_DIR
    if (target / "test_batch").is_file() and all((target / b).is_file() for b in CIFAR_TRAIN_BATCHES):
        return target
    mirror = mirror_dir()
    if mirror is None:
        from torchvision.datasets import CIFAR10

        _writable(root)
        try:
            with _download_timeout():
                CIFAR10(str(root), train=True, download=True)
        except Exception as e:  # network errors come in many types
            raise DataError(_remedies(f"could not download CIFAR-10 into {root}: {e}",
                                      [f"cifar10/{CIFAR_ARCHIVE}"])) from e
        return target
    archive = mirror / "cifar10" / CIFAR_ARCHIVE
    if not archive.is_file():
        raise DataError(_remedies(f"CIFAR-10 archive missing from the mirror: {archive}",
                                  [str(archive)]))
    _writable(root)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".cifar-extract-"))
    try:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(tmp, filter="data")
        if not (tmp / CIFAR_DIR).is_dir():
            raise DataError(f"corrupt CIFAR-10 archive {archive}: no {CIFAR_DIR}/ inside")
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp / CIFAR_DIR, target)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise DataError(f"corrupt CIFAR-10 archive {archive}: {type(e).__name__}: {e}. "
                        f"Replace it with a good copy (md5 of the shared mirror's copy: "
                        f"1ebbcc703898ce46f21613afc1214153).") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            d = pickle.load(f, encoding="latin1")
        data = np.asarray(d["data"], dtype=np.uint8)
        labels = np.asarray(d["labels"], dtype=np.int64)
    except (OSError, pickle.UnpicklingError, EOFError, KeyError, ValueError) as e:
        raise DataError(f"corrupt CIFAR-10 batch {path}: {type(e).__name__}: {e}. Delete "
                        f"{path.parent} to re-extract it.") from e
    if data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(labels):
        raise DataError(f"corrupt CIFAR-10 batch {path}: data shape {data.shape}, "
                        f"{len(labels)} labels")
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
