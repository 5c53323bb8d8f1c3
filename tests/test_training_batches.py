"""Batches come from one per-epoch index order (copied to the device once and sliced there), and
where the training set lives does not change what is trained: on CPU, the data-on-device path and
the pinned-staging path give bit-identical weights."""
from __future__ import annotations

import numpy as np
import torch

from daic.training.batches import DeviceBatches, PinnedHostBatches
from daic.training.config import TrainConfig
from daic.training.loop import fit
from daic.training.sharding import batch_bounds, shard_batches, shard_order

CPU = torch.device("cpu")


def _data(n=70, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random((n, 28, 28), dtype=np.float32), rng.integers(0, 10, n).astype(np.int64),
            rng.random(n, dtype=np.float32))


def test_epoch_batches_are_slices_of_one_order():
    images, labels, weights = _data()
    pool = np.arange(70)
    order = shard_order(pool, seed=3, epoch=1, rank=1, world_size=3)
    bounds = batch_bounds(len(order), 8)
    expected = shard_batches(pool, seed=3, epoch=1, rank=1, world_size=3, batch_size=8)
    assert [order[a:b].tolist() for a, b in bounds] == [b.tolist() for b in expected]
    for source in (DeviceBatches(images, labels, weights, CPU), PinnedHostBatches(images, labels, weights, CPU, 8)):
        got = list(source.epoch(order, bounds))
        assert len(got) == len(expected)
        for (x, y, w), index in zip(got, expected):
            assert torch.equal(x[:, 0], torch.from_numpy(images[index]))
            assert torch.equal(y, torch.from_numpy(labels[index])) and torch.equal(w, torch.from_numpy(weights[index]))


def test_where_the_data_lives_does_not_change_the_weights():
    images, labels, _ = _data(96)
    torch.set_num_threads(1)
    results = []
    for on_device in (True, False):
        config = TrainConfig(epochs=2, batch_size=16, num_workers=1, base_limit=96, data_on_device=on_device)
        result = fit(config, images, labels, n_base=96, device=CPU)
        assert result.plan.data_on_device is on_device
        results.append({k: v.detach().clone() for k, v in result.nets["model"].state_dict().items()})
    assert all(torch.equal(results[0][k], results[1][k]) for k in results[0])
