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
