"""One operational part of records, opened for ranged reads and checked before anything uses it.

The scan (:mod:`daic.sampling.scan`), the fetch of the drawn inputs (:mod:`daic.sampling.fetch`)
and the abstained pass (:mod:`daic.sampling.abstain`) read the same Parquet parts (and old ``.npz``
batches) by different columns, at different times. Each opens a part through :func:`part_file`
and checks what it reads with the functions here, so a part that is gone, not Parquet, lacking or
retyping a column, or holding a value no pool holds (a NaN time, a null or empty id, a P(correct)
outside [0, 1], a negative class, a pixel outside [0, 1]) is one error naming the part, whichever
reader meets it first: KeyNotFound for a part deleted since it was listed, StorageError when the
store will not serve it, CorruptObject for the rest. Counting what the readers read
(:class:`ScanStats`, :class:`CountingFile`) lives here too: the scan's cost is measured in bytes
and ranged requests (benchmarks/scale.py).
"""
from __future__ import annotations

import io
import threading
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from daic.sidecar import records as rec
from daic.storage import KeyNotFound, ObjectStore, StorageError
from daic.storage.parsed import CorruptObject


# -- where the bytes are -------------------------------------------------------------------

def arrow_filesystem(store: ObjectStore) -> tuple[pafs.FileSystem, str]:
    """An Arrow filesystem reaching ``store``'s objects by ranged reads, and the path of its root.

    ``file://`` -> ``LocalFileSystem`` and the directory; ``s3://`` -> ``S3FileSystem`` with the
    store's endpoint, credentials and timeouts, and ``bucket/prefix``.
    """
    from daic.storage.file_store import FileStore

    if isinstance(store, FileStore):
        return pafs.LocalFileSystem(), str(store.root)
    from daic.storage.s3_store import S3Store

    if isinstance(store, S3Store):
        s = store.settings
        timeouts = getattr(s, "timeouts", None)
        extra = {}
        if timeouts is not None:
            extra = {"connect_timeout": float(timeouts.connect_s), "request_timeout": float(timeouts.read_s)}
        fs = pafs.S3FileSystem(access_key=s.access_key, secret_key=s.secret_key, region=s.region,
                               endpoint_override=s.endpoint, scheme="https" if s.secure else "http",
                               **extra)
        return fs, f"{store.bucket}/{store.prefix}".rstrip("/")
    raise ValueError(f"{store.url}: no Arrow filesystem for {type(store).__name__} (file:// and s3:// only)")


class CountingFile(io.RawIOBase):
    """A read-only file that counts the bytes and reads (ranged GETs on S3) it passes through."""

    def __init__(self, raw: pa.NativeFile, tally: "ScanStats") -> None:
        super().__init__()
        self._raw = raw
        self._tally = tally

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()

    def size(self) -> int:
        return self._raw.size()

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(None if size is None or size < 0 else size)
        self._tally.add(bytes_read=len(data), requests=1)
        return data

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def close(self) -> None:
        self._raw.close()
        super().close()


@dataclass
class ScanStats:
    """What a scan cost (bytes and requests are what passed through the readers; None on Ray)."""

    engine: str = "local"
    parts_listed: int = 0
    parts_read: int = 0
    row_groups_read: int = 0
    row_groups_skipped: int = 0
    rows_read: int = 0
    duplicates_dropped: int = 0
    unscored: int = 0  # inputs the sidecar recorded without a P(correct) (see impute_unscored)
    bytes_read: int | None = 0
    requests: int | None = 0
    seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, (getattr(self, name) or 0) + value)

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}


FOOTER_GUESS = 8 * 1024  # one ranged read of a part's tail usually holds its whole footer


def open_part(raw: pa.NativeFile, stats: "ScanStats") -> pq.ParquetFile:
    """A Parquet file whose reads are counted; its footer read with one ranged read of the last
    8 KiB (a second one only for a larger footer), not Arrow's speculative 64 KiB, which would be
    most of what a four-column scan of a part reads."""
    counted = CountingFile(raw, stats)
    size = raw.size()
    counted.seek(max(0, size - FOOTER_GUESS))
    tail = counted.read(min(size, FOOTER_GUESS))
    if len(tail) < 8 or tail[-4:] != b"PAR1":
        raise ValueError("not a Parquet file (no PAR1 tail)")
    length = int.from_bytes(tail[-8:-4], "little")
    if length + 8 > size:
        raise ValueError(f"footer of {length} bytes does not fit in {size}")
    if length + 8 > len(tail):
        counted.seek(size - 8 - length)
        footer = counted.read(length)
    else:
        footer = tail[len(tail) - 8 - length:len(tail) - 8]
    meta = pq.read_metadata(pa.BufferReader(b"PAR1" + footer + tail[-8:]))
    return pq.ParquetFile(counted, metadata=meta)


def corrupt_part(store: ObjectStore, key: str, what: str) -> CorruptObject:
    return CorruptObject(f"{store.url}: operational part {key!r}: {what}")


def npz_columns(store: ObjectStore, key: str, raw: bytes, columns: tuple[str, ...]) -> dict[str, np.ndarray]:
    """``columns`` of an old ``.npz`` batch, each of its kind and rank (images (N, 28, 28)) and one
    row per input; CorruptObject naming the batch when it is not one, ObjectTooLarge when it
    declares more data than the store's read bound."""
    store.check_npz_bound(key, raw)
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
            missing = [c for c in columns if c not in npz.files]
            if missing:
                raise corrupt_part(store, key, f"lacks {', '.join(missing)}")
            arrays = {c: npz[c] for c in columns}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:  # as ObjectStore.get_arrays
        raise corrupt_part(store, key, f"not a numpy .npz archive: {type(exc).__name__}: {exc}") from None
    ok = all(a.ndim == rec._NDIM.get(c, 1) and a.dtype.kind in rec._KINDS[c] for c, a in arrays.items())
    if ok and "inputs" in arrays:
        ok = arrays["inputs"].shape[1:] == rec.IMAGE_SHAPE
    if not ok or len({a.shape[0] for a in arrays.values()}) != 1:
        raise corrupt_part(store, key, "columns " + ", ".join(f"{c} {a.dtype} {a.shape}" for c, a in arrays.items())
                            + " are not one row per input of " + ", ".join(expected_column(c) for c in columns))
    return arrays


def expected_column(column: str) -> str:
    """What a column of a part holds, for error messages: ``inputs (floats, 28 x 28)``."""
    kinds = {"USO": "strings", "fiu": "numbers", "iu": "integers", "f": "floats", "b": "booleans"}[rec._KINDS[column]]
    return f"{column} ({kinds}, 28 x 28)" if column == "inputs" else f"{column} ({kinds})"


def check_schema(store: ObjectStore, key: str, schema: pa.Schema, columns: tuple[str, ...]) -> None:
    """``columns`` are there and of their kind (as the records' own reader checks them): a string
    prediction, a missing p_correct or images 10 wide were a KeyError/ValueError without the key."""
    for c in columns:
        if schema.get_field_index(c) < 0:
            raise corrupt_part(store, key, f"lacks the column {c!r}")
        if not rec._arrow_type_ok(c, schema.field(c).type):
            raise corrupt_part(store, key, f"column {c!r} is {schema.field(c).type}, expected {expected_column(c)}")


@contextmanager
def part_file(store: ObjectStore, fs: pafs.FileSystem, root: str, key: str, stats: ScanStats,
               columns: tuple[str, ...]) -> Iterator[pq.ParquetFile]:
    """Parquet part ``key`` open for ranged reads, its footer read and ``columns`` checked in its
    schema. Every fault is one error naming the part: KeyNotFound when it is gone (deleted since
    it was listed), StorageError when the store will not serve it, CorruptObject when it is not a
    Parquet part holding ``columns`` or (raised by the reads inside the block) a column chunk is
    damaged, ObjectTooLarge when the part or the column data its row groups declare exceeds the
    store's read bound (``max_object_bytes``); never Arrow's own error, which names a path of
    the filesystem at best."""
    try:
        raw = fs.open_input_file(f"{root}/{key}")
    except FileNotFoundError:
        raise KeyNotFound(f"{store.url}: no object {key!r} (an operational part: deleted since the "
                          "window was listed)") from None
    except OSError as exc:
        raise StorageError(f"{store.url}: cannot read operational part {key!r}: {exc}") from None
    with raw:
        size = raw.size()
        if size > store.max_object_bytes:  # the footer's declared length is read before any check
            raise store._too_large(key, size)
        try:
            pf = open_part(raw, stats)
        except (ValueError, OSError, pa.ArrowException) as exc:
            raise corrupt_part(store, key, f"not a readable Parquet file: {exc}") from None
        rec.check_declared_size(store, key, pf.metadata)
        check_schema(store, key, pf.schema_arrow, columns)
        try:
            yield pf
        except (OSError, pa.ArrowException) as exc:  # a damaged column chunk behind a whole footer
            raise corrupt_part(store, key, f"not a readable Parquet file: {exc}") from None


BAD_TIME = "column 'times' holds a NaN or infinite time"
BAD_ID = "column 'ids' holds a null or empty id"


def check_times(store: ObjectStore, key: str, times: np.ndarray) -> None:
    """Every time read from part ``key`` is finite (a null reads as NaN); CorruptObject naming the
    part otherwise: a NaN time falls out of every window unseen, so its input would vanish."""
    if not np.isfinite(times).all():
        raise corrupt_part(store, key, BAD_TIME)


def ids_ok(ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """(n,) bool: each id is a string of at least one character. The records' writer never writes
    a null id (it writes ``str(None)``) nor an empty one (the sidecar's are ``<request id>:<row>``);
    either would be hashed into a key like any other, and fetch_rows, labelling and training would
    meet an input with no id."""
    return pc.fill_null(pc.greater(pc.binary_length(ids), 0), False).to_numpy(zero_copy_only=False)


def check_ids(store: ObjectStore, key: str, ids: pa.Array | pa.ChunkedArray) -> None:
    """Every id read from part ``key`` is a non-empty string (`ids_ok`); CorruptObject naming the
    part otherwise."""
    if not ids_ok(ids).all():
        raise corrupt_part(store, key, BAD_ID)


def check_block(store: ObjectStore, key: str, block: dict[str, np.ndarray]) -> None:
    """A compact block of part ``key`` holds what a pool holds: classes >= 0, P(correct) in [0, 1]
    or NaN (unscored); CorruptObject naming the part otherwise."""
    if block["prediction"].size and block["prediction"].min() < 0:
        raise corrupt_part(store, key, "column 'predictions' holds a negative class")
    p = block["p_correct"]
    if ((p < 0) | (p > 1)).any():  # NaN compares False: unscored inputs stay (impute_unscored)
        raise corrupt_part(store, key, "column 'p_correct' holds a value outside [0, 1]")


def checked_images(store: ObjectStore, key: str, images: np.ndarray) -> np.ndarray:
    """``images`` when every pixel is finite and in [0, 1] (what the records hold); CorruptObject
    naming the part otherwise: a NaN or out-of-range pixel would reach the labelers or training."""
    if not np.isfinite(images).all():
        raise corrupt_part(store, key, "column 'inputs' holds a NaN or infinite pixel")
    if images.size and (images.min() < 0 or images.max() > 1):
        raise corrupt_part(store, key, f"column 'inputs' holds a pixel outside [0, 1] "
                                        f"({images.min():.3g} .. {images.max():.3g})")
    return images
