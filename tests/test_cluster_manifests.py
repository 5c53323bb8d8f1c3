"""Every kustomization and example under manifests/, and the objects daic renders at run time,
applied to a real kube-apiserver (tests/cluster) with the upstream CRDs installed (KubeRay v1.5.0
and prometheus-operator v0.93.0 from their Go modules; SeldonDeployment a stand-in with an open
schema while Seldon's module is not served, see tests/cluster/upstream.py).

``kubectl apply --server-side --validate=strict`` (the kubectl of the lock) must accept
each one, and a second apply must change nothing (no object's resourceVersion moves). The API
server is the judge here: its CRD schemas, built-in validation and defaulting, not daic's own
offline check.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from daic.serving.manifest import DeploymentParams, render_canary_deployment, render_seldon_deployment, to_yaml
from daic.training.rayjob import RayJobSpec, render_rayjob

REPO = Path(__file__).resolve().parents[1]
MANIFESTS = REPO / "manifests"


def _kustomizations() -> list[Path]:
    """Every folder under manifests/ with a kustomization of kind Kustomization (Components are
    applied through the overlays that list them)."""
    out = []
    for path in sorted(MANIFESTS.rglob("kustomization.yaml")):
        doc = yaml.safe_load(path.read_text())
        if doc.get("kind", "Kustomization") == "Kustomization":
            out.append(path.parent)
    return out


KUSTOMIZATIONS = _kustomizations()


def _sets_namespace(folder: Path, kube) -> bool:
    rendered = yaml.safe_load_all(kube.kubectl("kustomize", str(folder)).stdout)
    return any((doc or {}).get("metadata", {}).get("namespace") for doc in rendered)


def _versions(kube, args: list[str]) -> dict[tuple[str, str, str], str]:
    out = kube.kubectl("get", *args, "-o", "json").stdout
    doc = json.loads(out)
    items = doc.get("items", [doc]) if doc.get("kind", "").endswith("List") else [doc]
    return {(i["kind"], i["metadata"].get("namespace", ""), i["metadata"]["name"]): i["metadata"]["resourceVersion"]
            for i in items}


def _apply_twice(kube, target: list[str]) -> None:
    """Apply, snapshot every object's resourceVersion, apply again: nothing may change."""
    apply = ["apply", "--server-side", "--validate=strict"]
    first = kube.kubectl(*apply, *target, check=False)
    assert first.returncode == 0, f"the API server refused {' '.join(target)}:\n{first.stderr}"
    before = _versions(kube, target)
    assert before, f"nothing applied from {target}"
    second = kube.kubectl(*apply, *target, check=False)
    assert second.returncode == 0, second.stderr
    after = _versions(kube, target)
    changed = sorted(k for k in before if after.get(k) != before[k])
    assert not changed, f"a second apply changed {changed}"


@pytest.mark.parametrize("folder", KUSTOMIZATIONS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_kustomization_applies_strictly_and_is_idempotent(kube, folder):
    target = ["-k", str(folder)]
    if not _sets_namespace(folder, kube):
        target = ["-n", kube.namespace("apply"), *target]
    _apply_twice(kube, target)


def test_the_kustomizations_cover_the_install_and_the_examples():
    names = {str(p.relative_to(REPO)) for p in KUSTOMIZATIONS}
    assert {"manifests", "manifests/overlays/dev", "manifests/overlays/gpu", "manifests/examples"} <= names


def _write(tmp_path: Path, name: str, objects: list[dict]) -> Path:
    """As JSON (what the kubernetes client sends); the SeldonDeployment test uses ``to_yaml``,
    what ``daic serve`` prints for ``kubectl apply``."""
    path = tmp_path / name
    path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))
    return path


def test_the_seldon_deployments_daic_renders_apply(kube, tmp_path):
    """The SeldonDeployment ``daic serve`` renders, and its canary form (two predictors)."""
    ns = kube.namespace("sdep")
    params = DeploymentParams(name="mnist", namespace=ns, model_version="v0001")
    (tmp_path / "sdep.yaml").write_text(to_yaml(render_seldon_deployment(params)))
    _apply_twice(kube, ["-f", str(tmp_path / "sdep.yaml")])
    (tmp_path / "canary.yaml").write_text(to_yaml(render_canary_deployment(params, "v0002", 20)))
    _apply_twice(kube, ["-f", str(tmp_path / "canary.yaml")])
    live = kube.custom().get_namespaced_custom_object("machinelearning.seldon.io", "v1", ns,
                                                      "seldondeployments", "mnist")
    assert [(p["name"], p["traffic"]) for p in live["spec"]["predictors"]] == [("default", 80), ("canary", 20)]


@pytest.mark.parametrize("gpus", [0, 2], ids=["cpu", "gpu"])
def test_the_rayjob_the_train_step_renders_is_accepted_by_kuberays_crd(kube, tmp_path, gpus):
    ns = kube.namespace("rayjob")
    spec = RayJobSpec(name="retrain-c-1", namespace=ns, image="registry.example.com/daic-train:0.1.0",
                      entrypoint=["daic", "retrain", "--from", "champion"], num_workers=2,
                      gpus_per_worker=gpus)
    _apply_twice(kube, ["-f", str(_write(tmp_path, "rayjob.json", [render_rayjob(spec)]))])


@pytest.mark.parametrize("settings", [{"backend": "rayjob", "gpus_per_worker": 1, "ray_cluster": ""}, {}],
                         ids=["own-gpu-cluster", "on-daic-ray"])
def test_the_rayjob_the_train_step_submits_is_accepted(kube, tmp_path, settings):
    """components/train builds the RayJob from the step's settings: with its own (GPU) cluster, or
    submitted to the long-lived RayCluster daic-ray (clusterSelector)."""
    from daic.components.train import registry_access
    from daic.components.train.logic import TrainConfig

    ns = kube.namespace("rayjob")
    job = registry_access.render_rayjob("s3://daic", "demo-c1-0123abcd", "mnist", "v0001",
                                        "labels/demo-c1-0123abcd/", TrainConfig(namespace=ns, **settings))
    _apply_twice(kube, ["-f", str(_write(tmp_path, "rayjob.json", [job]))])
