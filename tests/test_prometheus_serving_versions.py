"""The pure halves of issue 23's Prometheus work: which versions a sidecar exports
(daic.sidecar.serving) and how the operator pools replicas (daic.operators.estimates.pool_replicas).
The real processes are in tests/test_prometheus_estimates.py."""
from __future__ import annotations

import math
from datetime import datetime, timezone

import pytest

from daic.operators.estimates import PrometheusEstimate, pool_replicas
from daic.operators.observations import EstimateReading
from daic.operators.spec import EstimateSpec, InvalidSpec, parse_spec, selector_of
from daic.sidecar.serving import ServingVersions


def test_a_version_serves_until_the_champion_moves_away_and_serves_again_on_new_traffic():
    s = ServingVersions(idle_s=600)
    assert s.set_champion("v1", now=0) == []
    s.seen("v1", 10)
    s.seen("v2", 20)  # a canary's traffic
    assert s.serving() == ["v1", "v2"] and (s.role("v1"), s.role("v2")) == ("champion", "canary")
    assert s.set_champion("v1", now=30) == []          # no change: nothing drops
    assert s.set_champion("v2", now=40) == ["v1"]      # promotion: the old champion stops serving
    assert s.serving() == ["v2"] and s.role("v2") == "champion"
    s.seen("v1", 41)                                   # a pod not yet replaced still answers with v1
    assert s.role("v1") == "canary" and s.newest["v1"] == 41


def test_an_idle_canary_expires_and_the_champion_never_does():
    s = ServingVersions(idle_s=600)
    s.set_champion("v1", now=0)
    s.seen("v1", 0)
    s.seen("v2", 100)
    assert s.expire(now=650) == [] and s.expire(now=701) == ["v2"]
    assert s.expire(now=10_000) == [] and s.serving() == ["v1"]


def test_newest_input_time_only_moves_forward():
    s = ServingVersions()
    s.seen("v1", 50)
    s.seen("v1", 40)  # a late-scored, earlier input does not move the window's time back
    assert s.newest["v1"] == 50


def test_a_restore_applies_the_same_rules():
    state = ServingVersions(idle_s=600, champion="v1", newest={"v1": 100.0, "v2": 90.0}).to_state()
    # the champion moved while the sidecar was down: the checkpoint's v1 and v2 stop serving
    moved = ServingVersions.from_state(state, 600, ["v1", "v2"], restored_at=200)
    assert moved.set_champion("v3", now=200) == ["v1", "v2"] and moved.serving() == []
    same = ServingVersions.from_state(state, 600, ["v1", "v2"], restored_at=200)
    assert same.set_champion("v1", now=200) == [] and same.newest == {"v1": 100.0, "v2": 90.0}
    # a checkpoint from before serving versions were recorded keeps only the champion's window
    legacy = ServingVersions.from_state(None, 600, ["v1", "v2"], restored_at=300)
    assert legacy.set_champion("v2", now=300) == ["v1"] and legacy.newest == {"v2": 300}


def _replica(version="v1", n=100, accuracy=0.9, **fields):
    base = {"labels": {"model_version": version, "pod": f"p{n}{accuracy}"}, "n": float(n), "accuracy": accuracy,
            "lower": accuracy - 0.05, "upper": accuracy + 0.05, "error_sd": 0.02, "timestamp": 1000.0 + n,
            "trusted": 1.0, "drift_alarm": 0.0, "change_alarm": 0.0, "reference_accuracy": 0.95}
    return {**base, **fields}


def test_replicas_are_pooled_by_window():
    r = pool_replicas([_replica(n=100, accuracy=0.80), _replica(n=300, accuracy=0.96, trusted=0.0,
                                                                 drift_alarm=1.0)], "champion", "{}")
    assert isinstance(r, EstimateReading)
    assert r.n == 400 and r.accuracy == pytest.approx((100 * 0.80 + 300 * 0.96) / 400)
    assert r.lower == pytest.approx((100 * 0.75 + 300 * 0.91) / 400) and r.error_sd == pytest.approx(0.02)
    assert (r.trusted, r.drift_alarm, r.change_alarm) == (False, True, False)
    assert r.observed_at == datetime.fromtimestamp(1300.0, tz=timezone.utc)
    assert (r.model_version, r.reference_accuracy) == ("v1", 0.95)
    # an empty window weighs nothing; a replica's NaN accuracy neither
    same = pool_replicas([_replica(n=100, accuracy=0.80), _replica(n=300, accuracy=0.96),
                          _replica(n=0, accuracy=math.nan)], "champion", "{}")
    assert same.accuracy == pytest.approx((100 * 0.80 + 300 * 0.96) / 400)


def test_several_versions_or_nothing_give_no_reading_with_the_reason():
    split = pool_replicas([_replica("v1"), _replica("v2", n=200)], "champion", '{deployment="m"}')
    assert isinstance(split, str) and "v1 on 1, v2 on 1" in split and "waiting until they agree" in split
    two = pool_replicas([_replica(), {**_replica(n=200), "labels": {"deployment": "other", "model_version": "v1"}}],
                        "champion", "{}")
    assert isinstance(two, str) and "matches the sidecars of 2 deployments" in two
    none = pool_replicas([], "canary", '{deployment="m"}')
    assert isinstance(none, str) and "no canary estimate" in none
    untimed = pool_replicas([_replica(timestamp=None)], "champion", "{}")
    assert isinstance(untimed, str) and "daic_estimate_timestamp_seconds" in untimed


def test_the_selector_query_reads_every_series_of_one_role():
    q = PrometheusEstimate("http://p", selector='{namespace="x", deployment="m",}', role="canary").selector_query()
    assert q.startswith('{__name__=~"daic_') and 'namespace="x", deployment="m", role="canary"}' in q
    assert "daic_estimate_timestamp_seconds" in q and "daic_window_size" in q


def test_spec_rules_for_the_prometheus_source():
    def spec(**estimate):
        return parse_spec({"deployment": {"name": "m"}, "trigger": {"threshold": 0.9},
                           "estimate": {"source": "prometheus", "prometheusUrl": "http://p", **estimate}})

    assert spec(selector='{deployment="m"}').estimate.selector == '{deployment="m"}'
    assert spec(query='daic_estimated_accuracy{deployment="m"}').estimate.count_query is None  # read as a selector
    for estimate, needle in [
        ({"query": "avg(daic_estimated_accuracy)"}, "estimate.countQuery"),
        ({"selector": '{deployment="m"}', "query": "x", "countQuery": "n"}, "exclude each other"),
        ({"selector": '{deployment="m", role="canary"}'}, "may not match on role"),
        ({"query": "q", "countQuery": "n", "canaryQuery": "c"}, "estimate.canaryCountQuery"),
        ({"selector": '{deployment="m"}', "canaryQuery": "c", "canaryCountQuery": "n"},
         "applies to a custom estimate.query"),
        ({"selector": 'deployment="m"'}, "spec.estimate.selector"),
    ]:
        with pytest.raises(InvalidSpec, match=needle):
            spec(**estimate)
    assert selector_of(" daic_estimated_accuracy ") == "{}" and selector_of("sum(daic_estimated_accuracy)") is None
    assert EstimateSpec(source="prometheus", prometheus_url="http://p", selector="{}").selector == "{}"
