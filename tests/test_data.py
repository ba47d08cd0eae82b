import gzip
import io
import tarfile

import pytest
import torch

from common import data
from conftest import needs_real_data


# ----------------------------------------------------------------- subsets
def test_balanced_subset_exact_counts_and_seeded():
    labels = torch.arange(10).repeat_interleave(100)[torch.randperm(1000, generator=torch.Generator().manual_seed(0))]
    a = data.balanced_subset(labels, 7, seed=1)
    assert data.class_counts(labels[a]) == [7] * 10
    assert len(set(a.tolist())) == 70
    assert torch.equal(a, data.balanced_subset(labels, 7, seed=1))
    assert not torch.equal(a, data.balanced_subset(labels, 7, seed=2))


def test_imbalanced_subset_mapping_keeps_other_classes():
    labels = torch.arange(10).repeat_interleave(50)
    idx = data.imbalanced_subset(labels, {1: 5, 4: 0, 6: 12}, seed=0)
    counts = data.class_counts(labels[idx])
    assert counts == [50, 5, 50, 50, 0, 50, 12, 50, 50, 50]


def test_imbalanced_subset_rejects_impossible_counts():
    labels = torch.arange(3).repeat_interleave(4)
    with pytest.raises(ValueError, match="only 4 exist"):
        data.imbalanced_subset(labels, [1, 5, 1], seed=0)
    with pytest.raises(ValueError, match="3 classes"):
        data.imbalanced_subset(labels, [1, 1], seed=0)


# ----------------------------------------------------------------- binarisation
def test_dynamic_binarisation_is_bernoulli_with_pixel_mean():
    p = torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0]).repeat(40_000, 1)
    g = torch.Generator().manual_seed(0)
    b = data.binarize(p, "dynamic", generator=g)
    assert set(b.unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(b.mean(0), p[0], atol=0.01, rtol=0)
    assert not torch.equal(b, data.binarize(p, "dynamic", generator=g))  # fresh sample each call


def test_threshold_binarisation_and_bad_mode():
    x = torch.tensor([0.2, 0.5, 0.51, 0.9])
    assert data.binarize(x, "threshold").tolist() == [0.0, 0.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="binarisation mode"):
        data.binarize(x, "stochastic")


# ----------------------------------------------------------------- batches
def test_device_batches_cover_every_index_once_per_epoch():
    x = torch.arange(23)
    batches = data.DeviceBatches(x, x * 2, batch_size=5, shuffle=True, seed=3)
    assert len(batches) == 5
    seen = torch.cat([xb for xb, _ in batches])
    assert sorted(seen.tolist()) == list(range(23))
    assert all(torch.equal(yb, xb * 2) for xb, yb in batches)
    assert not torch.equal(seen, torch.cat([xb for xb, _ in batches]))  # new permutation per epoch


def test_device_batches_in_order_and_drop_last():
    x = torch.arange(10)
    assert [b[0].tolist() for b in data.DeviceBatches(x, batch_size=4, shuffle=False)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert len(data.DeviceBatches(x, batch_size=4, drop_last=True)) == 2
    with pytest.raises(ValueError, match="differ in length"):
        data.DeviceBatches(x, x[:3], batch_size=2)


def test_to_float_nchw():
    x = torch.randint(0, 256, (2, 32, 32, 3), dtype=torch.uint8)
    y = data.to_float_nchw(x)
    assert y.shape == (2, 3, 32, 32) and y.max() <= 1.0
    assert y[1, 2, 5, 7] == x[1, 5, 7, 2].float() / 255
    with pytest.raises(ValueError, match="uint8 NHWC"):
        data.to_float_nchw(x.float())


# ----------------------------------------------------------------- mirror errors
def test_empty_mirror_lists_expected_files(isolated_env, monkeypatch):
    mirror = isolated_env / "mirror"
    mirror.mkdir()
    monkeypatch.setenv(data.MIRROR_ENV, str(mirror))
    with pytest.raises(data.DataError) as e:
        data.prepare_mnist()
    msg = str(e.value)
    assert "train-images-idx3-ubyte.gz" in msg and "t10k-labels-idx1-ubyte.gz" in msg
    assert data.MIRROR_ENV in msg and "unset" in msg
    with pytest.raises(data.DataError, match="cifar-10-python.tar.gz"):
        data.prepare_cifar10()


def test_corrupt_mnist_file_in_mirror(isolated_env, monkeypatch):
    src = isolated_env / "mirror" / "mnist"
    src.mkdir(parents=True)
    for name, _ in data._mnist_resources():
        (src / name).write_bytes(gzip.compress(b"not mnist"))
    monkeypatch.setenv(data.MIRROR_ENV, str(src.parent))
    with pytest.raises(data.DataError, match="corrupt MNIST file.*md5"):
        data.prepare_mnist()
    assert not (isolated_env / "data" / "MNIST" / "raw" / "train-images-idx3-ubyte.gz").exists()


def test_corrupt_cifar_archive(isolated_env, monkeypatch):
    src = isolated_env / "mirror" / "cifar10"
    src.mkdir(parents=True)
    (src / data.CIFAR_ARCHIVE).write_bytes(b"\x1f\x8b" + b"garbage" * 100)
    monkeypatch.setenv(data.MIRROR_ENV, str(src.parent))
    with pytest.raises(data.DataError, match="refused the CIFAR-10 archive .* md5"):
        data.prepare_cifar10()   # not an accepted archive: never opened
    monkeypatch.setattr(data, "CIFAR_ACCEPTED_MD5", {data.md5sum(src / data.CIFAR_ARCHIVE): "test"})
    with pytest.raises(data.DataError, match="corrupt CIFAR-10 archive"):
        data.prepare_cifar10()   # accepted md5, but not a tar.gz
    assert not (isolated_env / "data" / data.CIFAR_DIR).exists()


def test_cifar_archive_without_batches_is_rejected(isolated_env, monkeypatch):
    src = isolated_env / "mirror" / "cifar10"
    src.mkdir(parents=True)
    monkeypatch.setenv(data.MIRROR_ENV, str(src.parent))
    for members, error in (((), "no cifar-10-batches-py"),
                           ((f"{data.CIFAR_DIR}/readme.html",), "lacks .*data_batch_1")):
        with tarfile.open(src / data.CIFAR_ARCHIVE, "w:gz") as tar:
            for name in members:
                info = tarfile.TarInfo(name)
                info.size = 2
                tar.addfile(info, io.BytesIO(b"hi"))
        monkeypatch.setattr(data, "CIFAR_ACCEPTED_MD5", {data.md5sum(src / data.CIFAR_ARCHIVE): "test"})
        with pytest.raises(data.DataError, match=error):
            data.prepare_cifar10()
        assert not (isolated_env / "data" / data.CIFAR_DIR).exists()


# ----------------------------------------------------------------- real data
@needs_real_data
def test_mnist_papers_split():
    xtr, ytr = data.load_mnist("train")
    xva, yva = data.load_mnist("valid")
    xte, yte = data.load_mnist("test")
    assert (len(xtr), len(xva), len(xte)) == (50_000, 10_000, 10_000)
    assert xtr.shape[1] == 784 and xtr.dtype == torch.float32
    assert float(xtr.min()) == 0.0 and float(xtr.max()) == 1.0
    full, _ = data.load_mnist("train_full")
    assert torch.equal(full[50_000:], xva)
    assert data.class_counts(yte) == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert sum(data.class_counts(ytr)) == 50_000
    with pytest.raises(ValueError, match="unknown MNIST split"):
        data.load_mnist("validation")


@needs_real_data
def test_cifar10_layout_and_counts():
    x, y = data.load_cifar10("train")
    assert x.shape == (50_000, 32, 32, 3) and x.dtype == torch.uint8
    assert data.class_counts(y) == [5000] * 10
    xt, yt = data.load_cifar10("test")
    assert data.class_counts(yt) == [1000] * 10
    mean = data.to_float_nchw(x[:10_000]).mean((0, 2, 3))
    torch.testing.assert_close(mean, torch.tensor([0.4914, 0.4822, 0.4465]), atol=0.01, rtol=0)


_MIRROR = data.mirror_dir()   # before isolated_env removes the variable


@pytest.mark.skipif(_MIRROR is None, reason="needs the offline mirror")
def test_read_only_data_root_is_a_clear_error(isolated_env, monkeypatch):
    import os
    import stat

    if os.geteuid() == 0:   # root writes anywhere: simulate with a file where a folder must be
        blocker = isolated_env / "data"
        blocker.write_text("not a folder")
        monkeypatch.setenv(data.ROOT_ENV, str(blocker / "sub"))
    else:
        ro = isolated_env / "ro"
        ro.mkdir()
        ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
        monkeypatch.setenv(data.ROOT_ENV, str(ro))
    monkeypatch.setenv(data.MIRROR_ENV, str(_MIRROR))
    with pytest.raises(data.DataError, match="cannot write prepared data to .*REPRO_DATA_ROOT"):
        data.prepare_mnist()


def test_downloads_have_a_timeout():
    import socket

    before = socket.getdefaulttimeout()
    with data._download_timeout(7.0):
        assert socket.getdefaulttimeout() == 7.0
    assert socket.getdefaulttimeout() == before


@pytest.mark.skipif(_MIRROR is None, reason="needs the offline mirror")
def test_truncated_prepared_file_is_re_extracted_from_the_verified_archives(isolated_env, monkeypatch):
    monkeypatch.setenv(data.MIRROR_ENV, str(_MIRROR))
    root = data.prepare_mnist()
    bad = root / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    good = bad.read_bytes()
    bad.write_bytes(good[:5000])                       # truncated local copy, .gz files intact
    data._mnist_arrays.cache_clear()
    try:
        x, y = data.load_mnist("test")
        assert x.shape == (10_000, 784) and bad.read_bytes() == good
    finally:
        data._mnist_arrays.cache_clear()
