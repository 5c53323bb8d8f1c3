"""Monitoring: the Grafana dashboard and the PrometheusRule query only metrics the sidecar really
exports, with labels they really carry, and pool replicas by window; the rules pass
``promtool check rules`` and their unit tests (``promtool test rules``, Debian's prometheus package,
installed by ``make test``); the ServiceMonitor reaches the sidecar's port on the SeldonDeployment's pods.

The sidecar's metric names are read from a live ``daic.sidecar.metrics.SidecarMetrics`` registry
(what ``/metrics`` serves), not copied here.
"""
from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from daic.deploy.render import kustomize
from daic.sidecar.metrics import SidecarMetrics

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "manifests"
DASHBOARD = MANIFESTS / "monitoring" / "dashboards" / "daic-oracle.json"
RULE = MANIFESTS / "monitoring" / "prometheusrule.yaml"
RULE_TESTS = MANIFESTS / "monitoring" / "tests" / "daic-oracle.test.yaml"
PROMQL_WORDS = {"sum", "avg", "min", "max", "by", "rate", "increase", "label_values", "without"}


@functools.cache
def render(overlay: str) -> tuple:
    return tuple(kustomize(MANIFESTS / "overlays" / overlay))


class _EveryField(dict):
    """An estimate record with a value for whatever field the collector asks for."""

    def get(self, key, default=None):
        return "champion" if key == "role" else 0.5


def exported() -> dict[str, set[str]]:
    """{sample name: label names} of a sidecar registry with every estimate field filled in."""
    metrics = SidecarMetrics("mnist", estimates=lambda: {"v0001": _EveryField()})
    metrics.scored.labels("mnist", "v0001").inc()
    metrics.unscored.labels("mnist", "v0001").inc()
    for counter in (metrics.records_written, metrics.store_failures, metrics.replayed):
        counter.labels("mnist").inc()
    metrics.queue_depth.labels("mnist").set(1)
    metrics.pending_joins.labels("mnist").set(1)
    out: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(generate_latest(metrics.registry).decode()):
        for sample in family.samples:
            out.setdefault(sample.name, set()).update(sample.labels)
    return out


def expressions() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    exprs += [v["definition"] for v in dash["templating"]["list"] if v.get("definition")]
    return exprs


def test_dashboard_is_well_formed():
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] == "daic-oracle" and dash["panels"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    variables = {v["name"] for v in dash["templating"]["list"]}
    assert {"datasource", "deployment", "model_version"} <= variables
    for panel in dash["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"]) and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]


def test_dashboard_shows_what_the_issue_asks_for():
    text = " ".join(expressions())
    for metric in ("daic_estimated_accuracy", "daic_estimated_accuracy_lower", "daic_estimated_accuracy_upper",
                   "daic_drift_score", "daic_sidecar_events_received_total", "daic_sidecar_events_joined_total",
                   "daic_sidecar_events_dropped_total", "daic_window_size"):
        assert re.search(rf"\b{metric}\b", text), f"no panel shows {metric}"
    assert "by (deployment, model_version, role)" in text, "estimates are shown per serving version and role"
    assert "daic_serving_info" in text and "daic_estimate_timestamp_seconds" in text


def test_dashboard_pools_replicas_by_window():
    """An estimate (or band, or drift score) from N replicas is weighted by window size, never averaged."""
    for expr in expressions():
        for metric in ("daic_estimated_accuracy", "daic_estimated_accuracy_lower", "daic_estimated_accuracy_upper",
                       "daic_drift_score"):
            if re.search(rf"\b{metric}\b", expr):
                assert re.search(rf"sum by \([^)]*\) \({metric}\{{[^}}]*\}} \* daic_window_size", expr), expr
                assert "/ sum by" in expr, expr
        assert not re.match(r"^\s*avg\b", expr), f"averaging replicas ignores their windows: {expr}"


def test_every_dashboard_metric_and_label_exists_in_the_sidecar():
    samples = exported()
    used_labels = set()
    for expr in expressions():
        names = set(re.findall(r"\b(daic_[a-z0-9_]+)\b", expr))
        assert names, f"query names no daic metric: {expr}"
        for name in names:
            assert name in samples, f"{name} (in {expr!r}) is not exported by daic.sidecar.metrics; exported: {sorted(samples)}"
        available = set().union(*(samples[n] for n in names))
        used_labels = set(re.findall(r"([a-z_]+)\s*=~?\s*\"", expr))
        for clause in re.findall(r"\bby \(([^)]*)\)", expr):
            used_labels |= {w.strip() for w in clause.split(",")}
        if expr.startswith("label_values("):
            used_labels.add(expr.rstrip(")").rsplit(",", 1)[1].strip())
        missing = used_labels - available - PROMQL_WORDS
        assert not missing, f"{expr!r} uses labels {missing} that {names} do not carry ({available})"


def test_dashboard_configmap_carries_the_file_unchanged():
    cm = next(o for o in render("gpu") if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "daic-grafana-dashboard")
    assert json.loads(cm["data"]["daic-oracle.json"]) == json.loads(DASHBOARD.read_text())


def test_service_monitor_reaches_the_sidecar_port_of_the_model_pods():
    """ServiceMonitor -> the *-oracle Services -> the sidecar port of the champion and canary pods."""
    objects = render("gpu")
    monitor = next(o for o in objects if o["kind"] == "ServiceMonitor")
    endpoint = monitor["spec"]["endpoints"][0]
    assert endpoint["path"] == "/metrics"
    services = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Service"
                and all(o["metadata"].get("labels", {}).get(k) == v
                        for k, v in monitor["spec"]["selector"]["matchLabels"].items())}
    assert set(services) == {"mnist-default-oracle", "mnist-canary-oracle"}
    sdep = next(o for o in objects if o["kind"] == "SeldonDeployment")
    predictor = sdep["spec"]["predictors"][0]
    sidecar = next(c for cs in predictor["componentSpecs"] for c in cs["spec"]["containers"]
                   if any(cp.get("name") == "oracle-http" for cp in c.get("ports", [])))
    container_port = next(cp["containerPort"] for cp in sidecar["ports"] if cp["name"] == "oracle-http")
    # Seldon labels a predictor's pods seldon-app: <SeldonDeployment>-<predictor>; the operator
    # names the canary predictor `canary`.
    for name, predictor_name in (("mnist-default-oracle", predictor["name"]), ("mnist-canary-oracle", "canary")):
        service = services[name]
        assert service["spec"]["selector"] == {"seldon-app": f"{sdep['metadata']['name']}-{predictor_name}"}
        port = next(p for p in service["spec"]["ports"] if p["name"] == endpoint["port"])
        assert port["targetPort"] == "oracle-http" and port["port"] == container_port


def _rule_objects() -> list[dict]:
    return [o for o in render("gpu") if o["kind"] == "PrometheusRule"]


def _promtool() -> str:
    path = shutil.which("promtool")
    if not path:
        pytest.fail("promtool is not installed: `make test` installs Debian's prometheus package")
    return path


def test_prometheus_rule_is_rendered_and_passes_promtool_check(tmp_path):
    (rule,) = _rule_objects()
    assert rule["metadata"]["name"] == "daic-oracle"
    monitor = next(o for o in render("gpu") if o["kind"] == "ServiceMonitor")
    assert rule["metadata"]["labels"]["release"] == monitor["metadata"]["labels"]["release"], "one Prometheus, both"
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(rule["spec"]))
    done = subprocess.run([_promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r}
    assert {"DaicEstimateBelowThreshold", "DaicEstimateUntrusted", "DaicEventsDropped", "DaicStoreFailures",
            "DaicSidecarDown"} <= alerts


def test_prometheus_rule_unit_tests_pass(tmp_path):
    """``promtool test rules`` on manifests/monitoring/tests: each alert fires on its case (two
    replicas pooled by window, a canary that must not alert, counters rising from 0, a target
    down) and stays silent where it must."""
    (rule,) = _rule_objects()
    (tmp_path / "daic-oracle.rules.yaml").write_text(yaml.safe_dump(rule["spec"]))
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    done = subprocess.run([_promtool(), "test", "rules", RULE_TESTS.name], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("breakage", ["ignore the role", "average the replicas"])
def test_prometheus_rule_unit_tests_can_fail(tmp_path, breakage):
    """The same unit tests fail against rules that alert on the canary or average replicas."""
    (rule,) = _rule_objects()
    spec = json.loads(json.dumps(rule["spec"]))
    for group in spec["groups"]:
        for r in group["rules"]:
            if breakage == "ignore the role":
                r["expr"] = r["expr"].replace('{role="champion"}', "")
            elif r.get("record") == "daic:estimated_accuracy:pooled":
                r["expr"] = "avg by (namespace, deployment, model_version, role) (daic_estimated_accuracy)"
    assert spec != rule["spec"]
    (tmp_path / "daic-oracle.rules.yaml").write_text(yaml.safe_dump(spec))
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    done = subprocess.run([_promtool(), "test", "rules", RULE_TESTS.name], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode != 0, done.stdout


def test_every_rule_metric_and_label_exists_in_the_sidecar():
    samples = exported()
    (rule,) = _rule_objects()
    recorded = {r["record"] for g in rule["spec"]["groups"] for r in g["rules"] if "record" in r}
    scrape_labels = {"namespace", "job", "instance", "pod"}
    for group in rule["spec"]["groups"]:
        for r in group["rules"]:
            expr = r["expr"]
            for name in set(re.findall(r"\b(daic_[a-z0-9_]+)\b", expr)):
                assert name in samples, f"{name} (in {expr!r}) is not exported by the sidecar"
            for name in set(re.findall(r"\b(daic:[a-z0-9_:]+)\b", expr)):
                assert name in recorded, f"{name} (in {expr!r}) is not recorded by the rule"
            names = set(re.findall(r"\b(daic_[a-z0-9_]+)\b", expr))
            available = set().union(*(samples[n] for n in names)) if names else set()
            used = {w.strip() for clause in re.findall(r"\b(?:by|on) \(([^)]*)\)", expr) for w in clause.split(",")}
            used |= set(re.findall(r"([a-z_]+)\s*=~?\s*\"", expr))
            missing = used - available - scrape_labels - {"__name__"} if names else set()
            assert not missing, f"{expr!r} uses labels {missing} the sidecar's series do not carry"


def test_sidecar_exposition_passes_promtool_check_metrics():
    metrics = SidecarMetrics("mnist", estimates=lambda: {"v0001": _EveryField(), "v0002": _EveryField()})
    metrics.init_version("v0001")
    text = generate_latest(metrics.registry).decode()
    assert 'daic_serving_info{deployment="mnist",model_version="v0002",role="champion"} 1.0' in text
    assert 'daic_sidecar_inputs_scored_total{deployment="mnist",model_version="v0001"} 0.0' in text
    done = subprocess.run([_promtool(), "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
