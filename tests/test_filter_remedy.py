"""The remedy decision (issue 21) as a table over the pure function in operators/reconcile.py, and
``spec.remedy`` in the pydantic spec and the CRD (default ``both``, bad values named)."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from daic.operators.reconcile import decide_remedy
from daic.operators.spec import InvalidSpec, Remedy, parse_spec

ROOT = Path(__file__).resolve().parents[1]
BEATS = dict(champion_accuracy=0.64, filter_accuracy=0.75)
LOSES = dict(champion_accuracy=0.64, filter_accuracy=0.63)

# remedy, drop confirmed, traffic clean, filter in service, estimates -> filter, retrain, compare_to
ROWS = [
    ("both", True, True, True, BEATS, "remove", False, "champion"),
    ("filter", False, True, True, LOSES, "remove", False, "champion"),
    ("retrain", True, True, False, BEATS, "none", False, "champion"),
    ("both", False, False, True, BEATS, "keep", False, "champion"),
    ("filter", False, False, False, BEATS, "none", False, "champion"),
    ("retrain", True, False, False, BEATS, "none", True, "champion"),
    ("retrain", True, False, True, BEATS, "remove", True, "champion"),
    ("filter", True, False, False, BEATS, "deploy", False, "champion"),
    ("filter", True, False, False, LOSES, "none", False, "champion"),
    ("filter", True, False, True, LOSES, "remove", False, "champion"),
    ("both", True, False, False, BEATS, "deploy", True, "wrapped-champion"),
    ("both", True, False, True, BEATS, "deploy", True, "wrapped-champion"),
    ("both", True, False, False, LOSES, "none", True, "champion"),
    ("both", True, False, False, dict(champion_accuracy=0.64, filter_accuracy=None), "none", True, "champion"),
    ("both", True, False, False, dict(champion_accuracy=0.64, filter_accuracy=0.64), "none", True, "champion"),
]


@pytest.mark.parametrize("remedy,confirmed,clean,serving,est,filter_,retrain,compare", ROWS)
def test_remedy_table(remedy, confirmed, clean, serving, est, filter_, retrain, compare):
    d = decide_remedy(remedy, drop_confirmed=confirmed, traffic_clean=clean, filter_in_service=serving, **est)
    assert (d.filter, d.retrain, d.compare_to) == (filter_, retrain, compare)
    assert d.reason


def test_min_improvement_applies_to_the_filter_like_a_challenger():
    kw = dict(drop_confirmed=True, traffic_clean=False, filter_in_service=False, champion_accuracy=0.64)
    assert decide_remedy("filter", filter_accuracy=0.66, min_improvement=0.05, **kw).filter == "none"
    assert decide_remedy("filter", filter_accuracy=0.70, min_improvement=0.05, **kw).filter == "deploy"
    assert decide_remedy(Remedy.both, filter_accuracy=0.70, **kw).filter == "deploy"
    with pytest.raises(ValueError, match="remedy"):
        decide_remedy("pray", filter_accuracy=0.7, **kw)


def _spec(**extra):
    return {"deployment": {"name": "mnist"}, "estimate": {"url": "http://sidecar:8300"}, "trigger": {"threshold": 0.9}, **extra}


def test_spec_remedy_default_values_and_crd_in_sync():
    assert parse_spec(_spec()).remedy is Remedy.both
    assert parse_spec(_spec(remedy="filter")).remedy is Remedy.filter
    with pytest.raises(InvalidSpec, match="spec.remedy"):
        parse_spec(_spec(remedy="pray"))
    crd = yaml.safe_load((ROOT / "manifests/crd/assessmentcycles.daic.dev.yaml").read_text())
    prop = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["remedy"]
    assert prop["enum"] == [r.value for r in Remedy] and prop["default"] == "both"


def test_filter_remedy_step_adapts_decides_by_the_rule_serves_and_removes(tmp_path):
    """One real (tiny) label-free adaptation on Ray Train's local mode; the decision must be the pure
    rule's for the estimates the step measured, and the service record must follow it."""
    pytest.importorskip("ray")
    import numpy as np
    import torch

    from daic.data.corruptions import corrupt
    from daic.data.mnist import load_split
    from daic.filters.network import FilterNet
    from daic.filters.registry import FilterRegistry, read_service
    from daic.filters.remedy import filter_remedy, remove_when_clean
    from daic.models.card import DataLineage
    from daic.models.networks import build
    from daic.models.reference import ReferenceConfig
    from daic.models.registry import ModelRegistry
    from daic.storage import open_store

    store = open_store(f"file://{tmp_path}")
    torch.manual_seed(0)
    ModelRegistry(store, "mnist").register(model=build("small_cnn"), shadow=build("shadow_net"),
                                           data=DataLineage(dataset="mnist", base_count=0),
                                           reference_config=ReferenceConfig(val_limit=64, shift_per_condition=2,
                                                                            corruptions=("fog",)))
    generic = FilterRegistry(store, "mnist").register_filter(
        net=FilterNet(), data=DataLineage(dataset="mnist", base_count=0), wraps_version="v0001",
        metrics={"gate_threshold": 0.0, "val_accuracy_alone": 0.5, "val_accuracy_gated": 0.5,
                 "val_accuracy_always": 0.5})
    test = load_split("test")
    drifted = corrupt(test.images[:96], "fog", 4, seed=2)
    store.put_arrays("cycles/c-1/pool.npz", images=drifted)
    store.put_arrays("labels/c-1/batch-0.npz", images=drifted[:48], labels=test.labels[:48],
                     ids=np.array([f"r{i}" for i in range(48)]))
    kw = dict(classifier="mnist", champion_version="v0001", generic_version=generic.version,
              pool_key="cycles/c-1/pool.npz", labels_prefix="labels/c-1/", cycle="c-1",
              adapt={"base_limit": 64, "batch_size": 32, "val_limit": 64})
    record = filter_remedy(store, remedy="both", **kw)
    assert store.get_json("cycles/c-1/filter.json") == record and record["labels"] == 48
    expected = decide_remedy("both", drop_confirmed=True, traffic_clean=False, filter_in_service=False,
                             champion_accuracy=record["champion_accuracy"], filter_accuracy=record["filter_accuracy"])
    assert (record["decision"], record["retrain"], record["reason"]) == (expected.filter, expected.retrain,
                                                                        expected.reason)
    assert record["retrain"] is True and record["adapted_version"] == "v0002"
    # The filter adopted is the better of the generic and the adapted one on the sample (ties: adapted).
    scores = {("v0002", m): a for m, a in record["filter_accuracy_by_mode"].items()}
    scores.update({(generic.version, m): a for m, a in record["generic_accuracy_by_mode"].items()})
    assert set(record["generic_accuracy_by_mode"]) == {"gated", "always"}  # its card shows no clean loss
    assert record["filter_accuracy"] == max(scores.values())
    # The generic filter went in at once (before the adaptation) iff the rule put it in on its own estimate.
    g = max(record["generic_accuracy_by_mode"].values())
    early = decide_remedy("both", drop_confirmed=True, traffic_clean=False, filter_in_service=False,
                          champion_accuracy=record["champion_accuracy"], filter_accuracy=g)
    assert ("generic_in_service_s" in record) == (early.filter == "deploy")
    assert scores[(record["filter_version"], record["gate"])] == record["filter_accuracy"]
    serving = read_service(store, "mnist")
    assert serving.version == (record["filter_version"] if record["decision"] == "deploy" else None)
    # remedy retrain: no filter is fitted, none serves.
    only = filter_remedy(store, remedy="retrain", **{**kw, "cycle": "c-2"})
    assert "filter_version" not in only and only["decision"] in ("none", "remove")
    assert read_service(store, "mnist").version is None
    # End of the lifecycle: a serving filter is removed once traffic is clean again, and only then.
    from daic.filters.registry import FilterService, write_service
    write_service(store, "mnist", FilterService(version="v0002", cycle="c-3"))
    assert remove_when_clean(store, classifier="mnist", traffic_clean=False) is None
    assert remove_when_clean(store, classifier="mnist", traffic_clean=True).version is None
    assert read_service(store, "mnist").version is None
    assert remove_when_clean(store, classifier="mnist", traffic_clean=True) is None
