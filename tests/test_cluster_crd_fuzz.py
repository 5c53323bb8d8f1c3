"""Mutated AssessmentCycle specs against the real kube-apiserver (tests/cluster) and the operator's
pydantic models (operators/spec.py): whatever the API server stores, the operator either reads or
refuses with InvalidSpec naming the field (it never crashes on it), and the two agree on what is
valid (cross-field rules included: the CRD carries them as CEL rules)."""
from __future__ import annotations

import json
import random
import uuid
from pathlib import Path

import kubernetes
import pytest
import yaml

from daic.operators.spec import GROUP, KIND, PLURAL, VERSION, InvalidSpec, parse_spec
from test_fuzz_bad_input import mutate

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = [yaml.safe_load(p.read_text())["spec"]
            for p in sorted((REPO / "manifests" / "examples").glob("assessmentcycle-*.yaml"))]


def test_what_the_server_stores_the_operator_reads_or_refuses_by_name(kube):
    ns = kube.namespace("crd-fuzz")
    api = kube.custom()
    rng = random.Random(7)
    outcomes = {"both accept": 0, "both refuse": 0, "server only": [], "models only": []}
    for i in range(120):
        spec = mutate(rng.choice(EXAMPLES), rng)
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND,
                "metadata": {"name": f"f-{uuid.uuid4().hex[:8]}", "namespace": ns}, "spec": spec}
        try:
            stored = api.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body,
                                                         field_validation="Strict")["spec"]
        except kubernetes.client.ApiException as exc:
            assert exc.status in (400, 422), (i, exc.status, exc.body[:300])
            assert json.loads(exc.body)["message"], i
            stored = None
        try:
            parse_spec(spec if stored is None else stored)
            models_ok = True
        except InvalidSpec as exc:
            assert str(exc).startswith("spec") or "spec" in str(exc), (i, str(exc))
            models_ok = False
        if stored is not None and models_ok:
            outcomes["both accept"] += 1
        elif stored is None and not models_ok:
            outcomes["both refuse"] += 1
        elif stored is not None:
            outcomes["server only"].append(json.dumps(spec)[:400])
        else:
            outcomes["models only"].append(json.dumps(spec)[:400])
    assert outcomes["server only"] == [], "stored by the server, refused by the operator"
    assert outcomes["models only"] == [], "valid for the operator, refused by the server"
    assert outcomes["both accept"] > 0 and outcomes["both refuse"] > 0, outcomes


# Cross-field rules of operators/spec.py that the CRD carries as CEL rules (x-kubernetes-validations),
# so `kubectl apply` refuses them with the operator's own words instead of the operator later.
CROSS_FIELD = [
    ({"promotion": {"canarySeconds": 7200, "timeoutSeconds": 3600}}, "must exceed promotion.canarySeconds"),
    ({"pipeline": {"versionId": "v1"}}, "versionId needs pipeline.pipelineId"),
    ({"estimate": {"canaryQuery": "up"}}, "canaryQuery applies to source 'prometheus'"),
    ({"estimate": {"source": "prometheus", "prometheusUrl": "http://p:9090", "selector": "{a=\"b\"}",
                   "canaryUrl": "http://s:8300/estimate", "url": None}}, "canaryUrl applies to source 'sidecar'"),
    ({"estimate": {"source": "prometheus", "prometheusUrl": "http://p:9090", "selector": "{a=\"b\"}",
                   "query": "up", "countQuery": "up", "url": None}}, "exclude each other"),
    ({"estimate": {"source": "prometheus", "prometheusUrl": "http://p:9090", "query": "sum(up)",
                   "countQuery": "up", "canaryQuery": "up", "url": None}}, "canaryCountQuery is required"),
]


@pytest.mark.parametrize("change,words", CROSS_FIELD, ids=[w for _, w in CROSS_FIELD])
def test_cross_field_rules_are_refused_by_the_server_and_the_operator_alike(kube, change, words):
    from fakes.crd_schema import spec_with

    spec = spec_with(change)
    with pytest.raises(InvalidSpec, match=words.split("'")[0]):
        parse_spec(spec)
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND,
            "metadata": {"name": f"x-{uuid.uuid4().hex[:8]}", "namespace": kube.namespace("crd-rules")}, "spec": spec}
    with pytest.raises(kubernetes.client.ApiException) as err:
        kube.custom().create_namespaced_custom_object(GROUP, VERSION, body["metadata"]["namespace"], PLURAL, body,
                                                      field_validation="Strict")
    assert err.value.status == 422 and words in json.loads(err.value.body)["message"], err.value.body[:500]
