"""Which examples each data-parallel worker sees (pure logic, known answers)."""
from collections import Counter

import numpy as np
import pytest

from daic.training.sharding import epoch_pool, shard_batches, steps_per_epoch


def test_pool_repeats_operational_examples():
    pool = epoch_pool(5, 3, oversample=4)
    counts = Counter(pool.tolist())
    assert [counts[i] for i in range(5)] == [1] * 5
    assert [counts[i] for i in range(5, 8)] == [4] * 3
    assert len(pool) == 5 + 12


@pytest.mark.parametrize("world", [1, 2, 3])
def test_workers_cover_the_pool_disjointly_with_equal_step_counts(world):
    pool = epoch_pool(101, 7, oversample=3)
    shards = [shard_batches(pool, seed=5, epoch=2, rank=r, world_size=world, batch_size=8) for r in range(world)]
    assert len({len(s) for s in shards}) == 1  # DDP needs the same number of steps everywhere
    assert len(shards[0]) == steps_per_epoch(len(pool), world, 8)
    seen = np.concatenate([np.concatenate(s) for s in shards])
    padded = -(-len(pool) // world) * world
    assert len(seen) == padded
    # Every pool entry is seen as often as it is in the pool; only the wrap-around padding adds.
    assert not Counter(pool.tolist()) - Counter(seen.tolist())
    assert sum((Counter(seen.tolist()) - Counter(pool.tolist())).values()) == padded - len(pool)


def test_order_is_seeded_per_epoch():
    pool = epoch_pool(50, 0, 1)
    a = shard_batches(pool, seed=1, epoch=0, rank=0, world_size=1, batch_size=50)[0]
    b = shard_batches(pool, seed=1, epoch=0, rank=0, world_size=1, batch_size=50)[0]
    c = shard_batches(pool, seed=1, epoch=1, rank=0, world_size=1, batch_size=50)[0]
    d = shard_batches(pool, seed=2, epoch=0, rank=0, world_size=1, batch_size=50)[0]
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c) and not np.array_equal(a, d)
    assert sorted(a.tolist()) == list(range(50))


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="oversample"):
        epoch_pool(3, 1, 0)
    with pytest.raises(ValueError, match="nothing to train on"):
        epoch_pool(0, 0, 1)
    with pytest.raises(ValueError, match="rank 2"):
        shard_batches(epoch_pool(3, 0, 1), seed=0, epoch=0, rank=2, world_size=2, batch_size=1)
    with pytest.raises(ValueError, match="batch_size"):
        shard_batches(epoch_pool(3, 0, 1), seed=0, epoch=0, rank=0, world_size=1, batch_size=0)
