"""The cycle's unlabelled operational inputs, for semi-supervised retraining.

The window sample-operational drew from holds many more inputs than were labelled. This reads the
same window again (:func:`daic.sampling.scan.scan_pool`: only the columns the pool needs), drops
every sampled input (the labelled training inputs are already in the trainer's batch and the
held-out ones must stay unseen for evaluate), draws up to ``limit`` of the rest uniformly with the
cycle's seed, fetches only their images and writes ``cycles/<c>/unlabeled.npz`` (``images``,
``p_correct``: the pseudo-oracle's score logged with each, ``ids``). The trainer reads it through
``TrainConfig.unlabeled_key`` (:mod:`daic.training.semi_supervised`).
"""
from __future__ import annotations

import numpy as np

from daic.components import cycle_store
from daic.storage import ObjectStore

UNLABELED = "unlabeled.npz"


def write_unlabeled_pool(store: ObjectStore, cycle: str, limit: int, seed: int = 0) -> tuple[str, int]:
    """(key, count) of the unlabelled inputs written for ``cycle``; count 0 writes nothing."""
    from daic.sampling.fetch import fetch_rows
    from daic.sampling.scan import id_keys, scan_pool

    if limit < 1:
        raise ValueError(f"unlabeled_limit must be >= 1 to write a pool, got {limit!r}")
    record = cycle_store.read_sample(store, cycle)
    meta = record.meta
    scan = scan_pool(store, meta["deployment"], meta["since"], meta.get("until"))
    ids = scan.pool.ids
    sampled = record.sampled_ids.astype(str)
    taken = np.isin(ids, id_keys(sampled)) if ids.dtype.kind in "iu" else np.isin(ids.astype(str), sampled)
    free = np.flatnonzero(~taken)
    key = cycle_store.key(cycle, UNLABELED)
    if free.size == 0:
        return key, 0
    rng = np.random.default_rng([seed, 0x0711AB])
    chosen = np.sort(rng.choice(free, size=min(limit, free.size), replace=False))
    row_ids, images = fetch_rows(store, scan, chosen)
    store.put_arrays(key, images=images.astype(np.float32), p_correct=scan.pool.p_correct[chosen],
                     ids=row_ids.astype(str))
    return key, int(chosen.size)
