"""The pool of one cycle's window, read from the operational records by column, in bounded memory.

Sampling needs four columns of every logged input in the window (``ids``, ``times``,
``predictions``, ``p_correct``: about 60 B a row in the Parquet parts, against about 3 KB for the
image) and the images of the few inputs it draws. `scan_pool` therefore

1. lists only the hour partitions inside the window (`daic.sidecar.records.list_parts`);
2. reads those four columns of each part, skipping a part whose ``times`` statistics (in its
   footer) lie wholly outside the window, with at most ``max_parallel`` parts in flight (ranged
   GETs through Arrow's own filesystems: ``S3FileSystem`` for ``s3://`` stores, the local one for
   ``file://``);
3. turns every part into a compact block: a 64-bit key per input (SipHash-2-4 of its id, pandas'
   ``hash_array``), ``p_correct``, the prediction and the part's number;
4. drops repeated keys (the sidecar writes at least once) keeping the earliest part's row, and
   orders the pool by key, so the same records give the same pool whatever order parts arrive in.

The pool is then about 28 B a row (key, P(correct) and prediction in the `Pool`, the part number
beside it) instead of three copies of every id string; an id string is looked up again only for
the inputs drawn (:func:`daic.sampling.fetch.fetch_rows`), from the parts that hold them, with
their images. How a part is opened and checked is :mod:`daic.sampling.parts`, shared by the scan,
the fetch and the abstained pass.

Past one machine, `scan_pool(..., ray_address=...)` runs steps 2-3 on Ray Data
(``read_parquet`` with the column projection pushed down, over the parts the driver kept by their
footers; the window test and the compaction run as ``map_batches`` on the workers) and only the
compact blocks travel to the driver, where step 4 runs unchanged. Both engines yield the same pool,
so a seed gives the same sample (tests/test_sampling_scan.py). Both refuse a part that is not
Parquet, lacks or retypes a scan column, has damaged pages, or holds a NaN, infinite or null time,
a null or empty id, a P(correct) or a class no pool holds, with one CorruptObject naming it (on
Ray, each part's footer is checked on the driver before Ray reads it; tests/test_corrupt_objects_fetch.py,
tests/test_corrupt_objects_scan.py).

Two distinct ids share a key with probability about n^2 / 2^65 (60M inputs, a week at 100
requests/s: 1e-4); one of the two inputs would then be missing from the pool.
"""
from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from daic.sampling.parts import (BAD_ID, BAD_TIME, ScanStats, arrow_filesystem, check_block, check_ids,
                                 check_times, corrupt_part, ids_ok, npz_columns, part_file)
from daic.sampling.pool import Pool
from daic.sidecar import records as rec
from daic.storage import ObjectStore
from daic.storage.parsed import CorruptObject

log = logging.getLogger(__name__)

SCAN_COLUMNS: tuple[str, ...] = ("ids", "times", "predictions", "p_correct")
MAX_PARALLEL = 8          # parts read at once (concurrent ranged GETs)
_HASH_KEY = "daic-pool-ids-1"  # 16 bytes for SipHash; fixed so keys are stable across runs
_HASH_KEY = (_HASH_KEY * 2)[:16]


def id_keys(ids: np.ndarray | pa.Array | pa.ChunkedArray) -> np.ndarray:
    """(n,) uint64 key of each id string (SipHash-2-4 with a fixed key, via pandas)."""
    if isinstance(ids, (pa.Array, pa.ChunkedArray)):
        ids = ids.to_numpy(zero_copy_only=False)
    ids = np.asarray(ids, dtype=object)
    if ids.size == 0:
        return np.zeros(0, np.uint64)
    return pd.util.hash_array(ids, hash_key=_HASH_KEY, categorize=False)


# -- compact blocks (the same function runs locally and on Ray workers) -------------------------

def window_mask(times: np.ndarray, since: float | None, until: float | None) -> np.ndarray:
    keep = np.ones(times.shape[0], bool)
    if since is not None:
        keep &= times >= since
    if until is not None:
        keep &= times < until
    return keep


def compact(table: pa.Table, since: float | None, until: float | None) -> dict[str, np.ndarray]:
    """key, p_correct, prediction of the rows of ``table`` inside the window."""
    times = table.column("times").to_numpy()
    keep = window_mask(times, since, until)
    ids = table.column("ids")
    if not keep.all():
        ids = ids.filter(pa.array(keep))
    return {
        "key": id_keys(ids),
        "p_correct": table.column("p_correct").to_numpy()[keep].astype(np.float32),
        "prediction": table.column("predictions").to_numpy()[keep].astype(np.int32),
    }


def _overlapping_row_groups(meta: pq.FileMetaData, since: float | None, until: float | None,
                            column: int) -> list[int]:
    groups = []
    for g in range(meta.num_row_groups):
        stats = meta.row_group(g).column(column).statistics
        if stats is not None and stats.has_min_max:
            if (until is not None and stats.min >= until) or (since is not None and stats.max < since):
                continue
        groups.append(g)
    return groups


def _window_groups(pf: pq.ParquetFile, since: float | None, until: float | None) -> list[int]:
    """The row groups of an open part that a window's readers read (the scan on either engine, the
    abstained pass): every one when the ``times`` statistics of any lie inside the window, else none.

    Whole parts, not only the row groups that overlap the window, so that both engines check the
    same rows and refuse the same parts. A NaN (or null) time is in no window, so a row-level window
    test drops its row unseen; the local engine checks every time it reads before that test. On Ray
    the only way to skip row groups is a window filter pushed down into the reader, and that drops
    such a row before any code of ours (the workers' ``map_batches``) sees it; Parquet statistics
    carry no NaN count, so the footer cannot say which parts hold one either. So the choice is made
    per part, by this function, on the footer both engines read anyway (on Ray, `_check_footer` on
    the driver): Ray reads the parts kept, unfiltered, and its workers check every time before
    applying the window, as the local engine does. (A filter written to keep NaN rows,
    ``~(times < since) & ~(times >= until)``, prunes the same row groups but still drops null and
    infinite times, and would tie the engines' agreement to Arrow's pruning rules.) The cost: the
    row groups outside the window of the part or two straddling each end of it, four small columns;
    a part is one flush, usually one row group."""
    groups = _overlapping_row_groups(pf.metadata, since, until, pf.schema_arrow.get_field_index("times"))
    return list(range(pf.num_row_groups)) if groups else []


def _npz_scan_table(store: ObjectStore, key: str, raw: bytes) -> pa.Table:
    """The four scan columns of an old ``.npz`` batch; CorruptObject naming it when it is not one."""
    arrays = npz_columns(store, key, raw, SCAN_COLUMNS)
    return pa.table({**arrays, "ids": arrays["ids"].astype(str)})


def _checked_compact(store: ObjectStore, key: str, table: pa.Table, since: float | None,
                     until: float | None) -> dict[str, np.ndarray]:
    """:func:`compact` of a part's rows once their values are what a pool holds: finite times (a NaN
    time fell out of every window unseen), ids that are non-empty strings (all the rows read, as the
    times), and the values :func:`check_block` checks."""
    check_times(store, key, table.column("times").to_numpy())
    check_ids(store, key, table.column("ids"))
    block = compact(table, since, until)
    check_block(store, key, block)
    return block


def _scan_part(store: ObjectStore, fs: pafs.FileSystem | None, root: str, key: str,
               since: float | None, until: float | None, stats: ScanStats) -> dict[str, np.ndarray]:
    """The compact block of one part; CorruptObject naming the part when it is not a part of
    records (not Parquet or npz, a scan column missing or of another type, values no pool holds)."""
    if key.endswith(".npz"):  # an old batch: the whole object (rec.convert_npz_batches retires them)
        raw = store.get_bytes(key)
        stats.add(bytes_read=len(raw), requests=1, parts_read=1)
        table = _npz_scan_table(store, key, raw)
        stats.add(rows_read=table.num_rows)
        return _checked_compact(store, key, table, since, until)
    with part_file(store, fs, root, key, stats, SCAN_COLUMNS) as pf:
        meta = pf.metadata
        groups = _window_groups(pf, since, until)
        stats.add(parts_read=1, row_groups_read=len(groups), row_groups_skipped=meta.num_row_groups - len(groups))
        if not groups:
            table = pa.table({c: pa.array([], pf.schema_arrow.field(c).type) for c in SCAN_COLUMNS})
        else:
            table = pf.read_row_groups(groups, columns=list(SCAN_COLUMNS))
    stats.add(rows_read=table.num_rows)
    return _checked_compact(store, key, table, since, until)


# -- the pool ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class PoolScan:
    """A window's pool and where each input lives.

    ``pool.ids`` are the inputs' 64-bit keys (sorted, unique); ``part_of[i]`` is the index in
    ``parts`` (object keys) of the part holding input ``i``: the table to find it again.
    """

    pool: Pool
    part_of: np.ndarray
    parts: tuple[str, ...]
    stats: ScanStats

    def summary(self) -> dict:
        """What later steps need of the pool besides the drawn inputs."""
        p = self.pool.p_correct
        hist = np.histogram(p, bins=20, range=(0.0, 1.0))[0]
        return {"pool_size": self.pool.size, "oracle_accuracy": self.pool.oracle_accuracy,
                "p_correct_histogram": hist.tolist(),
                "predicted_classes": np.bincount(self.pool.predictions).tolist(),
                "parts": len(self.parts), "scan": self.stats.to_dict()}


def impute_unscored(p_correct: np.ndarray) -> tuple[np.ndarray, int]:
    """(P(correct) with NaN replaced, how many were NaN). The sidecar records an input it could not
    score (no usable reference for the version, a scoring failure) with P(correct) NaN rather than
    lose it; such inputs stay in the pool, with the mean of the scored ones (0.5 when none is).

    Why not drop them: the estimate would then not cover them, and they are the inputs the oracle
    knew least about. Why any value will do: P(correct) only chooses strata and sampling
    probabilities; the design's inclusion probabilities stay known whatever it is, so the
    estimators stay unbiased and their intervals valid (a poor score only widens them)."""
    p = np.asarray(p_correct, dtype=np.float64)
    missing = np.isnan(p)
    n = int(missing.sum())
    if not n:
        return p, 0
    fill = float(p[~missing].mean()) if n < p.size else 0.5
    return np.where(missing, fill, p), n


class EmptyWindow(ValueError):
    """The window holds no operational input (no part listed in it, or none of their rows inside).
    A ValueError, as every caller already treats it; its own class so that a caller that waits for
    a window still being written (``sample-operational``) need not match the message."""


def merge_blocks(blocks: list[dict[str, np.ndarray]], part_numbers: list[np.ndarray]) -> tuple[Pool, np.ndarray, int, int]:
    """One pool from compact blocks: repeated keys dropped (the lowest part number kept), ordered
    by key; unscored inputs given a P(correct) (:func:`impute_unscored`). Pure: the same blocks in
    any order give the same pool. Returns (pool, part of each input, duplicates, unscored)."""
    if not blocks or not sum(b["key"].size for b in blocks):
        raise EmptyWindow("no operational inputs in the window")
    key = np.concatenate([b["key"] for b in blocks])
    part = np.concatenate(part_numbers).astype(np.int32)
    order = np.lexsort((part, key))
    sorted_key = key[order]
    first = np.ones(sorted_key.size, bool)
    first[1:] = sorted_key[1:] != sorted_key[:-1]
    take = order[first]
    unique_keys = sorted_key[first]
    del order, first, sorted_key
    p, unscored = impute_unscored(np.concatenate([b["p_correct"] for b in blocks])[take])
    pred = np.concatenate([b["prediction"] for b in blocks])[take]
    pool = Pool(ids=unique_keys, p_correct=p, predictions=pred)
    return pool, part[take], int(key.size - take.size), unscored


def scan_pool(store: ObjectStore, deployment: str, since: float | None = None, until: float | None = None,
              *, max_parallel: int = MAX_PARALLEL, ray_address: str | None = None) -> PoolScan:
    """The pool of ``deployment``'s inputs with ``since <= time < until`` (see module docstring).

    ``ray_address``: None or "" reads here with ``max_parallel`` threads; an address (``auto``,
    ``ray://...``, or ``local`` for a private local Ray) reads on Ray Data. Raises ValueError
    naming the prefix and window (:class:`EmptyWindow`) when the window holds no input.
    """
    if isinstance(max_parallel, bool) or not isinstance(max_parallel, int) or max_parallel < 1:
        raise ValueError(f"max_parallel must be a positive integer, got {max_parallel!r}")
    start = time.perf_counter()
    parts = rec.list_parts(store, deployment, since, until)
    stats = ScanStats(engine="ray" if ray_address else "local", parts_listed=len(parts))
    try:
        if not parts:
            raise EmptyWindow("no parts")
        if ray_address:
            blocks, numbers = _scan_on_ray(store, parts, since, until, ray_address, max_parallel, stats)
        else:
            blocks, numbers = _scan_here(store, parts, since, until, max_parallel, stats)
        pool, part_of, dup, unscored = merge_blocks(blocks, numbers)
    except EmptyWindow:
        raise EmptyWindow(
            f"no operational inputs under {store.url}/{rec.PREFIX}/{deployment}/ in the window "
            f"[{since if since is not None else '-inf'}, {until if until is not None else '+inf'})"
        ) from None
    stats.duplicates_dropped, stats.unscored = dup, unscored
    stats.seconds = time.perf_counter() - start
    return PoolScan(pool=pool, part_of=part_of, parts=tuple(parts), stats=stats)


def _scan_here(store, parts, since, until, max_parallel, stats):
    fs, root = (None, "") if all(k.endswith(".npz") for k in parts) else arrow_filesystem(store)
    with ThreadPoolExecutor(max_workers=max_parallel, thread_name_prefix="scan") as pool:
        blocks = list(pool.map(lambda k: _scan_part(store, fs, root, k, since, until, stats), parts))
    numbers = [np.full(b["key"].size, n, np.int32) for n, b in enumerate(blocks)]
    return blocks, numbers


# What `_compact_ray_batch` marks a row that the driver must refuse its part for (``fault`` column).
_FAULT_TIME, _FAULT_ID = 1, 2


def _compact_ray_batch(batch: pa.Table, numbers: dict, since, until) -> pa.Table:
    """Ray Data ``map_batches``: a block of projected rows (of whole parts, unfiltered: see
    `_window_groups`) -> the compact columns of its rows inside the window, and of its rows whose
    time is NaN, infinite or null (``fault`` `_FAULT_TIME`) or whose id is null or empty
    (`_FAULT_ID`), wherever their time lies, for the driver to refuse their part
    (`_check_ray_block`), as the local engine refuses it. One byte a row, as the flag it replaces."""
    times = batch.column("times").to_numpy()  # a null time reads as NaN
    finite = np.isfinite(times)
    id_ok = ids_ok(batch.column("ids"))
    fault = np.where(~finite, _FAULT_TIME, np.where(~id_ok, _FAULT_ID, 0)).astype(np.uint8)
    keep = window_mask(times, since, until) | (fault != 0)
    if not keep.all():
        batch, fault = batch.filter(pa.array(keep)), fault[keep]
    block = compact(batch, None, None)
    paths = batch.column("path").combine_chunks().dictionary_encode()
    number = np.array([numbers[p] for p in paths.dictionary.to_pylist()], dtype=np.int32)
    part = number[paths.indices.to_numpy(zero_copy_only=False)] if len(paths) else np.zeros(0, np.int32)
    return pa.table({"key": block["key"], "p_correct": block["p_correct"],
                     "prediction": block["prediction"], "part": part, "fault": fault})


def _scan_on_ray(store, parts, since, until, address, max_parallel, stats):
    import ray
    import ray.data

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if not ray.is_initialized():
        ray.init(address=None if address == "local" else address, include_dashboard=False,
                 log_to_driver=False, logging_level=logging.WARNING)
    npz = [k for k in parts if k.endswith(".npz")]
    parquet = [k for k in parts if not k.endswith(".npz")]
    blocks, numbers, read = [], [], []
    if npz:  # old batches (few, and going away): read here, as the local engine does
        index = {k: n for n, k in enumerate(parts)}
        for k in npz:
            b = _scan_part(store, None, "", k, since, until, stats)
            blocks.append(b)
            numbers.append(np.full(b["key"].size, index[k], np.int32))
    if parquet:
        fs, root = arrow_filesystem(store)
        # Every part's footer and schema are checked here before Ray reads them: Ray's own reader
        # names no part when a footer is cut off or not Parquet, refuses a retyped column as
        # "Unable to merge" (which part?), and read a part lacking a scan column as a column of
        # nulls, a pool of garbage. One ranged read of a part's last 8 KiB (the footer, which Ray
        # reads too) is all it costs; no part is read twice. The same footers say which parts hold
        # rows in the window (`_window_groups`): only those are given to Ray.
        with ThreadPoolExecutor(max_workers=max_parallel, thread_name_prefix="footer") as pool:
            inside = list(pool.map(lambda k: _check_footer(store, fs, root, k, since, until, stats), parquet))
        read = [k for k, keep in zip(parquet, inside) if keep]
        stats.add(parts_read=len(parquet))  # as the local engine counts them: opened
    if read:
        paths = [f"{root}/{k}" for k in read]
        number = {k: n for n, k in enumerate(parts)}
        index = {f"{root}/{k}": number[k] for k in read}
        # Only the projection is pushed down into the Parquet reads. The window is applied by the
        # workers (`_compact_ray_batch`), not by a pushed-down filter: that would drop a row with
        # a NaN or null time before any code saw it (see `_window_groups`).
        ds = ray.data.read_parquet(paths, filesystem=fs, include_paths=True, partitioning=None)
        ds = ds.select_columns([*SCAN_COLUMNS, "path"])
        ds = ds.map_batches(_compact_ray_batch, batch_format="pyarrow",
                            fn_kwargs={"numbers": index, "since": since, "until": until})
        try:
            for ref in ds.to_arrow_refs():
                table = ray.get(ref)
                block = {"key": table.column("key").to_numpy(), "p_correct": table.column("p_correct").to_numpy(),
                         "prediction": table.column("prediction").to_numpy()}
                _check_ray_block(store, parts, block, table.column("part").to_numpy(),
                                 table.column("fault").to_numpy())
                stats.add(rows_read=table.num_rows)
                blocks.append(block)
                numbers.append(table.column("part").to_numpy())
        except ray.exceptions.RayTaskError as exc:  # a damaged column chunk behind a whole footer
            if not isinstance(exc.cause, (OSError, pa.ArrowException)):
                raise
            raise _ray_read_error(store, root, read, exc.cause) from None
    stats.bytes_read = stats.requests = None  # Ray's readers do not report them
    return blocks, numbers


def _check_footer(store: ObjectStore, fs: pafs.FileSystem, root: str, key: str, since: float | None,
                  until: float | None, stats: ScanStats) -> bool:
    """Part ``key``'s footer is readable and its schema holds the scan columns (see `part_file`);
    whether the scan reads it (`_window_groups`), its row groups counted in ``stats`` as read or
    skipped, as the local engine counts them."""
    with part_file(store, fs, root, key, stats, SCAN_COLUMNS) as pf:
        groups = _window_groups(pf, since, until)
        stats.add(row_groups_read=len(groups), row_groups_skipped=pf.num_row_groups - len(groups))
        return bool(groups)


def _check_ray_block(store: ObjectStore, parts: list[str], block: dict[str, np.ndarray], part: np.ndarray,
                     fault: np.ndarray) -> None:
    """`check_times`, `check_ids` and `check_block`, in that order, on a block Ray made of rows
    of many parts (``fault`` marked by `_compact_ray_batch`), naming the part of its first bad row."""
    for code, what in ((_FAULT_TIME, BAD_TIME), (_FAULT_ID, BAD_ID)):
        bad = np.flatnonzero(fault == code)
        if bad.size:
            raise corrupt_part(store, parts[part[bad[0]]], what)
    p, prediction = block["p_correct"], block["prediction"]
    bad = np.flatnonzero((p < 0) | (p > 1) | (prediction < 0))
    if bad.size:
        mine = part == part[bad[0]]
        check_block(store, parts[part[bad[0]]], {k: v[mine] for k, v in block.items()})


def _ray_read_error(store: ObjectStore, root: str, parquet: list[str], cause: Exception) -> CorruptObject:
    """CorruptObject for a read that failed on a Ray worker: naming the part when Arrow's message
    holds its path (Ray Data adds "Failed to read fragment <path>"), else the parts' prefix."""
    text = str(cause)
    first = text.strip().splitlines()[0] if text.strip() else type(cause).__name__
    key = next((k for k in parquet if f"{root}/{k}" in text), None)
    if key is not None:
        return corrupt_part(store, key, f"not a readable Parquet file: {first}")
    return CorruptObject(f"{store.url}: an operational part under {os.path.commonpath(parquet)!r} is not a "
                         f"readable Parquet file (read on Ray): {first}")

