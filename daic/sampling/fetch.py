"""The drawn inputs' ids and images, read back from the operational parts that hold them.

The scan (:mod:`daic.sampling.scan`) keeps a 64-bit key per input, not its id or image; once a
design has drawn its few inputs, :func:`fetch_rows` opens only the parts holding them and reads
only the ``ids`` column and the ``inputs`` row groups needed. It runs after the scan, so the parts
are checked again (:mod:`daic.sampling.parts`): one changed, damaged or deleted since is refused
by name, never handed to labelers or training.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs

from daic.sampling.parts import ScanStats, arrow_filesystem, checked_images, corrupt_part, npz_columns, part_file
from daic.sampling.scan import MAX_PARALLEL, PoolScan, id_keys
from daic.sidecar import records as rec
from daic.storage import ObjectStore


# -- the drawn inputs -----------------------------------------------------------------------

def fetch_rows(store: ObjectStore, scan: PoolScan, positions: np.ndarray, max_parallel: int = MAX_PARALLEL,
               stats: ScanStats | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(ids, images) of the pool inputs at ``positions`` (in that order): only the parts that hold
    them are opened, and of those only the ``ids`` column and the ``inputs`` row groups needed.
    What it read is added to ``stats`` when given.

    The parts are read again, after the scan, by another path than the scan's (other columns), so
    they are checked again here, as the scan checks its columns: a part deleted since the scan is a
    KeyNotFound, one that is not a part holding those inputs as ids and (N, 28, 28) images of
    finite pixels in [0, 1] a CorruptObject, each naming the part (StorageErrors: the steps fail
    with that one line, as on a corrupt part in the scan). Only the images returned are checked:
    the others are not read, or not used."""
    stats = ScanStats() if stats is None else stats
    positions = np.asarray(positions, dtype=np.int64)
    keys = scan.pool.ids[positions]
    parts = scan.part_of[positions]
    ids = np.empty(positions.size, dtype=object)
    images = np.empty((positions.size, *rec.IMAGE_SHAPE), np.float32)
    fs, root = (None, "") if all(k.endswith(".npz") for k in scan.parts) else arrow_filesystem(store)

    def one(part: int) -> None:
        where = np.flatnonzero(parts == part)
        key = scan.parts[part]
        stats.add(parts_read=1)
        ids[where], images[where] = _fetch_part(store, fs, root, key, keys[where], stats)

    with ThreadPoolExecutor(max_workers=max_parallel, thread_name_prefix="fetch") as pool:
        list(pool.map(one, np.unique(parts).tolist()))
    return ids.astype(str), images


def _fetch_part(store: ObjectStore, fs: pafs.FileSystem | None, root: str, key: str, wanted: np.ndarray,
                stats: ScanStats) -> tuple[np.ndarray, np.ndarray]:
    """(ids, images) of the inputs whose keys are ``wanted`` in part ``key`` (see `fetch_rows`)."""
    if key.endswith(".npz"):
        raw = store.get_bytes(key)  # KeyNotFound naming it when it is gone
        stats.add(bytes_read=len(raw), requests=1)
        arrays = npz_columns(store, key, raw, ("ids", "inputs"))
        file_ids = arrays["ids"].astype(str)
        rows = _rows_of(store, key, id_keys(file_ids), wanted)
        return file_ids[rows], checked_images(store, key, arrays["inputs"][rows])
    with part_file(store, fs, root, key, stats, ("ids", "inputs")) as pf:
        column = pf.read(columns=["ids"]).column("ids")
        if column.null_count:
            raise corrupt_part(store, key, "column 'ids' holds a null id")
        file_ids = column.to_numpy(zero_copy_only=False)
        rows = _rows_of(store, key, id_keys(file_ids), wanted)
        starts = np.cumsum([0] + [pf.metadata.row_group(g).num_rows for g in range(pf.num_row_groups)])
        groups = np.unique(np.searchsorted(starts, rows, side="right") - 1)
        table = pf.read_row_groups(groups.tolist(), columns=["inputs"])
        stats.add(row_groups_read=len(groups))
    local = np.concatenate([np.arange(starts[g], starts[g + 1]) for g in groups])
    picked = table.take(pa.array(np.searchsorted(local, rows)))
    if picked.column("inputs").null_count:  # a null image would shift every later one by 784 pixels
        raise corrupt_part(store, key, "column 'inputs' holds a null image")
    return file_ids[rows], checked_images(store, key, rec.column_as_numpy(picked, "inputs"))


def _rows_of(store: ObjectStore, key: str, file_keys: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Row of each ``wanted`` key in the part; CorruptObject naming it when one is not there (the
    part was replaced or rewritten since the pool was read)."""
    if file_keys.size == 0:
        raise corrupt_part(store, key, "holds no input (changed since the pool was read)")
    order = np.argsort(file_keys, kind="stable")
    pos = np.searchsorted(file_keys, wanted, sorter=order)
    pos = np.minimum(pos, file_keys.size - 1)
    rows = order[pos]
    if not np.array_equal(file_keys[rows], wanted):
        raise corrupt_part(store, key, "changed since the pool was read (an input is missing)")
    return rows
