"""fit-filter on tiny data: a real (short, in-process) Ray Train adaptation of the filter on the
cycle's unlabeled pool, the label-free decision recomputed from the record, nothing put in service
when the operator promotes, and a generic filter found and warm-started from."""
from __future__ import annotations

import json

import numpy as np
import pytest

from daic.components import cycle_store
from daic.components.collect_labels.logic import CollectConfig
from daic.components.collect_labels.logic import run as collect
from daic.components.fit_filter.logic import FitFilterConfig, generic_filter, run, wrapped_assessor, write_pool
from daic.components.sample_operational.logic import SampleConfig
from daic.components.sample_operational.logic import run as sample
from daic.components.testing.registry import register_untrained

SPEC = json.dumps({"name": "sudden", "seed": 3, "batch_size": 50, "n_steps": 8, "drift_start": 4,
                   "corruption": "translate", "severity": 3})
TINY = {"pool_limit": 64, "epochs": 1, "base_limit": 64, "wrapped_assessor": False,
        "extra": {"batch_size": 32, "val_limit": 64}}


@pytest.fixture
def labeled_cycle(operational_store):
    store, stream = operational_store
    sample(store, SampleConfig(sampler="srs", budget=60, cycle="c1", seed=6))
    collect(store, "c1", CollectConfig(backend="simulated", simulated_scenario=SPEC))
    register_untrained(store, [None])
    return store, stream


@pytest.mark.parametrize("field,value,match", [
    ("remedy", "pray", "remedy must be one of"), ("pool_limit", 0, "pool_limit"), ("epochs", 1.5, "epochs"),
    ("max_clean_loss", 2.0, "max_clean_loss"), ("min_improvement", -0.1, "min_improvement"),
])
def test_bad_config_is_a_clear_error(field, value, match):
    with pytest.raises(ValueError, match=match):
        FitFilterConfig(**{field: value})


def test_pool_leaves_out_the_held_out_draws(labeled_cycle):
    store, stream = labeled_cycle
    record = cycle_store.read_sample(store, "c1")
    key, n = write_pool(store, "c1", limit=10_000, seed=0)
    images = store.get_arrays(key)["images"]
    held = set(record.holdout_ids.astype(str))
    assert n == len(images) == len(stream.ids) - len(held) and len(held) > 0
    by_id = dict(zip(stream.ids, stream.images))
    pool = {im.tobytes() for im in images}
    assert not any(by_id[i].astype(np.float32).tobytes() in pool for i in held)
    assert write_pool(store, "c1", limit=5, seed=0)[1] == 5
    a, b = write_pool(store, "c1", limit=5, seed=0, attempt="a")[0], write_pool(store, "c1", limit=7, seed=1, attempt="b")[0]
    assert (a, b) == ("cycles/c1/filter_pool-a.npz", "cycles/c1/filter_pool-b.npz")  # one per attempt
    assert len(store.get_arrays(a)["images"]) == 5 and len(store.get_arrays(b)["images"]) == 7


def test_adapts_decides_and_leaves_service_to_the_operator(labeled_cycle):
    pytest.importorskip("ray")
    from daic.filters.registry import FilterRegistry, read_service
    from daic.operators.reconcile import decide_remedy

    store, _ = labeled_cycle
    record = run(store, "c1", FitFilterConfig(remedy="both", **TINY))
    registry = FilterRegistry(store, "mnist")
    card = registry.card(record["filter_version"])
    assert card.parent is None and registry.wraps(card.version) == "v0001"  # no generic: from the identity
    assert card.data.notes["cycle"] == "c1" and card.data.notes["pool_count"] == str(record["pool_count"])
    assert card.data.labeled_batches == []  # label-free
    assert generic_filter(store, "mnist", "v0001") is None  # a cycle's filter is no generic filter
    again = decide_remedy("both", drop_confirmed=True, traffic_clean=False, filter_in_service=False,
                          champion_accuracy=record["champion_accuracy"], filter_accuracy=record["filter_accuracy"])
    assert (record["decision"], record["reason"], record["retrain"]) == (again.filter, again.reason, True)
    assert record["holdout_labels"] >= 2 and 0 <= record["filter_holdout_accuracy"] <= 1
    assert read_service(store, "mnist").version is None  # serve=False: the operator rolls it out
    assert store.get_json("cycles/c1/filter.json")["decision"] == record["decision"]
    result = store.get_json("cycles/c1/result.json")
    assert result["filter_decision"] == record["decision"] and result["filter_reason"] == record["reason"]
    assert result["filter_version"] == (record["filter_version"] if record["decision"] == "deploy" else None)


def test_generic_filter_is_the_warm_start_and_retrain_fits_nothing(labeled_cycle):
    pytest.importorskip("ray")
    from daic.filters.config import FilterConfig
    from daic.filters.registry import FilterRegistry
    from daic.filters.workflow import train_filter

    store, _ = labeled_cycle
    record = run(store, "c1", FitFilterConfig(remedy="retrain", **TINY))
    assert (record["decision"], record["retrain"], record.get("filter_version")) == ("none", True, None)
    assert FilterRegistry(store, "mnist").versions() == []
    generic = train_filter(store, FilterConfig(classifier_version="v0001", epochs=1, base_limit=64, batch_size=32,
                                               val_limit=64)).version
    assert generic_filter(store, "mnist", "v0001") == generic
    assert generic_filter(store, "mnist", "v0009") is None
    record = run(store, "c1", FitFilterConfig(remedy="filter", **TINY))
    assert record["generic_version"] == generic
    assert FilterRegistry(store, "mnist").card(record["adapted_version"]).parent == generic  # adopted: generic or it
    assert record["retrain"] is False


def test_a_failing_adaptation_is_recorded_and_never_fails_the_step(labeled_cycle, monkeypatch):
    """The retraining branch beside it must go on: the step succeeds with decision none and the error."""
    import daic.filters.remedy as remedy

    def broken(*args, **kwargs):
        raise RuntimeError("Ray could not start")

    monkeypatch.setattr(remedy, "filter_remedy", broken)
    store, _ = labeled_cycle
    record = run(store, "c1", FitFilterConfig(remedy="both", **TINY))
    assert (record["decision"], record["retrain"]) == ("none", True)
    assert record["error"] == "RuntimeError: Ray could not start" and "could not be fitted" in record["reason"]
    result = store.get_json("cycles/c1/result.json")
    assert result["filter_decision"] == "none" and result["filter_error"] == record["error"]
    assert result["filter_version"] is None
    with pytest.raises(ValueError, match="no labeled batch"):  # a missing input is still an error
        run(store, "c-none", FitFilterConfig(**TINY))


def test_the_wrapped_assessor_is_stored_beside_the_filter_and_a_failure_is_recorded(labeled_cycle, monkeypatch):
    import daic.filters.assessor as fa
    from daic.filters.network import FilterNet
    from daic.filters.registry import FilterRegistry
    from daic.models.card import DataLineage

    real = fa.fit_wrapped_assessor
    monkeypatch.setattr(fa, "fit_wrapped_assessor",
                        lambda *args, **kw: real(*args, **{**kw, "val_limit": 64, "shift_per_condition": 0}))
    store, _ = labeled_cycle
    version = FilterRegistry(store, "mnist").register_filter(
        net=FilterNet(), data=DataLineage(dataset="mnist", base_count=10), wraps_version="v0001",
        metrics={"gate_threshold": 0.0}).version
    record = wrapped_assessor(store, "c1", "mnist", {"filter_version": version, "gate": "gated", "decision": "deploy"})
    assert record["wrapped_assessor"].endswith(f"{version}/gated/assessor.pkl") and record["wrapped_assessor_s"] > 0
    assert store.get_json("cycles/c1/filter.json")["wrapped_assessor"] == record["wrapped_assessor"]
    assert fa.load_wrapped_assessor(store, "mnist", version, "gated") is not None
    failed = wrapped_assessor(store, "c1", "mnist", {"filter_version": "v0099", "gate": "gated", "decision": "deploy"})
    assert "v0099" in failed["wrapped_assessor_error"] and "wrapped_assessor" not in failed
