"""Every rendered object validates: built-in kinds against the Kubernetes OpenAPI schemas
(kubernetes-validate, strict, offline), the AssessmentCycle CRD against the API server's rules
for CRDs, SeldonDeployment / RayCluster / RayJob / ServiceMonitor against what their operators
require (daic.deploy.operator_rules names the sources); no container runs as root, escalates
privileges or lacks CPU/memory requests; no secret value appears in a manifest.

Each rule is also shown to fire on a copy of a real rendered object with one fault put in, so a
check that silently stopped checking would fail here.
"""
from __future__ import annotations

import copy
import functools
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from daic.deploy.__main__ import main
from daic.deploy.check import USER_CREATED, check_objects
from daic.deploy.operator_rules import check_ray_cluster, check_ray_job, check_seldon_deployment, check_service_monitor
from daic.deploy.policy import rbac_problems, secret_problems, security_problems
from daic.deploy.render import kustomize
from daic.deploy.schemas import KUBERNETES_VERSIONS, validate_builtin, validate_embedded_pods

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "manifests"
EXTERNAL = USER_CREATED


@functools.cache
def render(overlay: str) -> tuple:
    return tuple(kustomize(MANIFESTS / "overlays" / overlay))


def one(objects, kind: str, name: str | None = None) -> dict:
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert found, f"no {kind} {name or ''} in the render"
    return copy.deepcopy(found[0])


@pytest.mark.parametrize("overlay", ["dev", "gpu"])
def test_overlay_passes_every_check(overlay):
    problems = check_objects(list(render(overlay)), external=EXTERNAL)
    assert not problems, "\n".join(map(str, problems))


def test_kubernetes_schema_versions_are_pinned_and_shipped_offline():
    import kubernetes_validate

    assert KUBERNETES_VERSIONS == ("1.30.0", "1.33.0")
    job = one(render("gpu"), "Job", "daic-create-bucket")
    for version in KUBERNETES_VERSIONS:
        assert validate_builtin(job, version) == []
    assert kubernetes_validate.utils.latest_version() >= "1.33"


# --- each check can fail -----------------------------------------------------------------------


def test_schema_check_catches_a_misspelt_and_a_mistyped_field():
    job = one(render("gpu"), "Job", "daic-create-bucket")
    job["spec"]["template"]["spec"]["containers"][0]["envFromm"] = []
    job["spec"]["backoffLimit"] = "6"
    problems = check_objects([job], external=EXTERNAL)
    assert any("envFromm" in p.message for p in problems)
    assert any(p.path == "spec.backoffLimit" for p in problems)


def test_pod_specs_inside_custom_resources_are_schema_checked():
    cluster = one(render("gpu"), "RayCluster", "daic-ray")
    cluster["spec"]["workerGroupSpecs"][1]["template"]["spec"]["tolerations"][0]["effect"] = 7
    problems = validate_embedded_pods(cluster, KUBERNETES_VERSIONS[-1])
    assert [p.path for p in problems] == ["spec.workerGroupSpecs[1].template.spec.tolerations[0].effect"]


def test_an_unknown_kind_is_not_waved_through():
    problems = check_objects([{"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}])
    assert problems and "no Kubernetes" in problems[0].message


def test_security_rules_fire():
    job = one(render("gpu"), "Job", "daic-upload-pipeline")
    pod = job["spec"]["template"]["spec"]
    del pod["securityContext"]["runAsNonRoot"]
    pod["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    del pod["containers"][0]["resources"]["requests"]["memory"]
    pod["containers"][0]["image"] = "ghcr.io/daic-dev/daic-pipelines"
    messages = " | ".join(p.message for p in security_problems(job))
    assert "runAsNonRoot is not true" in messages
    assert "must be false" in messages
    assert "no request for memory" in messages
    assert "names no tag" in messages

    cluster = one(render("gpu"), "RayCluster", "daic-ray")
    gpu = cluster["spec"]["workerGroupSpecs"][1]["template"]["spec"]["containers"][0]["resources"]
    gpu["requests"]["nvidia.com/gpu"] = "2"
    assert any("differs from its limit" in p.message for p in security_problems(cluster))
    cluster["spec"]["headGroupSpec"]["template"]["spec"]["securityContext"]["runAsUser"] = 0
    assert any("runAsUser is 0" in p.message for p in security_problems(cluster))


def test_secret_rules_fire():
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "daic-store"},
              "stringData": {"MINIO_SECRET_KEY": "x"}}
    assert [p.path for p in secret_problems(secret)] == ["stringData"]
    assert secret_problems({**secret, "stringData": None}) == []

    job = one(render("gpu"), "Job", "daic-create-bucket")
    container = job["spec"]["template"]["spec"]["containers"][0]
    container["env"] = [
        {"name": "MINIO_SECRET_KEY", "value": "minio123"},
        {"name": "MINIO_ACCESS_KEY", "valueFrom": {"configMapKeyRef": {"name": "daic-storage", "key": "k"}}},
        {"name": "KF_PIPELINES_SA_TOKEN_PATH", "value": "/var/run/secrets/kubeflow/pipelines/token"},
        {"name": "AUTH", "value": "AKIA" + "ABCDEFGHIJKLMNOP"},
    ]
    messages = [p.message for p in secret_problems(job)]
    assert any("MINIO_SECRET_KEY has a literal value" in m for m in messages)
    assert any("MINIO_ACCESS_KEY must come from valueFrom.secretKeyRef" in m for m in messages)
    assert any("AWS access key id" in m for m in messages)
    assert not any("TOKEN_PATH" in m for m in messages), "a path to a token is not a token"

    config = one(render("gpu"), "ConfigMap", "daic-storage")
    config["data"]["MINIO_SECRET_KEY"] = "minio123"
    assert [p.path for p in secret_problems(config)] == ["data.MINIO_SECRET_KEY"]


def test_rbac_rules_fire():
    role = one(render("gpu"), "Role", "daic-pipeline-steps")
    assert rbac_problems(role) == []
    role["rules"].append({"apiGroups": [""], "resources": ["secrets"], "verbs": ["*"]})
    bad = f"rules[{len(role['rules']) - 1}]"
    assert {p.path for p in rbac_problems(role)} == {f"{bad}.verbs", f"{bad}.resources"}


def test_pipeline_steps_may_do_what_the_components_do_and_no_more():
    role = one(render("gpu"), "Role", "daic-pipeline-steps")
    grants = {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
    # components/train/rayjob.py creates and reads RayJobs; the operator alone patches the
    # SeldonDeployment (runs get promote_by=operator), so the steps get nothing on it.
    needed = {("ray.io", "rayjobs", "create"), ("ray.io", "rayjobs", "get")}
    assert needed == grants
    binding = one(render("gpu"), "RoleBinding", "daic-pipeline-steps")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "pipeline-runner", "namespace": "kubeflow"}]


def test_no_secret_object_is_installed():
    for overlay in ("dev", "gpu"):
        assert not [o for o in render(overlay) if o["kind"] == "Secret"], \
            "the user creates daic-store with kubectl create secret (docs/cluster.md)"


def test_references_to_missing_objects_are_reported():
    objects = [o for o in render("gpu") if not (o["kind"] == "ConfigMap" and o["metadata"]["name"] == "daic-storage")]
    problems = check_objects(objects, external=EXTERNAL)
    assert problems and all("daic-storage" in p.message for p in problems)
    problems = check_objects(list(render("gpu")), external={})
    assert any("Secret 'daic-store'" in p.message for p in problems)


def test_seldon_rules_fire():
    sdep = one(render("gpu"), "SeldonDeployment")
    assert check_seldon_deployment(sdep) == []
    broken = copy.deepcopy(sdep)
    broken["spec"]["predictors"][0]["graph"]["name"] = "renamed"
    broken["spec"]["predictors"][0]["graph"]["logger"]["mode"] = "everything"
    messages = " | ".join(p.message for p in check_seldon_deployment(broken))
    assert "no container named 'renamed'" in messages and "logger needs a mode" in messages
    two = copy.deepcopy(sdep)
    second = copy.deepcopy(two["spec"]["predictors"][0])
    second["name"], second["traffic"] = "canary", 20
    two["spec"]["predictors"].append(second)
    assert any("sum to 100" in p.message for p in check_seldon_deployment(two))
    two["spec"]["predictors"][0]["traffic"] = 80
    assert check_seldon_deployment(two) == []
    del two["spec"]["predictors"]
    assert any(p.path == "spec.predictors" for p in check_seldon_deployment(two))


def test_ray_cluster_rules_fire():
    cluster = one(render("gpu"), "RayCluster", "daic-ray")
    assert check_ray_cluster(cluster) == []
    broken = copy.deepcopy(cluster)
    broken["metadata"]["name"] = "1-" + "x" * 60
    broken["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] = 0
    del broken["spec"]["workerGroupSpecs"][0]["maxReplicas"]
    broken["spec"]["workerGroupSpecs"][1]["minReplicas"] = 5
    broken["spec"]["workerGroupSpecs"][1]["groupName"] = "cpu"
    paths = {p.path for p in check_ray_cluster(broken)}
    assert {"metadata.name", "spec.headGroupSpec.rayStartParams.num-cpus", "spec.workerGroupSpecs[0].maxReplicas",
            "spec.workerGroupSpecs[1]", "spec.workerGroupSpecs[1].groupName"} <= paths


def test_ray_job_rules_fire():
    cluster = one(render("gpu"), "RayCluster", "daic-ray")
    job = {"apiVersion": "ray.io/v1", "kind": "RayJob", "metadata": {"name": "retrain-c1"},
           "spec": {"entrypoint": "python -m daic.training", "clusterSelector": {"ray.io/cluster": "daic-ray"}}}
    assert check_ray_job(job) == []
    assert any("one of rayClusterSpec or clusterSelector" in p.message
               for p in check_ray_job({**job, "spec": {"entrypoint": "x"}}))
    own = {**job, "spec": {"entrypoint": "x", "rayClusterSpec": copy.deepcopy(cluster["spec"]),
                           "suspend": True, "ttlSecondsAfterFinished": -1}}
    del own["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["rayStartParams"]
    paths = {p.path for p in check_ray_job(own)}
    assert {"spec.suspend", "spec.ttlSecondsAfterFinished",
            "spec.rayClusterSpec.workerGroupSpecs[0].rayStartParams"} <= paths
    long_name = {**job, "metadata": {"name": "r" * 48}}
    assert [p.path for p in check_ray_job(long_name)] == ["metadata.name"]


def test_service_monitor_rules_fire():
    monitor = one(render("gpu"), "ServiceMonitor")
    assert check_service_monitor(monitor) == []
    monitor["spec"]["endpoints"][0].update(interval="15 seconds", path="metrics")
    del monitor["spec"]["endpoints"][0]["port"]
    monitor["spec"]["selector"] = {}
    messages = " | ".join(p.message for p in check_service_monitor(monitor))
    for part in ("matchLabels", "neither port nor targetPort", "must start with /", "not a Prometheus duration"):
        assert part in messages


def test_command_line_checks(tmp_path):
    runner = CliRunner()
    ok = runner.invoke(main, ["check", str(MANIFESTS / "overlays" / "dev")])
    assert ok.exit_code == 0, ok.output
    assert "0 problem(s)" in ok.output
    job = one(render("dev"), "Job", "daic-create-bucket")
    job["spec"]["template"]["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    (tmp_path / "kustomization.yaml").write_text("resources: [job.yaml]\n")
    bad = runner.invoke(main, ["check", str(tmp_path)])
    assert bad.exit_code == 1
    assert "allowPrivilegeEscalation: container 'create-bucket': must be false" in bad.output
    assert "ConfigMap 'daic-storage' is neither installed" in bad.output
    images = runner.invoke(main, ["lint-images", str(ROOT / "images"), "--locks", str(ROOT / "requirements")])
    assert images.exit_code == 0 and "5 Dockerfile(s), 0 problem(s)" in images.output
