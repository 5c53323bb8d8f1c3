"""Operational records: what the sidecar appends to the object store for sampling to pick later.

One Parquet object per flushed batch and hour, in Hive-style time partitions::

    operational/<deployment>/date=YYYY-MM-DD/hour=HH/part-<UTC time>-<seq>.parquet

one row per *input* (a request with a batch of 8 images gives 8 rows):

================  ========================  ===================================================
``ids``           string                    ``<request id>:<row>``: unique per input
``request_ids``   string                    the Seldon puid the input came with
``times``         float64                   Unix seconds when the sidecar accepted the prediction
``inputs``        fixed_size_list<f4>[784]  the image (28 x 28, row-major), in [0, 1]
``predictions``   int64                     argmax of ``probs``
``probs``         fixed_size_list<f4>[10]   the served model's softmax
``embeddings``    fixed_size_list<f4>[D]    its penultimate activations
``shadow_probs``  fixed_size_list<f4>[10]   the shadow model's softmax
``p_correct``     float32                   the pseudo-oracles' combined P(correct)
``drift``         float32                   reference percentile of the input's latent distance
``model_version`` string (dictionary)       the version that served it
``abstained``     bool                      the model server abstained on it (``daic.abstain``
                                            tag, issue 21): queued for labeling; optional
                                            (parts written before it read as all False)
================  ========================  ===================================================

Every column is its own column chunk, so a reader that asks for ``ids, times, predictions,
p_correct`` (what sampling needs, about 60 B a row) never fetches the images (about 3 KB a row
before compression); those four columns come first in every row group, the image last. Row groups
hold `ROW_GROUP_ROWS` rows: on S3 every row group costs a scan one ranged GET, so they are as
large as a flush (128-row groups took 10 GETs a part, 30 ms a part against SeaweedFS), and
fetching one sampled input's image reads its row group of the ``inputs`` column (~180 KB). Compression is zstd. DuckDB, pandas,
Polars and Ray Data read these files as they are (docs/serving.md, "Operational records").

``<UTC time>`` is the time of the part's first row (``20250101T120000123456Z``) and ``<seq>`` the
sidecar's write-ahead-log segment, so keys sort by time and never collide. A batch whose rows
straddle an hour boundary is written as one part per hour, so every row lies in its partition's
hour and a reader can prune partitions exactly. The sidecar writes at least once (a crash between a
batch write and its checkpoint writes those rows again after the replay), so readers drop repeated
``ids`` (keeping the first).

Earlier releases wrote ``operational/<deployment>/batch-<UTC time>-<seq>.npz`` (the same columns,
numpy arrays); readers still read them, and `convert_npz_batches` (``daic oracle convert-records``)
rewrites them as Parquet parts once.
"""
from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from daic.storage import ObjectStore, ObjectTooLarge
from daic.storage.parsed import CorruptObject

PREFIX = "operational"
COLUMNS: tuple[str, ...] = ("ids", "request_ids", "times", "inputs", "predictions", "probs", "embeddings",
                            "shadow_probs", "p_correct", "drift", "model_version", "abstained")
#: Columns a part may lack (written before they existed): read as these defaults.
OPTIONAL = {"abstained": False}
_DTYPES = {"abstained": np.bool_, "ids": str, "request_ids": str, "times": np.float64, "inputs": np.float32,
           "predictions": np.int64, "probs": np.float32, "embeddings": np.float32,
           "shadow_probs": np.float32, "p_correct": np.float32, "drift": np.float32, "model_version": str}
IMAGE_SHAPE = (28, 28)
ROW_GROUP_ROWS = 1024    # rows per Parquet row group: a 10 s flush at 100 requests/s is one
COMPRESSION = "zstd"
HOUR = 3600.0
_PART = re.compile(r"^date=(\d{4}-\d{2}-\d{2})/hour=(\d{2})/part-[0-9TZ]+-\d+(?:-\d+)?\.parquet$")


def check_deployment(deployment: str) -> str:
    if not isinstance(deployment, str) or not deployment or "/" in deployment or deployment in (".", ".."):
        raise ValueError(f"deployment must be a non-empty name without '/', got {deployment!r}")
    return deployment


def _stamp(t: float) -> str:
    return datetime.fromtimestamp(t, tz=timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")


def batch_key(deployment: str, first_time: float, seq: int) -> str:
    """The key of an old-style ``.npz`` batch (still the naming of the sidecar's feedback objects)."""
    return f"{PREFIX}/{check_deployment(deployment)}/batch-{_stamp(first_time)}-{seq:08d}.npz"


def partition_prefix(deployment: str, t: float) -> str:
    """``operational/<deployment>/date=YYYY-MM-DD/hour=HH/``: the partition holding time ``t``."""
    when = datetime.fromtimestamp(t, tz=timezone.utc)
    return f"{PREFIX}/{check_deployment(deployment)}/{when:date=%Y-%m-%d/hour=%H}/"


def part_key(deployment: str, first_time: float, seq: int, group: int = 0) -> str:
    """Where a Parquet part whose first row was accepted at ``first_time`` goes; ``group`` > 0
    names the further parts of one flush whose rows have other widths (:func:`write_parts`)."""
    suffix = f"-{group}" if group else ""
    return f"{partition_prefix(deployment, first_time)}part-{_stamp(first_time)}-{seq:08d}{suffix}.parquet"


def partition_hour(deployment: str, key: str) -> float | None:
    """Start (Unix seconds) of the hour partition ``key`` lies in; None for other keys."""
    rest = key[len(f"{PREFIX}/{deployment}/"):] if key.startswith(f"{PREFIX}/{deployment}/") else ""
    m = _PART.match(rest)
    if not m:
        return None
    return datetime.strptime(f"{m.group(1)} {m.group(2)}", "%Y-%m-%d %H").replace(tzinfo=timezone.utc).timestamp()


def is_npz_batch(deployment: str, key: str) -> bool:
    rest = key[len(f"{PREFIX}/{deployment}/"):] if key.startswith(f"{PREFIX}/{deployment}/") else ""
    return "/" not in rest and rest.startswith("batch-") and rest.endswith(".npz")


@dataclass(frozen=True)
class OperationalRecords:
    """Rows of the table in the module docstring, as parallel arrays."""

    ids: np.ndarray
    request_ids: np.ndarray
    times: np.ndarray
    inputs: np.ndarray
    predictions: np.ndarray
    probs: np.ndarray
    embeddings: np.ndarray
    shadow_probs: np.ndarray
    p_correct: np.ndarray
    drift: np.ndarray
    model_version: np.ndarray
    abstained: np.ndarray | None = None  # None: no input abstained on

    def __post_init__(self) -> None:
        if self.abstained is None:
            object.__setattr__(self, "abstained", np.zeros(np.asarray(self.ids).shape[:1], bool))
        n = None
        for name in COLUMNS:
            arr = np.asarray(getattr(self, name))
            if arr.dtype.kind == "O" or _DTYPES[name] is str:
                arr = arr.astype(str)
            else:
                arr = arr.astype(_DTYPES[name], copy=False)
            if n is None:
                n = arr.shape[0] if arr.ndim else -1
            if arr.ndim == 0 or arr.shape[0] != n:
                raise ValueError(f"operational records: column {name!r} has {arr.shape[0] if arr.ndim else 0} rows, "
                                 f"expected {n}")
            object.__setattr__(self, name, arr)
        if self.inputs.shape[1:] != (28, 28):
            raise ValueError(f"inputs must be (N, 28, 28), got {self.inputs.shape}")

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in COLUMNS}

    @classmethod
    def concat(cls, parts: list["OperationalRecords"]) -> "OperationalRecords":
        if not parts:
            return cls.empty()
        dims = {p.embeddings.shape[1] for p in parts if len(p)}
        if len(dims) > 1:
            raise ValueError(f"operational records mix embedding sizes {sorted(dims)} (different model "
                             "architectures); read them per model_version")
        return cls(**{name: np.concatenate([getattr(p, name) for p in parts]) for name in COLUMNS})

    @classmethod
    def empty(cls, embedding_dim: int = 0, n_classes: int = 10) -> "OperationalRecords":
        return cls(ids=np.zeros(0, str), request_ids=np.zeros(0, str), times=np.zeros(0),
                   inputs=np.zeros((0, 28, 28), np.float32), predictions=np.zeros(0, np.int64),
                   probs=np.zeros((0, n_classes), np.float32),
                   embeddings=np.zeros((0, embedding_dim), np.float32),
                   shadow_probs=np.zeros((0, n_classes), np.float32), p_correct=np.zeros(0, np.float32),
                   drift=np.zeros(0, np.float32), model_version=np.zeros(0, str))

    def select(self, index) -> "OperationalRecords":
        return OperationalRecords(**{name: getattr(self, name)[index] for name in COLUMNS})


def arrow_schema(embedding_dim: int, n_classes: int = 10) -> pa.Schema:
    """The Parquet schema of a part (see the module docstring)."""
    def vec(n: int) -> pa.DataType:
        return pa.list_(pa.float32(), n)

    # Columns in reading order: what sampling reads (ids, times, predictions, p_correct) lies
    # together in each row group, so a reader fetches it in one range; the image comes last.
    return pa.schema([
        ("ids", pa.string()), ("times", pa.float64()), ("predictions", pa.int64()), ("p_correct", pa.float32()),
        ("request_ids", pa.string()), ("model_version", pa.dictionary(pa.int32(), pa.string())),
        ("drift", pa.float32()), ("abstained", pa.bool_()), ("probs", vec(n_classes)), ("shadow_probs", vec(n_classes)),
        ("embeddings", vec(embedding_dim)), ("inputs", vec(IMAGE_SHAPE[0] * IMAGE_SHAPE[1])),
    ], metadata={b"daic.inputs.shape": b"28,28", b"daic.format": b"operational-records/1"})


def _vectors(arr: np.ndarray, width: int) -> pa.Array:
    flat = np.ascontiguousarray(arr, dtype=np.float32).reshape(-1)
    return pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), width)


def to_table(records: OperationalRecords) -> pa.Table:
    """The records as an Arrow table in the Parquet schema."""
    n_classes = records.probs.shape[1]
    dim = records.embeddings.shape[1] if records.embeddings.ndim == 2 else 0
    schema = arrow_schema(dim, n_classes)
    # Strings go through lists: pyarrow converts a numpy '<U' array a thousand times slower.
    columns = {
        "ids": pa.array(records.ids.tolist(), pa.string()), "times": pa.array(records.times, pa.float64()),
        "predictions": pa.array(records.predictions, pa.int64()),
        "p_correct": pa.array(records.p_correct, pa.float32()),
        "request_ids": pa.array(records.request_ids.tolist(), pa.string()),
        "model_version": pa.array(records.model_version.tolist(), pa.string()).dictionary_encode(),
        "drift": pa.array(records.drift, pa.float32()), "abstained": pa.array(records.abstained, pa.bool_()),
        "probs": _vectors(records.probs, n_classes),
        "shadow_probs": _vectors(records.shadow_probs, n_classes), "embeddings": _vectors(records.embeddings, dim),
        "inputs": _vectors(records.inputs, IMAGE_SHAPE[0] * IMAGE_SHAPE[1]),
    }
    return pa.Table.from_arrays([columns[f.name] for f in schema], schema=schema)


def _matrix(column: pa.ChunkedArray | pa.Array, *shape: int) -> np.ndarray:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    values = column.flatten().to_numpy(zero_copy_only=False)
    return values.reshape(len(column), *shape)


def column_as_numpy(table: pa.Table, name: str) -> np.ndarray:
    """One column of a part as the array `OperationalRecords` holds (images as (N, 28, 28))."""
    column = table.column(name)
    if name == "inputs":
        return _matrix(column, *IMAGE_SHAPE)
    if pa.types.is_fixed_size_list(column.type):
        return _matrix(column, column.type.list_size)
    if pa.types.is_dictionary(column.type):
        column = column.cast(pa.string())
    return column.to_numpy(zero_copy_only=False)


def from_table(table: pa.Table) -> OperationalRecords:
    missing = [c for c in COLUMNS if c not in table.column_names and c not in OPTIONAL]
    if missing:
        raise ValueError(f"operational part lacks {', '.join(missing)}")
    for name in COLUMNS:
        if name in table.column_names and not _arrow_type_ok(name, table.schema.field(name).type):
            raise ValueError(f"column {name!r} is {table.schema.field(name).type}, not the records' type")
    return _checked({c: column_as_numpy(table, c) for c in COLUMNS if c in table.column_names})


#: numpy kinds and dimensions of each column (module docstring): what a reader may assume
_KINDS = {"ids": "USO", "request_ids": "USO", "model_version": "USO", "times": "fiu", "inputs": "f",
          "predictions": "iu", "probs": "f", "embeddings": "f", "shadow_probs": "f", "p_correct": "f",
          "drift": "f", "abstained": "b"}
_NDIM = {"inputs": 3, "probs": 2, "embeddings": 2, "shadow_probs": 2}


def _arrow_type_ok(name: str, typ: pa.DataType) -> bool:
    if _NDIM.get(name, 1) > 1:
        if not pa.types.is_fixed_size_list(typ) or not pa.types.is_floating(typ.value_type):
            return False
        return name != "inputs" or typ.list_size == IMAGE_SHAPE[0] * IMAGE_SHAPE[1]
    if pa.types.is_dictionary(typ):
        typ = typ.value_type
    kinds = _KINDS[name]
    return ((pa.types.is_string(typ) or pa.types.is_large_string(typ)) if "U" in kinds
            else pa.types.is_boolean(typ) if kinds == "b"
            else pa.types.is_integer(typ) if kinds == "iu"
            else pa.types.is_floating(typ) or ("i" in kinds and pa.types.is_integer(typ)))


def _checked(arrays: dict[str, np.ndarray]) -> OperationalRecords:
    """The columns of one stored part as records, checked as a reader needs them: every column of
    its kind and rank (images (N, 28, 28)), one row per input, finite times and images, and
    predictions that index the probabilities (``np.bincount`` of a negative one, a NaN time in a
    window test, a string where a number belongs went wrong far from the part). P(correct) and
    drift may be NaN: an input recorded unscored. ValueError naming the column otherwise."""
    for name, arr in arrays.items():
        arr = np.asarray(arr)
        if arr.dtype.kind not in _KINDS[name] or arr.ndim != _NDIM.get(name, 1):
            raise ValueError(f"column {name!r} is {arr.dtype} {arr.shape}, expected "
                             f"{'strings' if 'U' in _KINDS[name] else _KINDS[name]} of rank {_NDIM.get(name, 1)}")
    records = OperationalRecords(**arrays)
    if not np.isfinite(records.times).all():
        raise ValueError("column 'times' holds a NaN or infinite time")
    if not np.isfinite(records.inputs).all():
        raise ValueError("column 'inputs' holds a NaN or infinite pixel")
    width = records.probs.shape[1]
    if records.predictions.size and (records.predictions.min() < 0 or records.predictions.max() >= width):
        raise ValueError(f"column 'predictions' holds a class outside [0, {width})")
    if records.shadow_probs.shape[1] != width:
        raise ValueError(f"shadow_probs has {records.shadow_probs.shape[1]} classes, probs {width}")
    return records


def encode_part(records: OperationalRecords) -> bytes:
    """One Parquet object (zstd, `ROW_GROUP_ROWS` rows per row group, statistics on)."""
    buf = io.BytesIO()
    # Dictionary encoding only where values repeat (on the float vectors it halved the write
    # speed for nothing); statistics only on the one column readers prune row groups by.
    pq.write_table(to_table(records), buf, compression=COMPRESSION, row_group_size=ROW_GROUP_ROWS,
                   use_dictionary=["request_ids", "model_version"], write_statistics=["times"])
    return buf.getvalue()


def write_batch(store: ObjectStore, deployment: str, records: OperationalRecords, seq: int) -> str:
    """Store one batch as Parquet, one part per hour its rows fall in; returns the first part's key.

    Empty batches are an error (nothing to write). Writing the same rows again (a replay) is safe:
    readers drop repeated ids.
    """
    if not len(records):
        raise ValueError("refusing to write an empty operational batch")
    return _write_parts(store, check_deployment(deployment), records, seq)[0]


def write_parts(store: ObjectStore, deployment: str, parts: list[OperationalRecords], seq: int) -> list[str]:
    """Store one flush's records, which may hold several widths (model versions of different
    architectures: embedding sizes or class counts), as one batch per widths, in the order the
    widths first appear; returns every key written (the first batch's first).

    A Parquet part has one width per vector column, so rows of different widths cannot share one:
    concatenating them would refuse the whole flush, and with it every later flush (the sidecar
    retries the same buffer). The further batches' keys end in ``-<group>``, so none overwrites
    another's. Empty parts are skipped; nothing to write is an error, as in :func:`write_batch`.
    """
    check_deployment(deployment)
    groups: dict[tuple[int, ...], list[OperationalRecords]] = {}
    for part in parts:
        if len(part):
            groups.setdefault((part.probs.shape[1], part.embeddings.shape[1], part.shadow_probs.shape[1]),
                              []).append(part)
    if not groups:
        raise ValueError("refusing to write an empty operational batch")
    keys: list[str] = []
    for group, same in enumerate(groups.values()):
        keys.extend(_write_parts(store, deployment, OperationalRecords.concat(same), seq, group))
    return keys


def _write_parts(store: ObjectStore, deployment: str, records: OperationalRecords, seq: int,
                 group: int = 0) -> list[str]:
    hours = np.floor(records.times / HOUR)
    distinct = np.unique(hours)
    keys = []
    for hour in distinct:
        part = records if distinct.size == 1 else records.select(hours == hour)
        key = part_key(deployment, float(part.times.min()), seq, group)
        store.put_bytes(key, encode_part(part))
        keys.append(key)
    return keys


def list_parts(store: ObjectStore, deployment: str, since: float | None = None,
               until: float | None = None, max_hour_listings: int = 168) -> list[str]:
    """Keys of the Parquet parts whose hour partition overlaps [since, until), then the old
    ``.npz`` batches that may hold rows in it; sorted, so every reader sees the same order.

    A bounded window of at most ``max_hour_listings`` hours lists its hour prefixes one by one
    (a LIST per hour, never the rest of the history); a longer or unbounded one lists the
    deployment's whole prefix once and keeps the partitions inside the window.
    """
    check_deployment(deployment)
    if since is not None and until is not None and until <= since:
        raise ValueError(f"until ({until}) must be after since ({since})")
    root = f"{PREFIX}/{deployment}/"
    if since is not None and until is not None and (until - since) / HOUR <= max_hour_listings:
        first, last = math.floor(since / HOUR), math.ceil(until / HOUR)
        keys = []
        for h in range(first, last):
            keys.extend(store.list(partition_prefix(deployment, h * HOUR)))
        keys.extend(store.list(root + "batch-"))
    else:
        keys = store.list(root)
    parts, legacy = [], []
    for key in keys:
        hour = partition_hour(deployment, key)
        if hour is not None:
            # a part starts at the time in its name: one starting at or after ``until`` is not opened
            if (since is None or hour + HOUR > since) and (until is None or _part_first_time(key) < until):
                parts.append(key)
        elif is_npz_batch(deployment, key):
            first_time = _npz_first_time(deployment, key)
            if until is None or first_time is None or first_time < until:
                legacy.append(key)
    return sorted(parts) + sorted(legacy)


def newest_hour_end(store: ObjectStore, deployment: str) -> float | None:
    """End of the newest hour holding records of ``deployment`` (one listing of its prefix, no
    object read); None when it has none. Old ``.npz`` batches count by their first row's hour."""
    check_deployment(deployment)
    newest = None
    for key in store.list(f"{PREFIX}/{deployment}/"):
        hour = partition_hour(deployment, key)
        if hour is None and is_npz_batch(deployment, key):
            first = _npz_first_time(deployment, key)
            hour = None if first is None else math.floor(first / HOUR) * HOUR
        if hour is not None and (newest is None or hour > newest):
            newest = hour
    return None if newest is None else newest + HOUR


def _part_first_time(key: str) -> float:
    stamp = key.rsplit("/part-", 1)[1].split("-", 1)[0]
    return datetime.strptime(stamp, "%Y%m%dT%H%M%S%fZ").replace(tzinfo=timezone.utc).timestamp()


def _npz_first_time(deployment: str, key: str) -> float | None:
    m = re.match(r"^batch-(\d{8}T\d{12}Z)-", key[len(f"{PREFIX}/{deployment}/"):])
    if not m:
        return None
    return datetime.strptime(m.group(1), "%Y%m%dT%H%M%S%fZ").replace(tzinfo=timezone.utc).timestamp()


def read_npz_batch(store: ObjectStore, key: str) -> OperationalRecords:
    """An old ``.npz`` batch (CorruptObject naming the key when it is not a batch of records)."""
    arrays = store.get_arrays(key)  # StorageError naming the key when it is not an npz
    missing = [c for c in COLUMNS if c not in arrays and c not in OPTIONAL]
    if missing:
        raise CorruptObject(f"{store.url}: operational batch {key!r} lacks {', '.join(missing)}")
    try:
        return _checked({c: arrays[c] for c in COLUMNS if c in arrays})
    except ValueError as exc:
        raise CorruptObject(f"{store.url}: operational batch {key!r}: {exc}") from None


def check_declared_size(store: ObjectStore, key: str, metadata: pq.FileMetaData) -> None:
    """ObjectTooLarge naming part ``key`` when its row groups declare more column data,
    uncompressed, than the store's read bound (``max_object_bytes``). The object's own size is
    bounded where its bytes are read; this bounds what decoding it would allocate: a few KiB of
    compressed zeros can declare gigabytes (a part the sidecar writes holds a few MiB)."""
    declared = sum(metadata.row_group(i).total_byte_size for i in range(metadata.num_row_groups))
    if declared > store.max_object_bytes:
        raise ObjectTooLarge(f"{store.url}: operational part {key!r} declares {declared:,} bytes of column data "
                             f"uncompressed, more than the read bound of {store.max_object_bytes:,} bytes "
                             "(max_object_bytes); not read")


def read_part(store: ObjectStore, key: str) -> OperationalRecords:
    """Every column of one object (a Parquet part or an old ``.npz`` batch); CorruptObject naming
    the key when it is not a readable part of records, ObjectTooLarge when it is or decodes to
    more than the store's read bound (a StorageError: ``daic oracle records`` and the readers
    above it print one line)."""
    if key.endswith(".npz"):
        return read_npz_batch(store, key)
    try:
        pf = pq.ParquetFile(io.BytesIO(store.get_bytes(key)))
        check_declared_size(store, key, pf.metadata)
        table = pf.read()
    except (pa.ArrowException, OSError) as exc:  # ArrowInvalid, or OSError for a cut-off file
        raise CorruptObject(f"{store.url}: operational part {key!r} is not a readable Parquet file: {exc}") from None
    try:
        return from_table(table)
    except ValueError as exc:
        raise CorruptObject(f"{store.url}: operational part {key!r}: {exc}") from None


def read_operational(store: ObjectStore, deployment: str, since: float | None = None,
                     until: float | None = None) -> OperationalRecords:
    """Every record of ``deployment`` with ``since <= time < until`` (None: unbounded), ordered by
    time, repeated ids dropped; all columns, images included. An empty result is returned as
    empty arrays, not an error. This reads whole objects: for sampling, which needs four columns
    of a large window, use `daic.sampling.scan`.
    """
    parts = []
    for key in list_parts(store, deployment, since, until):
        batch = read_part(store, key)
        keep = np.ones(len(batch), bool)
        if since is not None:
            keep &= batch.times >= since
        if until is not None:
            keep &= batch.times < until
        if keep.any():
            parts.append(batch if keep.all() else batch.select(keep))
    if not parts:
        return OperationalRecords.empty()
    records = OperationalRecords.concat(parts)
    order = np.argsort(records.times, kind="stable")
    records = records.select(order)
    _, first = np.unique(records.ids, return_index=True)
    return records.select(np.sort(first))


def convert_npz_batches(store: ObjectStore, deployment: str, delete: bool = True) -> list[tuple[str, list[str]]]:
    """Rewrite every old ``.npz`` batch of ``deployment`` as Parquet parts (the same rows, the
    sequence number taken from its key), then delete it unless ``delete`` is False.

    Safe to re-run after a crash: a batch is deleted only after its parts are written, and rows
    written twice are dropped by every reader. Returns ``[(npz key, [part keys])]``.
    """
    check_deployment(deployment)
    done = []
    for key in store.list(f"{PREFIX}/{deployment}/batch-"):
        if not is_npz_batch(deployment, key):
            continue
        records = read_npz_batch(store, key)
        m = re.search(r"-(\d+)\.npz$", key)
        seq = int(m.group(1)) if m else 0
        written = _write_parts(store, deployment, records, seq) if len(records) else []
        if delete:
            store.delete(key)
        done.append((key, written))
    return done
