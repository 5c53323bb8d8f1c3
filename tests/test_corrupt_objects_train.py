"""train's reads of records it did not write in this attempt, when their *contents* are wrong.

The store, champion, labeled batch and RayJob path are the real ones of components/train's cluster
test: the real ``kubernetes`` client against the Kubernetes API stand-in over HTTP
(daic.components.testing.fake_kube: no kube-apiserver runs here) playing KubeRay, whose driver is
the real ``daic retrain`` option parsing and ``report`` writing ``train-output.json`` (only the Ray
training itself is left out). One real run writes ``train-output.json`` and ``train.json``; then:

* ``train-output.json`` (the driver's result, read after the job succeeds) is replaced by seeded
  corrupted variants (tests/corrupt_variants.py) and the step reruns (it reuses the finished job);
* ``train.json`` is replaced by variants *while the job runs* (another attempt of the same cycle
  writing its record meanwhile), so this attempt's compare-and-set fails and it adopts what it
  reads.

Each must end in the version the step returns being a named string, or one StorageError naming
the key (CorruptObject; not JSON at all: get_json's own error) (or the existing RuntimeError for a driver that names another parent), never an
AttributeError/KeyError/TypeError or a number handed to evaluate as a version.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from corrupt_variants import json_variants
from daic.components import cycle_store
from daic.components.testing.fake_kube import FakeKube
from daic.components.testing.registry import register_untrained
from daic.components.train.logic import TrainConfig, run
from daic.components.train.test_train import _KubeRayRunningTheDriver
from daic.storage import StorageError, open_store
from daic.storage.parsed import CorruptObject

SEEDS = (0, 1, 2)
CYCLE = "c9"
CONFIG = TrainConfig(backend="rayjob", namespace="daic")


@pytest.fixture
def cluster(tmp_path):
    store = open_store(f"file://{tmp_path / 'store'}")
    register_untrained(store, [None])
    store.put_arrays(cycle_store.train_labels_key(CYCLE), images=np.zeros((4, 28, 28), np.float32),
                     labels=np.arange(4), ids=np.array([f"i{k}" for k in range(4)]))
    with FakeKube() as kube:
        kube.on_get = _KubeRayRunningTheDriver(store)
        first = run(store, CYCLE, CONFIG, api=kube.api())
        assert (first.version, first.parent) == ("v0002", "v0001")
        yield store, kube


def _outcome(call, key):
    """None when ``call`` returned a named version or failed as expected; else what went wrong."""
    try:
        result = call()
    except StorageError as exc:  # CorruptObject, or get_json's "not valid JSON"
        return None if key in str(exc) else f"StorageError without the key: {exc}"
    except RuntimeError as exc:  # the driver's record names another parent: the existing check
        return None if "expected a version from 'v0001'" in str(exc) else f"RuntimeError: {exc}"
    except Exception as exc:  # noqa: BLE001 -- the failure being looked for
        return f"{type(exc).__name__}: {exc}"
    if not (isinstance(result.version, str) and result.version and isinstance(result.parent, str)):
        return f"returned {result}"
    return None


@pytest.mark.parametrize("seed", SEEDS)
def test_driver_output_variants(cluster, seed):
    store, kube = cluster
    key = cycle_store.key(CYCLE, "train-output.json")
    original = store.get_bytes(key)
    failures = []
    for what, data in json_variants(original, seed):
        store.put_bytes(key, data)
        problem = _outcome(lambda: run(store, CYCLE, CONFIG, api=kube.api()), key)
        if problem:
            failures.append(f"{what}: {problem}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("seed", SEEDS)
def test_another_attempts_record_variants(cluster, seed):
    store, kube = cluster
    key = cycle_store.key(CYCLE, "train.json")
    original = store.get_bytes(key)
    driver = kube.on_get
    failures = []
    for what, data in json_variants(original, seed):
        store.put_bytes(key, original)

        def meanwhile(obj, data=data):  # another attempt records its version while this one waits
            driver(obj)
            store.put_bytes(key, data)
        kube.on_get = meanwhile
        problem = _outcome(lambda: run(store, CYCLE, CONFIG, api=kube.api()), key)
        if problem:
            failures.append(f"{what}: {problem}")
    kube.on_get = driver
    assert not failures, "\n".join(failures)


def test_a_record_naming_no_version_is_one_error_naming_the_key(cluster):
    store, kube = cluster
    key = cycle_store.key(CYCLE, "train.json")
    record = json.loads(store.get_bytes(key))
    driver = kube.on_get

    def meanwhile(obj):
        driver(obj)
        store.put_json(key, {**record, "version": 7})
    kube.on_get = meanwhile
    with pytest.raises(CorruptObject, match=r"train\.json.*version"):
        run(store, CYCLE, CONFIG, api=kube.api())
