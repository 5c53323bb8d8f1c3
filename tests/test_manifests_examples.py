"""The example AssessmentCycles are valid, and the objects daic renders at run time (the serving
engineer's SeldonDeployments, champion and canary) pass the same checks as the installed ones.

An AssessmentCycle is valid when the CRD's schema accepts it (what the API server checks) and
the operator's own spec model accepts it (what the operator checks, including rules the schema
cannot state). A cluster example must also point at what the install provides: the SeldonDeployment,
the sidecar Services, metrics the sidecar exports.
"""
from __future__ import annotations

import copy
import functools
import re
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from daic.components.images import IMAGES
from daic.deploy.check import USER_CREATED, check_objects
from daic.deploy.operator_rules import check_seldon_deployment
from daic.deploy.render import kustomize, load_file
from daic.deploy.schemas import crd_validator
from daic.operators.spec import parse_spec
from daic.serving.manifest import DeploymentParams, render_canary_deployment, render_seldon_deployment

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "manifests"
EXAMPLES = MANIFESTS / "examples"
CRD = MANIFESTS / "crd" / "assessmentcycles.daic.dev.yaml"


@functools.cache
def render(path: str) -> tuple:
    return tuple(kustomize(MANIFESTS / path))


@functools.cache
def validate():
    (crd,) = load_file(CRD)
    return crd_validator(crd)


def example_files() -> list[Path]:
    return sorted(p for p in EXAMPLES.glob("*.yaml") if p.name != "kustomization.yaml")


def cycles() -> list[tuple[str, dict]]:
    return [(f"{p.name}:{o['metadata']['name']}", o) for p in example_files() for o in load_file(p)
            if o["kind"] == "AssessmentCycle"]


def test_there_are_examples():
    assert len(cycles()) >= 2


@pytest.mark.parametrize("name,cycle", cycles(), ids=[n for n, _ in cycles()])
def test_example_is_accepted_by_the_crd_and_the_operator(name, cycle):
    assert validate()(cycle) == [], name
    parse_spec(cycle["spec"])


def test_crd_validation_catches_mistakes():
    _, cycle = cycles()[0]
    bad = copy.deepcopy(cycle)
    bad["spec"]["trigger"]["threshold"] = 1.5
    bad["spec"]["trigger"]["treshold"] = 0.9
    del bad["spec"]["deployment"]
    bad["metadata"]["name"] = "Not_A_Name"
    paths = {p.path for p in validate()(bad)}
    assert {"spec", "spec.trigger", "spec.trigger.threshold", "metadata.name"} <= paths, paths


def test_cluster_examples_render_and_point_at_the_install():
    examples = render("examples")
    installed = render("overlays/gpu")
    assert examples and all(o["kind"] == "AssessmentCycle" for o in examples)
    deployments = {o["metadata"]["name"] for o in installed if o["kind"] == "SeldonDeployment"}
    services = {o["metadata"]["name"]: o for o in installed if o["kind"] == "Service"}
    for cycle in examples:
        spec = cycle["spec"]
        assert spec["deployment"]["name"] in deployments, cycle["metadata"]["name"]
        estimate = spec["estimate"]
        for key in ("url", "canaryUrl"):
            if estimate.get(key):
                url = urlparse(estimate[key])
                host = url.hostname.split(".")
                assert host[0] in services and host[1] == "daic", f"{estimate[key]}: no such Service in namespace daic"
                assert url.port in {p["port"] for p in services[host[0]]["spec"]["ports"]}


class _EveryField(dict):
    def get(self, key, default=None):
        return 0.5


def test_prometheus_queries_in_examples_name_exported_metrics():
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from daic.sidecar.metrics import SidecarMetrics

    registry = SidecarMetrics("mnist", estimates=lambda: {"v1": _EveryField()}).registry
    exported = {s.name for f in text_string_to_metric_families(generate_latest(registry).decode()) for s in f.samples}
    for name, cycle in cycles():
        estimate = cycle["spec"]["estimate"]
        for key in ("query", "countQuery", "driftQuery", "canaryQuery"):
            for metric in re.findall(r"\b(daic_[a-z0-9_]+)\b", estimate.get(key) or ""):
                assert metric in exported, f"{name}: spec.estimate.{key} uses {metric}, which the sidecar does not export"


def _check_rendered(doc: dict) -> list:
    """Check a run-time SeldonDeployment beside the NetworkPolicies the install puts in its namespace
    (it is deployed into an installed namespace, never alone)."""
    policies = [obj for obj in render("base") if obj["kind"] == "NetworkPolicy"]
    assert policies, "manifests/base installs no NetworkPolicy"
    return check_objects([{**obj, "metadata": {**obj["metadata"], "namespace": "daic"}} for obj in (doc, *policies)],
                         external={**USER_CREATED, "ConfigMap": {"daic-storage"}})


def test_rendered_seldon_deployments_pass_the_checks():
    champion = render_seldon_deployment()
    canary = render_canary_deployment(DeploymentParams(model_version="v0003"), "v0004", 10)
    for doc in (champion, canary):
        assert check_seldon_deployment(doc) == []
        problems = _check_rendered(doc)
        assert not problems, "\n".join(map(str, problems))
    images = {c["image"] for p in canary["spec"]["predictors"] for cs in p["componentSpecs"] for c in cs["spec"]["containers"]}
    assert images == {IMAGES["serving"].ref, IMAGES["oracle"].ref}


def test_installed_seldon_deployment_is_the_rendered_one():
    """manifests/serving is `daic serve manifest` output; it must not drift from the renderer."""
    installed = next(o for o in render("overlays/gpu") if o["kind"] == "SeldonDeployment")
    fresh = yaml.safe_load(yaml.safe_dump(render_seldon_deployment()))
    for doc in (installed, fresh):
        doc["metadata"].pop("namespace", None)
        doc["metadata"].get("labels", {}).pop("app.kubernetes.io/instance", None)
    assert installed == fresh


def test_cluster_examples_fit_a_worker_group_of_the_gpu_install():
    """KubeRay gives Ray a pod's limits as its resources: each Ray worker an example asks for
    must fit one pod of some worker group, and the group must be allowed enough pods."""
    from kubernetes.utils import parse_quantity

    from daic.training.rayjob import worker_memory  # an unset memoryPerWorker: by worker kind

    cluster = next(o for o in render("overlays/gpu") if o["kind"] == "RayCluster")
    groups = [(g["groupName"], g["maxReplicas"], g["template"]["spec"]["containers"][0]["resources"]["limits"])
              for g in cluster["spec"]["workerGroupSpecs"]]
    for cycle in render("examples"):
        res = parse_spec(cycle["spec"]).resources
        fitting = [name for name, most, limits in groups
                   if parse_quantity(limits["cpu"]) >= res.cpus_per_worker
                   and parse_quantity(limits["memory"]) >= parse_quantity(
                       res.memory_per_worker or worker_memory(res.gpus_per_worker))
                   and parse_quantity(limits.get("nvidia.com/gpu", 0)) >= res.gpus_per_worker
                   and most >= res.ray_workers]
        assert fitting, f"{cycle['metadata']['name']}: {res} fits no worker group of daic-ray ({groups})"


def test_cluster_examples_run_the_cluster_paths_of_the_pipeline():
    """The pipeline's defaults are the one-machine ones (Ray in process, the local champion switch);
    an AssessmentCycle meant for the cluster must choose the RayJob and Seldon paths."""
    for cycle in render("examples"):
        params = cycle["spec"].get("pipeline", {}).get("parameters", {})
        name = cycle["metadata"]["name"]
        assert params.get("train_backend") == "rayjob", f"{name}: spec.pipeline.parameters.train_backend must be rayjob"
        assert params.get("promote_by") == "operator" or params.get("deploy_target") == "seldon", \
            f"{name}: set promote_by: operator (the operator's canary) or deploy_target: seldon"
