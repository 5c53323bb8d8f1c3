"""Abstained inputs queued for labeling (issue 21, item 4), beside the cycle's sample, outside its estimate.

The model server abstained on an input when its P(correct) behind the filter was below the bound
(daic.serving.abstain); the sidecar's records keep that flag per input (``abstained``). The
sampling step queues the window's abstained inputs for labeling with the sample, lowest P(correct)
first, at most ``cap`` of them (labels cost money: the cap is the price of the queue).

**Kept out of the estimate, on purpose.** The queue is chosen by a deterministic rule on the
oracle's score, not by the design's randomness, so a queued input's inclusion probability is 1 (or
0) and unrelated to the design's. Folding the queue into the estimate would need it as a stratum
of its own, taken with certainty, and the rest of the window re-stratified without it; nothing is
gained by that for a count this small, and every design's estimator and interval would have to
learn about it. Instead the design draws from the whole window as before (a queued input may also
be drawn, and then it counts there like any draw), its inclusion probabilities are untouched, and
the offline estimate, its interval and the held-out draws use the design's draws only. The queued
labels go to training (never to the held-out part): they are the inputs where even the filter
cannot help, the mispredictions a retrained model most needs to see.

Reading the flag: a second pass over the window's Parquet parts reading only ``ids``, ``times``
and ``abstained`` of the row groups the scan read (ranged reads, never the images: the scan's
cost, not the window's), matched to the scan's pool by its 64-bit id keys
(:func:`daic.sampling.scan.id_keys`). Parts written before the flag existed lack the column and are
skipped (the records read it as all False); so are old ``.npz`` batches, which no release wrote with
the flag (Parquet parts replaced them first) and which would have to be fetched whole, images
included, to find that out. On the local engine only (a Ray scan gives the same pool, and this pass
runs on the driver after it).

The parts are opened as the scan and the fetch open them (:func:`daic.sampling.parts.part_file`)
and the flag is checked as the records' own reader checks it, because a wrong flag is not
harmless: a flag column of strings or numbers read ``astype(bool)`` would be all True and queue
every input of the window for labelling (labels cost money) without a word. So a part that is
gone is a KeyNotFound, and one that is not Parquet, lacks ``ids`` or ``times``, holds a flag that
is not boolean, a null flag, a null or empty id (as the scan checks ids), a NaN time, or a flag
column of another length than its ids (a damaged page) is one CorruptObject naming it; sample-operational lets either through, as it does
the scan's.
"""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow.fs as pafs

from daic.sampling.parts import (ScanStats, arrow_filesystem, check_ids, check_schema, check_times, corrupt_part,
                                 part_file)
from daic.sampling.scan import MAX_PARALLEL, PoolScan, _window_groups, id_keys, window_mask
from daic.storage import ObjectStore

log = logging.getLogger(__name__)
_COLUMNS = ["ids", "times", "abstained"]


def queue_abstained(abstained: np.ndarray, drawn: np.ndarray, p_correct: np.ndarray, cap: int) -> np.ndarray:
    """Pool positions to queue (pure): the abstained positions not among ``drawn``, lowest
    ``p_correct`` first (ties: lower position), at most ``cap``; sorted."""
    if isinstance(cap, bool) or not isinstance(cap, (int, np.integer)) or cap < 0:
        raise ValueError(f"cap must be an integer >= 0, got {cap!r}")
    abstained = np.unique(np.asarray(abstained, dtype=np.int64))
    rest = np.setdiff1d(abstained, np.asarray(drawn, dtype=np.int64))
    p = np.asarray(p_correct, dtype=np.float64)
    if rest.size and (rest.min() < 0 or rest.max() >= p.size):
        raise ValueError(f"abstained positions must lie in the pool (0..{p.size - 1})")
    order = np.lexsort((rest, p[rest]))
    return np.sort(rest[order[:cap]])


def abstained_positions(store: ObjectStore, scan: PoolScan, since: float | None, until: float | None, *,
                        max_parallel: int = MAX_PARALLEL, stats: ScanStats | None = None) -> np.ndarray:
    """Pool positions of the window's inputs the model server abstained on (see the module
    docstring), reading at most ``max_parallel`` parts at once; what it read is added to ``stats``
    when given. KeyNotFound / CorruptObject naming a part that is gone or not a part of records."""
    stats = ScanStats() if stats is None else stats
    parquet = [k for k in scan.parts if not k.endswith(".npz")]  # old .npz batches predate the flag
    if not parquet:
        return np.zeros(0, np.int64)
    fs, root = arrow_filesystem(store)
    with ThreadPoolExecutor(max_workers=max_parallel, thread_name_prefix="abstained") as pool:
        keys = list(pool.map(lambda k: _abstained_keys(store, fs, root, k, since, until, stats), parquet))
    wanted = np.unique(np.concatenate(keys))
    pool_keys = np.asarray(scan.pool.ids)
    at = np.searchsorted(pool_keys, wanted)
    found = (at < pool_keys.size) & (pool_keys[np.minimum(at, pool_keys.size - 1)] == wanted)
    return at[found].astype(np.int64)


def _abstained_keys(store: ObjectStore, fs: pafs.FileSystem, root: str, key: str, since: float | None,
                    until: float | None, stats: ScanStats) -> np.ndarray:
    """Id keys of part ``key``'s inputs inside the window flagged abstained (none when the part
    predates the flag); the part checked as the module docstring says."""
    with part_file(store, fs, root, key, stats, ("ids", "times")) as pf:
        if pf.schema_arrow.get_field_index("abstained") < 0:  # written before the flag (records.OPTIONAL)
            return np.zeros(0, np.uint64)
        check_schema(store, key, pf.schema_arrow, ("abstained",))  # boolean, as records.arrow_schema writes it
        groups = _window_groups(pf, since, until)
        stats.add(parts_read=1, row_groups_read=len(groups), row_groups_skipped=pf.num_row_groups - len(groups))
        # One read of the three columns: Arrow refuses a column chunk holding another number of
        # values than its row group's rows (a flag column one short), as a damaged page.
        table = pf.read_row_groups(groups, columns=_COLUMNS)
    stats.add(rows_read=table.num_rows)
    if table.column("abstained").null_count:
        raise corrupt_part(store, key, "column 'abstained' holds a null flag")
    times = table.column("times").to_numpy()
    check_times(store, key, times)
    ids = table.column("ids")
    check_ids(store, key, ids)
    flag = table.column("abstained").to_numpy(zero_copy_only=False) & window_mask(times, since, until)
    if not flag.any():
        return np.zeros(0, np.uint64)
    return id_keys(ids.filter(flag))
