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
