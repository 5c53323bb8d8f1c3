"""Who may connect to daic's pods (manifests/base/networkpolicy.yaml, checked by daic/deploy/network.py):
the rendered overlays cover the sidecar and the operator as intended, and each rule fires on a copy of
the real render with one fault put in. Label selection is Kubernetes' (matchLabels, matchExpressions)."""
from __future__ import annotations

import copy
import functools
from pathlib import Path

import pytest

from daic.deploy.check import USER_CREATED, check_objects
from daic.deploy.network import exposure_problems, policy_problems, protected_pods, selects
from daic.deploy.render import kustomize

ROOT = Path(__file__).resolve().parents[1]


@functools.cache
def render(overlay: str) -> tuple:
    return tuple(kustomize(ROOT / "manifests" / "overlays" / overlay))


def objects(overlay="dev") -> list[dict]:
    return copy.deepcopy(list(render(overlay)))


def policy(objs, name):
    return next(o for o in objs if o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == name)


def allowed(objs, pod_kind, port, peer_labels, peer_namespace_labels):
    """Whether a connection from a pod with ``peer_labels`` (in a namespace with those labels) to
    ``port`` of a protected pod is admitted, by NetworkPolicy semantics."""
    pod = next(p for p in protected_pods(objs) if p.kind == pod_kind)
    mine = [o for o in objs if o["kind"] == "NetworkPolicy" and o["metadata"]["namespace"] == pod.namespace
            and selects(o["spec"]["podSelector"], pod.labels)]
    for p in mine:
        for rule in p["spec"].get("ingress") or []:
            if port not in {x["port"] for x in rule.get("ports") or []}:
                continue
            for peer in rule.get("from") or []:
                ns_ok = ("namespaceSelector" in peer and selects(peer["namespaceSelector"], peer_namespace_labels)) or (
                    "namespaceSelector" not in peer and peer_namespace_labels.get("kubernetes.io/metadata.name") == "daic")
                pod_ok = "podSelector" not in peer or selects(peer["podSelector"], peer_labels)
                if ns_ok and pod_ok:
                    return True
    return False


@pytest.mark.parametrize("overlay", ["dev", "gpu"])
def test_the_install_protects_the_sidecar_and_the_operator(overlay):
    objs = objects(overlay)
    kinds = sorted(p.kind for p in protected_pods(objs))
    assert kinds == ["operator", "sidecar"]
    assert exposure_problems(objs) == [] and all(policy_problems(o) == [] for o in objs)
    daic_ns = {"kubernetes.io/metadata.name": "daic"}
    other_ns = {"kubernetes.io/metadata.name": "someone-else"}
    operator = {"app.kubernetes.io/name": "daic-operator"}
    prometheus = {"app.kubernetes.io/name": "prometheus"}
    stranger = {"app": "curl"}
    assert allowed(objs, "sidecar", 8300, operator, daic_ns)
    assert allowed(objs, "sidecar", 8300, prometheus, {"kubernetes.io/metadata.name": "monitoring"})
    assert not allowed(objs, "sidecar", 8300, stranger, daic_ns)
    assert not allowed(objs, "sidecar", 8300, stranger, other_ns)
    assert allowed(objs, "sidecar", 8000, stranger, other_ns)  # the prediction API is for clients
    for port in (8080, 8300, 8000):
        assert not allowed(objs, "operator", port, stranger, daic_ns)


def test_the_check_runs_inside_check_objects():
    objs = [o for o in objects() if not (o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == "daic-operator")]
    problems = check_objects(objs, external=USER_CREATED)
    assert any("operator's pods are selected by no NetworkPolicy" in str(p) for p in problems)


def test_a_sidecar_without_a_policy_is_reported():
    objs = [o for o in objects() if not (o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == "daic-model-server")]
    assert any("sidecar's pods are selected by no NetworkPolicy" in str(p) for p in exposure_problems(objs))


def test_a_selector_that_misses_the_pods_is_reported():
    objs = objects()
    policy(objs, "daic-model-server")["spec"]["podSelector"] = {"matchLabels": {"seldon-app": "other-default"}}
    assert any("sidecar's pods are selected by no" in str(p) for p in exposure_problems(objs))


@pytest.mark.parametrize("peer", [{"namespaceSelector": {}}, {"ipBlock": {"cidr": "10.0.0.0/8"}},
                                  {"namespaceSelector": {}, "podSelector": {}}])
def test_the_sidecar_port_open_to_whole_namespaces_is_reported(peer):
    objs = objects()
    rules = policy(objs, "daic-model-server")["spec"]["ingress"]
    rules.append({"from": [peer], "ports": [{"port": 8300, "protocol": "TCP"}]})
    assert any("sidecar's port" in str(p) for p in exposure_problems(objs))


def test_the_operator_open_to_anyone_is_reported():
    objs = objects()
    policy(objs, "daic-operator")["spec"]["ingress"] = [{"from": [{"namespaceSelector": {}}],
                                                         "ports": [{"port": 8080}]}]
    assert any("operator admits no connection" in str(p) for p in exposure_problems(objs))


@pytest.mark.parametrize("fault,message", [
    (lambda s: s.update(policyTypes=["Egress"]), "must list Ingress"),
    (lambda s: s["ingress"][0].pop("ports"), "must name its ports"),
    (lambda s: s["ingress"][1].pop("from"), "must name its peers"),
    (lambda s: s["ingress"][0]["from"].append({"ipBlock": {"cidr": "0.0.0.0/0"}}), "admits every address"),
])
def test_policy_rules_fire(fault, message):
    objs = objects()
    p = policy(objs, "daic-model-server")
    fault(p["spec"])
    assert any(message in str(x) for x in policy_problems(p))
    assert any(message in str(x) or "selected by no" in str(x) or "sidecar's port" in str(x)
               for x in check_objects(objs, external=USER_CREATED))


@pytest.mark.parametrize("selector,labels,expected", [
    ({}, {"a": "1"}, True),
    ({"matchLabels": {"a": "1"}}, {"a": "1", "b": "2"}, True),
    ({"matchLabels": {"a": "2"}}, {"a": "1"}, False),
    ({"matchExpressions": [{"key": "a", "operator": "In", "values": ["1", "3"]}]}, {"a": "1"}, True),
    ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}, {"a": "1"}, False),
    ({"matchExpressions": [{"key": "a", "operator": "Exists"}]}, {}, False),
    ({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]}, {}, True),
])
def test_selector_semantics(selector, labels, expected):
    assert selects(selector, labels) is expected
