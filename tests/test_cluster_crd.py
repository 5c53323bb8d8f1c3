"""The AssessmentCycle CRD (manifests/crd) as the real API server enforces it (tests/cluster).

Invalid resources get 422 Invalid with a message naming the field (the message a user sees from
kubectl); unknown fields are refused under strict field validation (kubectl's default) and pruned
without it; and the defaults the server fills in equal the pydantic models' (operators/spec.py),
so the operator reads the same spec the user sees with ``kubectl get -o yaml``.
"""
from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import yaml

from daic.operators.spec import GROUP, KIND, PLURAL, VERSION, parse_spec
from fakes.crd_schema import minimal_spec, spec_with

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = [p for p in sorted((REPO / "manifests" / "examples").glob("assessmentcycle-*.yaml"))]


@pytest.fixture(scope="module")
def ns(kube):
    return kube.namespace("crd")




def _create(kube, ns: str, spec: dict, field_validation: str | None = "Strict", name: str | None = None):
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND,
            "metadata": {"name": name or f"c-{uuid.uuid4().hex[:8]}", "namespace": ns}, "spec": spec}
    kwargs = {"field_validation": field_validation} if field_validation else {}
    return kube.custom().create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body, **kwargs)


def _refusal(kube, ns: str, spec: dict) -> tuple[int, str]:
    import json

    import kubernetes

    with pytest.raises(kubernetes.client.ApiException) as err:
        _create(kube, ns, spec)
    return err.value.status, json.loads(err.value.body)["message"]


# (case, change to the minimal spec, what the server's message must contain)
INVALID = [
    ("negative threshold", {"trigger": {"threshold": -0.1}}, ["spec.trigger.threshold", "greater than 0"]),
    ("threshold above 1", {"trigger": {"threshold": 1.5}}, ["spec.trigger.threshold", "less than 1"]),
    ("unknown sampler", {"labeling": {"sampler": "magic"}}, ["spec.labeling.sampler", 'Unsupported value: "magic"']),
    ("unknown promotion mode", {"promotion": {"mode": "yolo"}}, ["spec.promotion.mode", "Unsupported value"]),
    ("missing deployment", {"deployment": None}, ["spec.deployment", "Required value"]),
    ("deployment without a name", {"deployment": {"name": None, "predictor": "default"}},
     ["spec.deployment.name", "Required value"]),
    ("upper-case deployment name", {"deployment": {"name": "MNIST"}}, ["spec.deployment.name", "should match"]),
    ("drop mode without maxDrop", {"trigger": {"mode": "drop", "threshold": None}}, ["spec.trigger"]),
    ("sidecar without url", {"estimate": {"url": None}}, ["spec.estimate"]),
    ("prometheus without a query", {"estimate": {"url": None, "source": "prometheus",
                                                  "prometheusUrl": "http://p:9090"}}, ["spec.estimate"]),
    ("url without a scheme", {"estimate": {"url": "sidecar:8300/estimate"}}, ["spec.estimate.url", "should match"]),
    ("canary share 100", {"promotion": {"canaryShare": 100}}, ["spec.promotion.canaryShare", "less than or equal to 99"]),
    ("zero budget", {"labeling": {"budget": 0}}, ["spec.labeling.budget", "greater than or equal to 1"]),
    ("zero half width", {"labeling": {"targetHalfWidth": 0}}, ["spec.labeling.targetHalfWidth", "greater than 0"]),
    ("bad memory quantity", {"resources": {"memoryPerWorker": "lots"}}, ["spec.resources.memoryPerWorker", "should match"]),
    ("negative gpus", {"resources": {"gpusPerWorker": -1}}, ["spec.resources.gpusPerWorker", "greater than or equal to 0"]),
    ("string where a number goes", {"cooldownSeconds": "an hour"}, ["spec.cooldownSeconds", "must be of type integer"]),
]


@pytest.mark.parametrize("case,change,fragments", INVALID, ids=[c[0] for c in INVALID])
def test_the_server_refuses_invalid_specs_with_a_message_naming_the_field(kube, ns, case, change, fragments):
    status, message = _refusal(kube, ns, spec_with(change))
    assert status == 422, (status, message)
    for fragment in fragments:
        assert fragment in message, message


def test_an_unknown_field_is_refused_under_strict_validation_and_pruned_without(kube, ns):
    import json

    import kubernetes

    spec = spec_with({"trigger": {"threshhold": 0.5}})
    with pytest.raises(kubernetes.client.ApiException) as err:
        _create(kube, ns, spec)
    assert 'unknown field "spec.trigger.threshhold"' in json.loads(err.value.body)["message"]
    created = _create(kube, ns, spec, field_validation=None)  # what a client without strict validation gets
    assert "threshhold" not in created["spec"]["trigger"]


@pytest.mark.parametrize("spec", [minimal_spec(), {**minimal_spec(), "labeling": {}, "pipeline": {}, "resources": {}, "promotion": {}}]
                         + [yaml.safe_load(p.read_text())["spec"] for p in EXAMPLES],
                         ids=["minimal", "empty-sections"] + [p.name for p in EXAMPLES])
def test_the_servers_defaults_equal_the_models(kube, ns, spec):
    created = _create(kube, ns, spec)
    models = parse_spec(spec).model_dump(mode="json", by_alias=True, exclude_none=True)
    assert created["spec"] == models, "the API server's defaults and the models' defaults differ"
    assert parse_spec(created["spec"]) == parse_spec(spec)
