"""Which examples each data-parallel worker sees in each epoch (pure; no torch, no Ray).

The epoch's pool is every base example once plus every operational example
``oversample`` times; it is shuffled by a generator seeded with ``(seed, epoch)`` -- the same on
every worker, so the shards are disjoint without communication -- padded by wrapping around to a
multiple of the worker count (as ``torch.utils.data.DistributedSampler`` does, so every worker runs
the same number of steps and DDP's all-reduce never waits on a missing peer), then dealt out
round-robin and cut into batches.
"""
from __future__ import annotations

import math

import numpy as np


def epoch_pool(n_base: int, n_operational: int, oversample: int) -> np.ndarray:
    """Indices into ``concat(base, operational)``: base once, operational ``oversample`` times."""
    if n_base < 0 or n_operational < 0:
        raise ValueError(f"counts must be >= 0, got n_base={n_base}, n_operational={n_operational}")
    if oversample < 1:
        raise ValueError(f"oversample must be >= 1, got {oversample}")
    if n_base + n_operational == 0:
        raise ValueError("nothing to train on: n_base + n_operational == 0")
    base = np.arange(n_base, dtype=np.int64)
    operational = np.tile(np.arange(n_base, n_base + n_operational, dtype=np.int64), oversample)
    return np.concatenate([base, operational])


def shard_order(pool: np.ndarray, *, seed: int, epoch: int, rank: int, world_size: int) -> np.ndarray:
    """This worker's examples for one epoch, in training order (cut into batches by the caller:
    the order is copied to a GPU once per epoch and sliced there, not copied batch by batch)."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
    order = pool[np.random.default_rng([seed, epoch]).permutation(len(pool))]
    padded_len = math.ceil(len(order) / world_size) * world_size
    if padded_len > len(order):
        order = np.concatenate([order, order[: padded_len - len(order)]])
    return order[rank::world_size]


def batch_bounds(n: int, batch_size: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of each batch of an order of length ``n`` (the last one may be short)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return [(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]


def shard_batches(
    pool: np.ndarray, *, seed: int, epoch: int, rank: int, world_size: int, batch_size: int
) -> list[np.ndarray]:
    """This worker's batches for one epoch (the last one may be short)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    mine = shard_order(pool, seed=seed, epoch=epoch, rank=rank, world_size=world_size)
    return [mine[a:b] for a, b in batch_bounds(len(mine), batch_size)]


def steps_per_epoch(pool_size: int, world_size: int, batch_size: int) -> int:
    """Optimizer steps per worker per epoch (the same on every worker)."""
    return math.ceil(math.ceil(pool_size / world_size) / batch_size)
