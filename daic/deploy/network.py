"""Who may connect to what: daic's NetworkPolicy rules over a rendered install.

The pods that must not be open to the whole cluster are the *protected* ones:

* a pod with the pseudo-oracle sidecar (a container port named ``oracle-http``): its estimate
  decides when a retraining cycle starts;
* the operator's pod (template label ``app.kubernetes.io/name: daic-operator``): it starts runs.

Rules (each shown to fire in tests/test_manifests_network.py):

1. every NetworkPolicy lists ``Ingress`` in ``policyTypes``, and each ingress rule names its
   ``ports`` and its ``from`` peers (a rule without them admits every port or every source), with no
   ``ipBlock`` covering every address;
2. every protected pod is selected by a NetworkPolicy with ``Ingress`` in the same install;
3. on a protected pod, a rule open to whole namespaces (a peer without a ``podSelector``) or to an
   ``ipBlock`` may admit only public ports: never the sidecar's port, and nothing on the operator.

Pod labels: a Deployment's come from its template; a SeldonDeployment predictor's pods carry
``seldon-app: <name>-<predictor>`` and ``seldon-deployment-id`` (Seldon Core v1's operator) plus the
predictor's ``labels`` and the component spec's metadata labels.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from daic.deploy.problems import Problem, describe, join

SIDECAR_PORT_NAME = "oracle-http"
OPERATOR_LABEL = ("app.kubernetes.io/name", "daic-operator")
_OPEN_CIDRS = {"0.0.0.0/0", "::/0"}


@dataclass(frozen=True)
class Pod:
    """A pod template that will exist in the cluster: where, its labels, its protected ports."""

    where: str
    namespace: str
    labels: dict[str, str]
    kind: str  # "sidecar" or "operator"
    ports: frozenset  # port names and numbers that must not be open to whole namespaces


def protected_pods(objects: list[dict[str, Any]]) -> list[Pod]:
    out = []
    for obj in objects:
        ns = (obj.get("metadata") or {}).get("namespace", "")
        for path, labels, spec in _templates(obj):
            ports = {(p.get("name"), p.get("containerPort")) for c in spec.get("containers") or []
                     for p in c.get("ports") or []}
            sidecar = {v for pair in ports if pair[0] == SIDECAR_PORT_NAME for v in pair if v is not None}
            if sidecar:
                out.append(Pod(f"{describe(obj)} {path}", ns, labels, "sidecar", frozenset(sidecar)))
            elif labels.get(OPERATOR_LABEL[0]) == OPERATOR_LABEL[1]:
                out.append(Pod(f"{describe(obj)} {path}", ns, labels, "operator", frozenset()))
    return out


def _templates(obj: dict[str, Any]):
    """(path, pod labels, pod spec) of the pods an object makes."""
    kind, spec = obj.get("kind"), obj.get("spec") or {}
    if kind == "SeldonDeployment":
        name = (obj.get("metadata") or {}).get("name", "")
        for i, predictor in enumerate(spec.get("predictors") or []):
            base = {"seldon-app": f"{name}-{predictor.get('name', '')}", "seldon-deployment-id": name,
                    **(predictor.get("labels") or {})}
            for j, component in enumerate(predictor.get("componentSpecs") or []):
                labels = {**base, **((component.get("metadata") or {}).get("labels") or {})}
                yield join("spec.predictors", i, "componentSpecs", j), labels, component.get("spec") or {}
    elif kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        template = spec.get("template") or {}
        yield "spec.template", (template.get("metadata") or {}).get("labels") or {}, template.get("spec") or {}
    elif kind == "Pod":
        yield "spec", (obj.get("metadata") or {}).get("labels") or {}, spec


def selects(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """Kubernetes label-selector semantics (an empty selector selects everything)."""
    selector = selector or {}
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def _open_peer(peer: dict[str, Any]) -> bool:
    """A peer that admits whole namespaces or address ranges rather than chosen pods."""
    if "ipBlock" in peer:
        return True
    pod_selector = peer.get("podSelector")
    return "namespaceSelector" in peer and not ((pod_selector or {}).get("matchLabels")
                                                or (pod_selector or {}).get("matchExpressions"))


def policy_problems(obj: dict[str, Any]) -> list[Problem]:
    """Rule 1 for one NetworkPolicy."""
    if obj.get("kind") != "NetworkPolicy":
        return []
    where, spec = describe(obj), obj.get("spec") or {}
    out = []
    if "Ingress" not in (spec.get("policyTypes") or []):
        out.append(Problem(where, "spec.policyTypes", "must list Ingress (daic's policies restrict who connects)"))
    for i, rule in enumerate(spec.get("ingress") or []):
        path = join("spec.ingress", i)
        if not rule.get("ports"):
            out.append(Problem(where, path, "an ingress rule must name its ports (without, it admits every port)"))
        if not rule.get("from"):
            out.append(Problem(where, path, "an ingress rule must name its peers in 'from' (without, it admits "
                                            "every source)"))
        for j, peer in enumerate(rule.get("from") or []):
            if (peer.get("ipBlock") or {}).get("cidr") in _OPEN_CIDRS:
                out.append(Problem(where, join(path, "from", j, "ipBlock"), "admits every address"))
    return out


def exposure_problems(objects: list[dict[str, Any]]) -> list[Problem]:
    """Rules 2 and 3 over the whole install."""
    policies = [o for o in objects if o.get("kind") == "NetworkPolicy"
                and "Ingress" in ((o.get("spec") or {}).get("policyTypes") or [])]
    out = []
    for pod in protected_pods(objects):
        mine = [p for p in policies if (p.get("metadata") or {}).get("namespace", "") == pod.namespace
                and selects((p.get("spec") or {}).get("podSelector"), pod.labels)]
        if not mine:
            out.append(Problem(pod.where, "metadata.labels", f"the {pod.kind}'s pods are selected by no "
                                                             "NetworkPolicy with Ingress: the whole cluster can connect"))
            continue
        for policy in mine:
            for i, rule in enumerate((policy.get("spec") or {}).get("ingress") or []):
                if not any(_open_peer(peer) for peer in rule.get("from") or []) and rule.get("from"):
                    continue
                ports = {p.get("port") for p in rule.get("ports") or []}
                if pod.kind == "operator":
                    bad = "the operator admits no connection from whole namespaces or address ranges"
                elif not ports or ports & pod.ports:
                    bad = (f"the sidecar's port ({', '.join(str(p) for p in sorted(pod.ports, key=str))}) is open "
                           "to whole namespaces or address ranges; name the pods (operator, Prometheus)")
                else:
                    continue
                out.append(Problem(describe(policy), join("spec.ingress", i), f"{bad} (applies to {pod.where})"))
    return out
