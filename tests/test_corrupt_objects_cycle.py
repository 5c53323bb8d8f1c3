"""A cycle's records whose *contents* are wrong, read by components/cycle_store and the steps.

A real cycle is made by the steps themselves (sample-operational on logged operational records,
collect-labels with the simulated labeler, which also writes the held-out inputs); then each of
``sample.json``, ``sample.npz``, ``sample-inputs.npz``, ``labels.npz`` and ``holdout.npz`` is
replaced by seeded corrupted variants (tests/corrupt_variants.py) and read back. A reader must
return a valid record or raise a StorageError naming the key: never a KeyError, IndexError or
TypeError from inside, and never labels outside the classes. The estimate-accuracy step fails with
that one error.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from corrupt_variants import check_planted, json_variants, npz_bytes, npz_variants
from daic.components import cycle_store
from daic.components.collect_labels.logic import CollectConfig
from daic.components.collect_labels.logic import run as collect
from daic.components.estimate_accuracy.decision import DropRule
from daic.components.estimate_accuracy.logic import EstimateConfig
from daic.components.estimate_accuracy.logic import run as estimate
from daic.components.sample_operational.logic import SampleConfig
from daic.components.sample_operational.logic import run as sample
from daic.components.testing.operational import write_operational
from daic.data.mnist import load_split
from daic.data.scenarios import build_scenario
from daic.storage import StorageError, open_store

SPEC = dict(name="sudden", seed=3, batch_size=50, n_steps=6, drift_start=3, corruption="translate", severity=3)
SEEDS = (0, 1, 2)


def _classifier():
    train = load_split("train")
    x, y = train.images[:2000].reshape(2000, -1), train.labels[:2000]
    centroids = np.stack([x[y == c].mean(axis=0) for c in range(10)])

    def predict(images):
        logits = -0.5 * ((images.reshape(len(images), -1)[:, None, :] - centroids[None]) ** 2).sum(axis=-1)
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        return {"probs": probs / probs.sum(axis=1, keepdims=True)}

    return predict


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("cycle")
    store = open_store(f"file://{root}")
    write_operational(store, "mnist", build_scenario(**SPEC), _classifier())
    sample(store, SampleConfig(sampler="stratified", budget=60, cycle="c1", seed=4))
    collect(store, "c1", CollectConfig(backend="simulated", simulated_scenario=json.dumps(SPEC)))
    assert store.exists(cycle_store.key("c1", "holdout.npz"))
    return root


@pytest.fixture
def store(store_dir):
    return open_store(f"file://{store_dir}")



def _read_sample(store):
    record = cycle_store.read_sample(store, "c1")
    return record.sampled_ids, record.train_ids, record.holdout_ids, record.label_ids


@pytest.mark.parametrize("seed", SEEDS)
def test_sample_record_variants(store, seed):
    for name, variants in (("sample.json", json_variants), ("sample.npz", npz_variants)):
        key = cycle_store.key("c1", name)
        check_planted(store, key, variants(store.get_bytes(key), seed), lambda: _read_sample(store))


@pytest.mark.parametrize("seed", SEEDS)
def test_sample_inputs_labels_holdout_variants(store, seed):
    readers = {"sample-inputs.npz": cycle_store.read_sample_inputs, "labels.npz": cycle_store.read_labels,
               "holdout.npz": cycle_store.read_holdout}
    for name, read in readers.items():
        key = cycle_store.key("c1", name)
        check_planted(store, key, npz_variants(store.get_bytes(key), seed), lambda: read(store, "c1"))


def test_labels_outside_the_classes_are_refused(store):
    key = cycle_store.key("c1", "labels.npz")
    original = store.get_bytes(key)
    with np.load(__import__("io").BytesIO(original)) as npz:
        arrays = {k: npz[k] for k in npz.files}
    for bad in (10, 255, -2):
        labels = arrays["labels"].copy()
        labels[0] = bad
        store.put_bytes(key, npz_bytes(**{**arrays, "labels": labels}))
        try:
            with pytest.raises(StorageError, match=r"cycles/c1/labels\.npz.*labels"):
                cycle_store.read_labels(store, "c1")
        finally:
            store.put_bytes(key, original)


def test_estimate_step_fails_with_one_error_naming_the_key(store):
    key = cycle_store.key("c1", "sample.npz")
    original = store.get_bytes(key)
    with np.load(__import__("io").BytesIO(original)) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["indices"] = arrays["indices"] + 10_000  # draws past the drawn inputs
    store.put_bytes(key, npz_bytes(**arrays))
    try:
        with pytest.raises(StorageError, match=r"cycles/c1/sample\.npz.*outside"):
            estimate(store, "c1", EstimateConfig(rule=DropRule(threshold=0.5)))
    finally:
        store.put_bytes(key, original)
    estimate(store, "c1", EstimateConfig(rule=DropRule(threshold=0.5)))
