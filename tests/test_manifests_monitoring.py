"""Monitoring: the Grafana dashboard queries only metrics the sidecar really exports, with labels
they really carry, and the ServiceMonitor reaches the sidecar's port on the SeldonDeployment's pods.

The sidecar's metric names are read from a live ``daic.sidecar.metrics.SidecarMetrics`` registry
(what ``/metrics`` serves), not copied here.
"""
from __future__ import annotations

import functools
import json
import re
from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from daic.deploy.render import kustomize
from daic.sidecar.metrics import SidecarMetrics

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "manifests"
DASHBOARD = MANIFESTS / "monitoring" / "dashboards" / "daic-oracle.json"
PROMQL_WORDS = {"sum", "avg", "min", "max", "by", "rate", "increase", "label_values", "without"}


@functools.cache
def render(overlay: str) -> tuple:
    return tuple(kustomize(MANIFESTS / "overlays" / overlay))


class _EveryField(dict):
    """An estimate record with a value for whatever field the collector asks for."""

    def get(self, key, default=None):
        return 0.5


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
    assert "by (deployment, model_version)" in text, "estimates are shown per model version"


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
