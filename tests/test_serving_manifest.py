"""SeldonDeployment rendering: plain data, checked field by field and against the Kubernetes
PodSpec schema (kubernetes-validate); the committed manifest must equal the rendering."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from pydantic import ValidationError

from daic.serving.manifest import (
    DeploymentParams,
    render_canary_deployment,
    render_seldon_deployment,
    to_yaml,
)

ROOT = Path(__file__).resolve().parents[1]


def _pod(predictor: dict) -> dict:
    spec = predictor["componentSpecs"][0]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", **spec["metadata"]}, "spec": spec["spec"]}


def test_default_deployment_fields():
    params = DeploymentParams(name="digits", namespace="ml", model_version="v0003", sidecar_port=8400,
                              model_image="reg/serving:1", sidecar_image="reg/sidecar:1", replicas=2)
    doc = render_seldon_deployment(params)
    assert doc["apiVersion"] == "machinelearning.seldon.io/v1" and doc["kind"] == "SeldonDeployment"
    assert doc["metadata"] == {"name": "digits", "namespace": "ml",
                               "labels": {"app.kubernetes.io/name": "digits", "app.kubernetes.io/part-of": "daic"}}
    (pred,) = doc["spec"]["predictors"]
    assert pred["replicas"] == 2 and pred["traffic"] == 100
    graph = pred["graph"]
    assert graph["type"] == "MODEL" and graph["children"] == []
    # the executor posts to the sidecar's loopback ingest port; 8400 serves estimate/metrics/health
    assert graph["logger"] == {"mode": "all", "url": "http://localhost:8301/"}
    params_by_name = {p["name"]: p for p in graph["parameters"]}
    assert params_by_name["model_version"] == {"name": "model_version", "type": "STRING", "value": "v0003"}
    component = pred["componentSpecs"][0]
    assert component["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true", "prometheus.io/port": "8400", "prometheus.io/path": "/metrics"}
    pod = component["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    model, sidecar = pod["containers"]
    assert model["name"] == graph["name"], "Seldon binds the graph node to the container by name"
    assert model["image"] == "reg/serving:1" and sidecar["image"] == "reg/sidecar:1"
    assert model["command"][:2] == ["seldon-core-microservice", "daic.serving.model.DaicModel"]
    assert sidecar["command"][:3] == ["daic", "oracle", "serve"]
    assert sidecar["command"][sidecar["command"].index("--port") + 1] == "8400"
    assert sidecar["command"][sidecar["command"].index("--deployment") + 1] == "digits"
    for c in (model, sidecar):
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        assert set(c["resources"]) == {"requests", "limits"}
        assert c["readinessProbe"]["httpGet"]["path"] and c["livenessProbe"]["httpGet"]["path"]
        assert {"name": "DAIC_STORE", "value": "s3://daic"} in c["env"]
        assert c["envFrom"] == [{"configMapRef": {"name": "daic-storage"}}, {"secretRef": {"name": "daic-store"}}]
    assert model["readinessProbe"]["httpGet"] == {"path": "/health/status", "port": 9000}
    assert sidecar["readinessProbe"]["httpGet"] == {"path": "/health/ready", "port": 8400}
    mounts = {m["name"] for m in sidecar["volumeMounts"]}
    assert mounts <= {v["name"] for v in pod["volumes"]}
    kubernetes_validate.validate(_pod(pred), "1.30", strict=True)


def test_canary_variant_splits_traffic_and_logs_apart():
    doc = render_canary_deployment(DeploymentParams(), canary_version="v0009", canary_traffic=10)
    main, canary = doc["spec"]["predictors"]
    assert (main["traffic"], canary["traffic"]) == (90, 10)
    assert canary["name"] == "canary"
    version = {p["name"]: p["value"] for p in canary["graph"]["parameters"]}["model_version"]
    assert version == "v0009"
    assert {p["name"]: p["value"] for p in main["graph"]["parameters"]}["model_version"] == "champion"
    side_main = main["componentSpecs"][0]["spec"]["containers"][1]["command"]
    side_canary = canary["componentSpecs"][0]["spec"]["containers"][1]["command"]
    assert side_main[side_main.index("--deployment") + 1] == "mnist"
    assert side_canary[side_canary.index("--deployment") + 1] == "mnist-canary"
    for pred in (main, canary):
        kubernetes_validate.validate(_pod(pred), "1.30", strict=True)


@pytest.mark.parametrize("kwargs, words", [
    ({"name": "Bad_Name"}, "DNS-1123"),
    ({"store_url": "http://x"}, "store_url"),
    ({"model_version": "a/b"}, "model version"),
    ({"traffic": 101}, "traffic"),
    ({"replicas": 0}, "replicas"),
    ({"unknown": 1}, "unknown"),
])
def test_bad_parameters_are_named(kwargs, words):
    with pytest.raises(ValidationError, match=words):
        DeploymentParams(**kwargs)


def test_bad_canary_arguments():
    with pytest.raises(ValueError, match="between 1 and 99"):
        render_canary_deployment(DeploymentParams(), "v2", 100)
    with pytest.raises(ValueError, match="pin a version"):
        render_canary_deployment(DeploymentParams(), "champion", 10)


def test_committed_manifest_is_the_default_rendering():
    committed = yaml.safe_load((ROOT / "manifests/serving/seldondeployment.yaml").read_text())
    assert committed == render_seldon_deployment(DeploymentParams())
    assert yaml.safe_load(to_yaml(committed)) == committed


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
def test_kustomize_builds():
    out = subprocess.run(["kubectl", "kustomize", str(ROOT / "manifests/serving")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    assert [d["kind"] for d in docs] == ["SeldonDeployment"]


def test_cli_renders_and_rejects_bad_options():
    from click.testing import CliRunner

    from daic.cli import main

    runner = CliRunner()
    out = runner.invoke(main, ["serve", "manifest", "--canary-version", "v0002", "--canary-traffic", "20"])
    assert out.exit_code == 0, out.output
    doc = yaml.safe_load(out.output)
    assert [p["traffic"] for p in doc["spec"]["predictors"]] == [80, 20]
    bad = runner.invoke(main, ["serve", "manifest", "--name", "Bad_Name"])
    assert bad.exit_code == 2 and "DNS-1123" in bad.output
    ports = runner.invoke(main, ["serve", "--gateway-port", "9000", "--model-port", "9000"])
    assert ports.exit_code == 2 and "ports must differ" in ports.output
    sidecar = runner.invoke(main, ["oracle", "serve", "--deployment", "a/b"])
    assert sidecar.exit_code == 2 and "--deployment" in sidecar.output and "without '/'" in sidecar.output


def test_a_transformer_in_front_moves_the_logger_to_the_root_and_tells_the_sidecar():
    import json

    from daic.serving.graph import join_plan
    from daic.serving.manifest import TransformerNode

    params = DeploymentParams(transformer=TransformerNode(model_class="pkg.Filter", parameters={"k": "v"}))
    (pred,) = render_seldon_deployment(params)["spec"]["predictors"]
    graph = pred["graph"]
    assert (graph["name"], graph["type"], graph["children"][0]["name"]) == ("filter", "TRANSFORMER", "classifier")
    assert "logger" in graph and "logger" not in graph["children"][0]
    assert graph["parameters"] == [{"name": "k", "type": "STRING", "value": "v"}]
    transformer, model, sidecar = pred["componentSpecs"][0]["spec"]["containers"]
    assert (transformer["name"], model["name"]) == ("filter", "classifier"), "containers bound to nodes by name"
    assert transformer["command"][:4] == ["seldon-core-microservice", "pkg.Filter", "--service-type", "TRANSFORMER"]
    ports = {p["containerPort"] for c in (transformer, model) for p in c["ports"]}
    assert len(ports) == 4, "each microservice on its own ports"
    plan = join_plan(json.loads(sidecar["command"][sidecar["command"].index("--graph") + 1]))
    assert (plan.entry, plan.answer, plan.nodes["filter"].requests) == ("filter", "filter", 2)
    kubernetes_validate.validate(_pod(pred), "1.30", strict=True)
    with pytest.raises(ValidationError, match="other than 'classifier'"):
        TransformerNode(name="classifier", model_class="x.Y")


def test_feedback_from_outside_the_pod_needs_the_token_secret():
    (pred,) = render_seldon_deployment(DeploymentParams())["spec"]["predictors"]
    sidecar = pred["componentSpecs"][0]["spec"]["containers"][-1]
    assert "--feedback-token-file" not in sidecar["command"], "off unless a Secret is named"
    assert [p["containerPort"] for p in sidecar["ports"]] == [8300], "the ingest port is loopback, not declared"
    (pred,) = render_seldon_deployment(DeploymentParams(feedback_token_secret="daic-feedback"))["spec"]["predictors"]
    pod = pred["componentSpecs"][0]["spec"]
    sidecar = pod["containers"][-1]
    path = sidecar["command"][sidecar["command"].index("--feedback-token-file") + 1]
    mount = next(m for m in sidecar["volumeMounts"] if m["name"] == "feedback-token")
    assert path.startswith(mount["mountPath"] + "/") and mount["readOnly"] is True
    volume = next(v for v in pod["volumes"] if v["name"] == "feedback-token")
    assert volume["secret"] == {"secretName": "daic-feedback", "items": [{"key": "token", "path": "token"}]}
    kubernetes_validate.validate(_pod(pred), "1.30", strict=True)
