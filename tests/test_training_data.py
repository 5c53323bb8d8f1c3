"""The training set of a run: base split + labeled batches from the store, with lineage."""
import hashlib

import numpy as np
import pytest

from daic.data.mnist import load_split
from daic.storage import open_store
from daic.training.config import TrainConfig
from daic.training.data import assemble, load_labeled_batches


def _batch(n, seed, label=None):
    rng = np.random.default_rng(seed)
    labels = np.full(n, label, np.int64) if label is not None else rng.integers(0, 10, n).astype(np.int64)
    return {"images": rng.random((n, 28, 28), dtype=np.float32), "labels": labels,
            "ids": np.array([f"req-{seed}-{i}" for i in range(n)])}


@pytest.fixture
def store(tmp_path):
    return open_store(f"file://{tmp_path}")


def test_base_plus_every_batch_under_the_prefix(store):
    store.put_arrays("labels/c1/batch-0.npz", **_batch(5, 1, label=3))
    store.put_arrays("labels/c1/batch-1.npz", **_batch(7, 2, label=8))
    store.put_arrays("labels/c2/batch-0.npz", **_batch(4, 3))  # another cycle: not included
    data = assemble(TrainConfig(base_limit=100, labels_prefix="labels/c1/"), store, notes={"cycle": "c1"})
    base = load_split("train")
    assert (data.n_base, data.n_operational) == (100, 12)
    assert np.array_equal(data.images[:100], base.images[:100])
    assert data.labels[100:].tolist() == [3] * 5 + [8] * 7
    lineage = data.lineage
    assert [b.key for b in lineage.labeled_batches] == ["labels/c1/batch-0.npz", "labels/c1/batch-1.npz"]
    assert [b.count for b in lineage.labeled_batches] == [5, 7]
    raw = store.get_bytes("labels/c1/batch-1.npz")
    assert lineage.labeled_batches[1].sha256 == hashlib.sha256(raw).hexdigest()
    assert lineage.base_count == 100 and lineage.notes == {"cycle": "c1"}


def test_without_labels_only_the_base_split(store):
    data = assemble(TrainConfig(base_limit=30), store)
    assert data.n_operational == 0 and len(data.labels) == 30 and data.lineage.labeled_batches == []


@pytest.mark.parametrize("mutate,needle", [
    (lambda b: b.pop("ids"), "missing arrays: ids"),
    (lambda b: b.update(images=np.zeros((5, 32, 32), np.float32)), r"\(N, 28, 28\)"),
    (lambda b: b.update(labels=np.array([0, 1, 2, 3, 10])), r"\[0, 10\)"),
    (lambda b: b.update(labels=np.zeros(4, np.int64)), "must be"),
    (lambda b: b.update(images=np.full((5, 28, 28), 255, np.float32)), r"\[0, 1\]"),
    (lambda b: b.update(labels=np.zeros(5, np.float32)), "integers"),
])
def test_malformed_batches_are_named(store, mutate, needle):
    batch = _batch(5, 0)
    mutate(batch)
    store.put_arrays("labels/bad/batch-0.npz", **batch)
    with pytest.raises(ValueError, match=f"labels/bad/batch-0.npz.*{needle}"):
        load_labeled_batches(store, "labels/bad/")


def test_an_empty_prefix_is_an_error(store):
    with pytest.raises(ValueError, match="no labeled batches.*labels/none/"):
        load_labeled_batches(store, "labels/none/")
