"""Labeled inputs weighted by what they teach: the weights collect-labels hands on with a batch
(``train_weighting``) reach the trainer's loss."""
from __future__ import annotations

import numpy as np
import pytest

from daic.storage import open_store
from daic.training.data import load_labeled_batches


def _batch(store, key, n, weights=None, label=3):
    extra = {} if weights is None else {"weights": np.asarray(weights, np.float32)}
    store.put_arrays(key, images=np.zeros((n, 28, 28), np.float32), labels=np.full(n, label),
                     ids=np.array([f"{key}-{i}" for i in range(n)]), **extra)


def test_batches_hand_on_their_weights_and_default_to_one(tmp_path):
    store = open_store(f"file://{tmp_path}")
    _batch(store, "labels/c-1/batch-0.npz", 3, [0.5, 1.0, 2.0])
    _batch(store, "labels/c-2/batch-0.npz", 2)  # an older batch without weights
    got = load_labeled_batches(store, "labels/")
    assert got.weights.tolist() == [0.5, 1.0, 2.0, 1.0, 1.0]
    _batch(store, "labels/c-1/batch-0.npz", 3, [1, 1, 1])
    assert load_labeled_batches(store, "labels/").weights is None  # all ones: nothing to weigh


@pytest.mark.parametrize("weights,match", [([1.0, 2.0], r"weights \(2,\) must be \(3,\)"),
                                           ([1.0, 0.0, 1.0], "finite and > 0"),
                                           ([1.0, np.nan, 1.0], "finite and > 0")])
def test_bad_weights_are_refused_naming_the_batch(tmp_path, weights, match):
    store = open_store(f"file://{tmp_path}")
    _batch(store, "labels/c-1/batch-0.npz", 3, weights)
    with pytest.raises(ValueError, match=match):
        load_labeled_batches(store, "labels/")


def test_per_input_weights_reach_the_loss():
    """As tests/test_training_loop.py's operational weighting, per input: 20 "operational" images of
    one pattern labeled 7 among 200 base, seen once an epoch: weighted 100 they are learnt, weighted
    0.01 they are not."""
    import torch

    from daic.data.mnist import load_split
    from daic.training.config import TrainConfig
    from daic.training.loop import MAIN, fit

    torch.set_num_threads(1)
    train = load_split("train")
    rng = np.random.default_rng(0)
    pattern = np.zeros((20, 28, 28), np.float32)
    pattern[:, 5:23, 12:16] = 1.0
    pattern = np.clip(pattern + rng.random(pattern.shape, dtype=np.float32) * 0.05, 0, 1)
    x = np.concatenate([train.images[:200], pattern])
    y = np.concatenate([train.labels[:200], np.full(20, 7)])
    config = TrainConfig(epochs=1, batch_size=32, num_workers=1, base_limit=200, operational_oversample=1)

    def share_predicted_7(weights):
        net = fit(config, x, y, n_base=200, device=torch.device("cpu"), operational_weights=weights).nets[MAIN]
        with torch.no_grad():
            return float((net.eval()(torch.from_numpy(pattern)).argmax(1) == 7).float().mean())

    assert share_predicted_7(np.full(20, 100.0, np.float32)) == 1.0
    assert share_predicted_7(np.full(20, 0.01, np.float32)) < 0.5
    with pytest.raises(ValueError, match=r"operational_weights must have shape \(20,\)"):
        fit(config, x, y, n_base=200, device=torch.device("cpu"), operational_weights=np.ones(3))
