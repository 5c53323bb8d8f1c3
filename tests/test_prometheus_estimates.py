"""The operator's Prometheus source against a real Prometheus scraping real sidecars (issue 23).

Real parts only: Prometheus 2.42 (Debian), ``daic oracle serve`` processes scoring predictions
of the small registered model on MNIST test digits, the operator's ``estimate_source`` /
``canary_source`` and the pure reconcile function. Nothing is faked; the request logger's events
are posted by the test as the executor would (its CloudEvents, daic.sidecar.events).

Each case failed on main before issue 23: a champion change left the old version's frozen series
(two series: the source refused, ``avg``/``min`` fired falsely); two replicas gave two series;
readings were stamped with the query time (a quiet deployment produced "new" readings and an old
sample looked fresh); ``trusted``, the error scale and the version were dropped; the canary had no
count; Prometheus's error text was hidden; counters appeared only at their first increment.
"""
from __future__ import annotations

import dataclasses
import shutil
from datetime import datetime, timedelta, timezone

import pytest

from daic.models.registry import ModelRegistry
from daic.operators.estimates import PrometheusEstimate, SidecarEstimate, canary_source, estimate_source
from daic.operators.observations import DeploymentReading, EstimateError, EstimateReading, Observations, RunPhase
from daic.operators.reconcile import CycleIdentity, reconcile
from daic.operators.spec import EstimateSpec, parse_spec
from daic.operators.status import CycleStatus, Phase, Stage
from daic.serving.loading import load_served_model
from daic.storage import open_store
from fakes.world import GOOD_RESULT, at, make_spec, run_obs, step
from fakes.world import reading as fake_reading
from test_prometheus_support import Prometheus, Sidecar
from test_serving_support import mnist_test_images, register_version, registered_store

IDENT = CycleIdentity(name="prom", uid="00000000-0000-0000-0000-000000000023", namespace="test")


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A store with champion v0001 and a registered (not promoted) v0002, copied per test."""
    base = tmp_path_factory.mktemp("prom-template")
    store = registered_store(base / "store")
    v2 = register_version(store, promote=False)
    served = {v: load_served_model(store, "mnist", v) for v in ("v0001", v2)}
    return {"path": base / "store", "v1": "v0001", "v2": v2, "served": served}


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory):
    prom = Prometheus(tmp_path_factory.mktemp("prometheus")).start()
    yield prom
    prom.stop()


@pytest.fixture
def world(template, prometheus, tmp_path):
    shutil.copytree(template["path"], tmp_path / "store")
    sidecars: list[Sidecar] = []

    def sidecar(deployment: str, name: str) -> Sidecar:
        sc = Sidecar(tmp_path, open_store(f"file://{tmp_path / 'store'}"), deployment, name).start()
        sidecars.append(sc)
        prometheus.add_target(f"{deployment}-{name}", sc.port)
        return sc

    yield {**template, "store": open_store(f"file://{tmp_path / 'store'}"), "sidecar": sidecar}
    for sc in sidecars:
        sc.stop()


def _spec(deployment: str, **extra) -> EstimateSpec:
    return EstimateSpec(source="prometheus", prometheus_url="http://x", selector=f'{{deployment="{deployment}"}}',
                        **extra)


def _source(prometheus, deployment: str, **extra):
    spec = _spec(deployment, **extra).model_copy(update={"prometheus_url": prometheus.url})
    return estimate_source(spec), canary_source(spec)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _stamp(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=timezone.utc)


def _scraped_n(prometheus, deployment: str, expected: dict[str, float]) -> None:
    """Wait until Prometheus holds exactly ``expected`` ({model_version: window size}) for the
    deployment's serving series (any role)."""
    prometheus.wait_for(f'daic_window_size{{deployment="{deployment}"}}',
                        lambda v: {dict(k)["model_version"]: x for k, x in v.items()} == expected,
                        f"window sizes {expected}")


def test_a_champion_change_leaves_one_series_and_the_source_follows_it(world, prometheus):
    images, _ = mnist_test_images(120)
    sc = world["sidecar"]("cc", "a")
    sc.predict(world["served"], world["v1"], images[:60])
    truth = sc.estimate()
    _scraped_n(prometheus, "cc", {world["v1"]: 60})
    source, _ = _source(prometheus, "cc")
    first = source.read(_now())
    assert isinstance(first, EstimateReading), first
    # The reading carries what the sidecar says, read from its series.
    assert (first.model_version, first.n, first.trusted) == (world["v1"], 60, truth["trusted"])
    assert first.accuracy == pytest.approx(truth["accuracy"], abs=1e-9)
    assert first.error_sd == pytest.approx(truth["error_sd"], abs=1e-9)
    assert (first.lower, first.upper) == (pytest.approx(truth["lower"]), pytest.approx(truth["upper"]))
    assert first.reference_accuracy == pytest.approx(truth["reference_accuracy"])
    assert first.drift_alarm == truth["drift_alarm"]
    assert first.observed_at == _stamp(truth["timestamp"]), "the reading's time is its newest input's"

    ModelRegistry(world["store"], "mnist").promote(world["v2"])
    assert sc.reload()["champion"] == world["v2"]
    sc.predict(world["served"], world["v2"], images[60:100])
    after = sc.estimate()
    assert set(after["versions"]) == {world["v2"]}
    # Prometheus sees the old version's series end (stale): one series, the serving version's.
    _scraped_n(prometheus, "cc", {world["v2"]: 40})
    info = prometheus.values('daic_serving_info{deployment="cc"}')
    assert [(dict(k)["model_version"], dict(k)["role"]) for k in info] == [(world["v2"], "champion")]
    second = source.read(_now())
    assert isinstance(second, EstimateReading), second
    assert (second.model_version, second.n) == (world["v2"], 40)
    assert second.accuracy == pytest.approx(after["accuracy"], abs=1e-9)
    # The query the example used to have is read the same way (not refused for two series).
    legacy = PrometheusEstimate(prometheus.url, 'daic_estimated_accuracy{deployment="cc"}').read(_now())
    assert isinstance(legacy, EstimateReading) and legacy.model_version == world["v2"], legacy

    # Restored from its checkpoint, the sidecar still exports the serving version only.
    assert sc.stop() == 0
    sc.start()
    text = sc.metrics()
    assert f'model_version="{world["v1"]}",role=' not in text
    assert f'daic_window_size{{deployment="cc",model_version="{world["v2"]}",role="champion"}} 40.0' in text


def test_two_replicas_are_pooled_by_window(world, prometheus):
    images, _ = mnist_test_images(200, start=200)
    small, large = world["sidecar"]("rep", "a"), world["sidecar"]("rep", "b")
    small.predict(world["served"], world["v1"], images[:50])
    large.predict(world["served"], world["v1"], images[50:200])
    t_small, t_large = small.estimate(), large.estimate()
    prometheus.wait_for('daic_window_size{deployment="rep"}', lambda v: sorted(v.values()) == [50.0, 150.0],
                        "both replicas' windows")
    source, _ = _source(prometheus, "rep")
    r = source.read(_now())
    assert isinstance(r, EstimateReading), r
    pooled = (50 * t_small["accuracy"] + 150 * t_large["accuracy"]) / 200
    assert r.n == 200 and r.accuracy == pytest.approx(pooled, abs=1e-9)
    assert r.lower == pytest.approx((50 * t_small["lower"] + 150 * t_large["lower"]) / 200, abs=1e-9)
    assert r.trusted == (t_small["trusted"] and t_large["trusted"])
    assert r.observed_at == _stamp(max(t_small["timestamp"], t_large["timestamp"]))
    # The PromQL docs/operator.md shows, and the PrometheusRule's recording rule, agree with it.
    sel = 'deployment="rep", role="champion"'
    by_hand = prometheus.values(f"sum(daic_estimated_accuracy{{{sel}}} * daic_window_size{{{sel}}}) "
                                f"/ sum(daic_window_size{{{sel}}})")
    assert list(by_hand.values()) == [pytest.approx(pooled, abs=1e-9)]
    # (rules are evaluated every second, on what was scraped by then: wait for an evaluation after
    # both replicas' windows arrived)
    prometheus.wait_for(f"daic:window_size:sum{{{sel}}}", lambda v: list(v.values()) == [200.0],
                        "the recording rule's window")
    recorded = prometheus.values(f"daic:estimated_accuracy:pooled{{{sel}}}")
    assert list(recorded.values()) == [pytest.approx(pooled, abs=1e-9)]


def test_a_quiet_deployment_gives_no_new_evidence_and_old_readings_are_refused(world, prometheus):
    images, _ = mnist_test_images(60, start=400)
    sc = world["sidecar"]("quiet", "a")
    sc.predict(world["served"], world["v1"], images)
    truth = sc.estimate()
    _scraped_n(prometheus, "quiet", {world["v1"]: 60})
    source, _ = _source(prometheus, "quiet", stale_after_seconds=600)
    scrape = 'timestamp(daic_window_size{deployment="quiet"})'
    first_scrape = max(prometheus.values(scrape).values())
    r1 = source.read(_now())
    prometheus.wait_for(scrape, lambda v: max(v.values()) > first_scrape, "a later scrape")
    r2 = source.read(_now())
    assert isinstance(r1, EstimateReading) and isinstance(r2, EstimateReading), (r1, r2)
    assert (r1.observed_at, r1.n) == (r2.observed_at, r2.n) == (_stamp(truth["timestamp"]), 60)
    # The sidecar's own endpoint (the other source) stamps its window the same way, not the call.
    rest = SidecarEstimate(sc.url + "/estimate")
    assert rest.read(_now()).observed_at == rest.read(_now()).observed_at == r1.observed_at

    # The trigger counts that window once: two reads of it are one breach, not two.
    spec = parse_spec({"deployment": {"name": "quiet"}, "estimate": {"url": "http://x/estimate"},
                       "trigger": {"threshold": 0.9, "minWindow": 10, "consecutive": 2, "whenUntrusted": False,
                                   "method": "window"}})
    low = [dataclasses.replace(r, accuracy=0.5, trusted=True, drift_alarm=False, change_alarm=False) for r in (r1, r2)]
    status = reconcile(spec, CycleStatus(), Observations(estimate=low[0]), _now(), IDENT).status
    assert status.breach_count == 1
    done = reconcile(spec, status, Observations(estimate=low[1]), _now(), IDENT)
    assert done.status.breach_count == 1 and done.status.phase is Phase.monitoring and done.status.current is None

    # Past estimate.staleAfterSeconds it is refused, not counted.
    stale = source.read(_stamp(truth["timestamp"]) + timedelta(seconds=601))
    assert isinstance(stale, EstimateError) and "no new evidence" in stale.error, stale
    # A Prometheus restart does not make the old sample look fresh (until its first scrape it
    # answers with the samples from before the restart; after it, with the same window).
    prometheus.stop()
    prometheus.start()
    restarted = prometheus.wait_for('daic_window_size{deployment="quiet"}', lambda v: len(v) == 1,
                                    "the sample after a restart", timeout_s=60)
    assert restarted
    again = source.read(_now())
    assert isinstance(again, EstimateReading) and again.observed_at == _stamp(truth["timestamp"]), again


def test_the_canary_is_read_with_its_count_and_the_rollback_guard_uses_it(world, prometheus):
    """A canary predictor's sidecar: the registry's champion is v0001, it serves v0002."""
    images, _ = mnist_test_images(80, start=600)
    sc = world["sidecar"]("can", "canary")
    sc.predict(world["served"], world["v2"], images)
    truth = sc.estimate()
    assert truth["model_version"] == world["v2"] and truth["role"] == "canary"
    prometheus.wait_for('daic_window_size{deployment="can", role="canary"}', lambda v: list(v.values()) == [80.0],
                        "the canary's window")
    champion, canary = _source(prometheus, "can")
    assert isinstance(champion.read(_now()), EstimateError), "no champion series here"
    r = canary.read(_now())
    assert isinstance(r, EstimateReading), r
    assert (r.model_version, r.n) == (world["v2"], 80) and r.accuracy == pytest.approx(truth["accuracy"], abs=1e-9)

    # The guard: a canary reading on >= minWindow inputs below the threshold rolls back.
    spec = make_spec(trigger={"threshold": 0.9, "minWindow": 50},
                     promotion={"mode": "auto", "canaryShare": 10, "canarySeconds": 600})
    status = CycleStatus()
    run = lambda s: s.current.run_name  # noqa: E731
    for t, make in [(1, lambda s: Observations(estimate=fake_reading(0.97, 1))),
                    (2, lambda s: Observations(estimate=fake_reading(0.80, 2))),
                    (3, lambda s: Observations(runs=(run_obs(run(s), RunPhase.running, 3, "train"),))),
                    (4, lambda s: Observations(runs=(run_obs(run(s), RunPhase.succeeded, 4, None, GOOD_RESULT),))),
                    (5, lambda s: Observations(deployment=DeploymentReading("v1", "v2", 10, at(5))))]:
        status = step(spec, status, t, make(status)).status
    assert status.current is not None and status.current.canary_started_at is not None
    bad = dataclasses.replace(r, accuracy=0.5, observed_at=status.current.canary_started_at + timedelta(seconds=1))
    out = step(spec, status, 10, Observations(canary_estimate=bad)).status
    assert (out.stage, out.reason) == (Stage.rollback, "CanaryRollback"), out.message
    # Without its count (what the source gave before) the same estimate could never roll back.
    blind = step(spec, status, 10, Observations(canary_estimate=dataclasses.replace(bad, n=0))).status
    assert blind.stage is Stage.canary, blind.message


def test_prometheus_error_text_is_surfaced(prometheus):
    bad = PrometheusEstimate(prometheus.url, "sum(rate(daic_window_size[5m]", "1").read(_now())
    assert isinstance(bad, EstimateError) and "HTTP 400" in bad.error and "bad_data" in bad.error
    assert "unclosed" in bad.error or "parse error" in bad.error, bad.error


def test_counters_exist_at_zero_before_their_first_event(world, prometheus):
    sc = world["sidecar"]("zero", "a")
    expected = {"daic_sidecar_inputs_scored_total": {"model_version": world["v1"]},
                "daic_sidecar_store_failures_total": {}, "daic_sidecar_records_written_total": {},
                "daic_sidecar_events_dropped_total": {"reason": "backpressure"}}
    for name, labels in expected.items():
        matchers = ", ".join(['deployment="zero"', *(f'{k}="{v}"' for k, v in labels.items())])
        values = prometheus.wait_for(f"{name}{{{matchers}}}", lambda v: len(v) == 1, f"{name} at 0")
        assert list(values.values()) == [0.0], name
    images, _ = mnist_test_images(30, start=700)
    sc.predict(world["served"], world["v1"], images)
    scored = prometheus.wait_for('daic_sidecar_inputs_scored_total{deployment="zero"}',
                                 lambda v: list(v.values()) == [30.0], "the first inputs counted")
    assert scored
    # From 0, increase() sees all of the first inputs (it extrapolates up, never below a zero start).
    increase = sum(prometheus.values('increase(daic_sidecar_inputs_scored_total{deployment="zero"}[10m])').values())
    assert increase >= 30.0 - 1e-9, increase


def test_the_trigger_rearms_after_a_cycle_on_clean_traffic(world, prometheus):
    """After a cycle the trigger is disarmed; clean traffic (MNIST test digits, the champion's own
    distribution) read through Prometheus must re-arm it: estimate back above the threshold plus
    hysteresis, trusted, no drift or change alarm (daic.oracles.trigger.decide)."""
    images, _ = mnist_test_images(400, start=1000)
    sc = world["sidecar"]("rearm", "a")
    sc.predict(world["served"], world["v1"], images)
    _scraped_n(prometheus, "rearm", {world["v1"]: 400})
    source, _ = _source(prometheus, "rearm")
    r = source.read(_now())
    assert isinstance(r, EstimateReading), r
    spec = parse_spec({"deployment": {"name": "rearm"}, "estimate": {"url": "http://x/estimate"},
                       "trigger": {"mode": "drop", "maxDrop": 0.05, "minWindow": 200}})
    after_cycle = CycleStatus().model_copy(update={"armed": False, "cycle_count": 1})
    status = reconcile(spec, after_cycle, Observations(estimate=r), _now(), IDENT).status
    assert status.armed, (f"not re-armed on clean traffic: estimate {r.accuracy:.4f} (reference "
                          f"{r.reference_accuracy}), trusted {r.trusted}, drift alarm {r.drift_alarm}, "
                          f"change alarm {r.change_alarm}: {status.message}")
