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

Reading the flag: a second pass over the window's parts reading only ``ids``, ``times`` and
``abstained`` (parts written before the flag existed are skipped), matched to the scan's pool by
its 64-bit id keys (:func:`daic.sampling.scan.id_keys`). On the local engine only (a Ray scan gives
the same pool, and this pass runs on the driver after it).
"""
from __future__ import annotations

import io
import logging

import numpy as np
import pyarrow.parquet as pq

from daic.sampling.scan import PoolScan, id_keys, window_mask
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


def abstained_positions(store: ObjectStore, scan: PoolScan, since: float | None, until: float | None) -> np.ndarray:
    """Pool positions of the window's inputs the model server abstained on (see the module docstring)."""
    keys = []
    for key in scan.parts:
        if not key.endswith(".parquet"):
            continue  # old .npz batches predate the flag
        f = pq.ParquetFile(io.BytesIO(store.get_bytes(key)))
        if "abstained" not in f.schema_arrow.names:
            continue
        table = f.read(columns=_COLUMNS)
        flag = table.column("abstained").to_numpy(zero_copy_only=False).astype(bool)
        flag &= window_mask(table.column("times").to_numpy(), since, until)
        if flag.any():
            ids = table.column("ids").to_numpy(zero_copy_only=False)[flag]
            keys.append(id_keys(ids))
    if not keys:
        return np.zeros(0, np.int64)
    wanted = np.unique(np.concatenate(keys))
    pool_keys = np.asarray(scan.pool.ids)
    at = np.searchsorted(pool_keys, wanted)
    found = (at < pool_keys.size) & (pool_keys[np.minimum(at, pool_keys.size - 1)] == wanted)
    return at[found].astype(np.int64)
