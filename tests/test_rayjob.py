"""Rendering the KubeRay RayJob of a training run (pure: template + typed spec -> dict)."""
from __future__ import annotations

import copy

import click
import pytest
import yaml
from pydantic import ValidationError

from daic.commands.retrain import command as retrain_command
from daic.deploy.operator_rules import check_ray_job
from daic.deploy.policy import security_problems
from daic.deploy.schemas import KUBERNETES_VERSIONS, validate_embedded_pods
from daic.training.rayjob import (
    GPU_RESOURCE,
    RayJobSpec,
    Toleration,
    render_rayjob,
    template_path,
    training_entrypoint,
)

ENTRY = ["daic", "retrain", "--from", "champion", "--labels", "labels/c-1/"]


def _spec(**fields) -> RayJobSpec:
    return RayJobSpec(**{"name": "retrain-c-1", "image": "registry.example.com/daic-train:0.1.0",
                         "entrypoint": ENTRY, **fields})


def _pods(job):
    cluster = job["spec"]["rayClusterSpec"]
    head = cluster["headGroupSpec"]["template"]["spec"]
    (group,) = cluster["workerGroupSpecs"]
    return head, group, group["template"]["spec"], job["spec"]["submitterPodTemplate"]["spec"]


def test_cpu_job_has_the_required_fields():
    job = render_rayjob(_spec(num_workers=3, cpus_per_worker="4", memory_per_worker="6Gi", namespace="daic"))
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    assert job["metadata"]["name"] == "retrain-c-1" and job["metadata"]["namespace"] == "daic"
    spec = job["spec"]
    assert spec["entrypoint"] == "daic retrain --from champion --labels labels/c-1/"
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["ttlSecondsAfterFinished"] == 600 and spec["activeDeadlineSeconds"] == 7200
    assert spec["rayClusterSpec"]["rayVersion"] == "2.60.0"
    head, group, worker, submitter = _pods(job)
    assert group["replicas"] == group["minReplicas"] == group["maxReplicas"] == 3
    res = worker["containers"][0]["resources"]
    assert res["requests"] == res["limits"] == {"cpu": "4", "memory": "6Gi"}
    assert GPU_RESOURCE not in res["limits"]
    for pod in (head, worker, submitter):
        assert pod["containers"][0]["image"] == "registry.example.com/daic-train:0.1.0"
    assert check_ray_job(job) == []


def test_gpus_land_in_the_worker_limits_with_scheduling():
    spec = _spec(num_workers=2, gpus_per_worker=4, cpus_per_worker=8, memory_per_worker="32Gi",
                 node_selector={"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"},
                 tolerations=[Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")])
    job = render_rayjob(spec)
    head, group, worker, _ = _pods(job)
    res = worker["containers"][0]["resources"]
    assert res["limits"][GPU_RESOURCE] == "4" and res["requests"][GPU_RESOURCE] == "4"
    assert res["limits"]["cpu"] == "8"
    assert worker["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}
    assert worker["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    # The head holds no GPU and is not pinned to the GPU pool.
    assert GPU_RESOURCE not in head["containers"][0]["resources"]["limits"]
    assert "nodeSelector" not in head and "tolerations" not in head
    assert check_ray_job(job) == []


@pytest.mark.parametrize("gpus", [0, 1])
def test_every_pod_is_non_root_with_requests_and_schema_valid(gpus):
    job = render_rayjob(_spec(gpus_per_worker=gpus, run_as_user=1234, env={"DAIC_LOG": "debug"}))
    assert security_problems(job) == []
    for version in KUBERNETES_VERSIONS:
        assert validate_embedded_pods(job, version) == []
    for pod in _pods(job)[::2] + (_pods(job)[3],):
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 1234
        container = pod["containers"][0]
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    head_env = {e["name"]: e["value"] for e in _pods(job)[0]["containers"][0]["env"]}
    assert head_env == {"RAY_USAGE_STATS_ENABLED": "0", "DAIC_LOG": "debug"}


def test_cluster_selector_mode_uses_the_shared_cluster():
    job = render_rayjob(_spec(cluster_selector="daic-ray"))
    assert job["spec"]["clusterSelector"] == {"ray.io/cluster": "daic-ray"}
    assert "rayClusterSpec" not in job["spec"] and "shutdownAfterJobFinishes" not in job["spec"]
    assert check_ray_job(job) == []


def test_rendering_is_pure_and_yaml_safe():
    before = yaml.safe_load(template_path().read_text())
    tricky = _spec(entrypoint=["daic", "retrain", "--labels", "labels/c: 1 #x/", "--note", "why=it's: fine"])
    job = render_rayjob(tricky)
    assert yaml.safe_load(yaml.safe_dump(job)) == job
    assert job["spec"]["entrypoint"] == "daic retrain --labels 'labels/c: 1 #x/' --note 'why=it'\"'\"'s: fine'"
    assert yaml.safe_load(template_path().read_text()) == before
    again = render_rayjob(_spec())
    job2 = copy.deepcopy(again)
    render_rayjob(_spec(num_workers=9))  # a later render does not leak into an earlier result
    assert again == job2


@pytest.mark.parametrize("fields,needle", [
    ({"name": "Retrain_C1"}, "DNS-1035"),
    ({"name": "r" * 48}, "at most 47"),
    ({"num_workers": 0}, "num_workers"),
    ({"gpus_per_worker": -1}, "gpus_per_worker"),
    ({"memory_per_worker": "8 gigabytes"}, "memory_per_worker '8 gigabytes' is not a Kubernetes quantity"),
    ({"cpus_per_worker": "two"}, "cpus_per_worker"),
    ({"image": "daic train"}, "image"),
    ({"entrypoint": []}, "entrypoint"),
    ({"run_as_user": 0}, "run_as_user"),
    ({"namespace": "Daic"}, "DNS-1123"),
    ({"tolerations": [{"key": "a", "operator": "Exists", "value": "b"}]}, "must not have a value"),
    ({"worker_count": 2}, "worker_count"),
])
def test_bad_specs_are_errors_naming_the_field(fields, needle):
    with pytest.raises(ValidationError, match=needle):
        _spec(**fields)


def test_the_entrypoint_is_a_valid_retrain_command_sized_to_the_pods():
    argv = training_entrypoint("retrain", store_url="s3://daic/prod", model_name="mnist", num_pods=2, cpus_per_pod=8,
                               gpus_per_pod=4, parent="v0003", labels_prefix="labels/c-7/", epochs=3, lr=5e-4,
                               result_key="cycles/c-7/train-output.json", notes={"cycle": "c-7"})
    assert argv[:2] == ["daic", "retrain"]
    ctx = retrain_command.make_context("retrain", argv[2:])  # parses with the real CLI, runs nothing
    p = ctx.params
    assert (p["num_workers"], p["cpus_per_worker"], p["use_gpu"]) == (8, 2, True)
    assert (p["parent"], p["labels_prefix"], p["epochs"], p["lr"]) == ("v0003", "labels/c-7/", 3, 5e-4)
    assert p["result_key"] == "cycles/c-7/train-output.json" and p["notes"] == ("cycle=c-7",)
    job = render_rayjob(_spec(entrypoint=argv, num_workers=2, gpus_per_worker=4, cpus_per_worker="8"))
    assert check_ray_job(job) == []
    cpu = training_entrypoint("train", store_url="s3://daic", model_name="mnist", num_pods=3, cpus_per_pod=2)
    assert cpu[cpu.index("--num-workers") + 1] == "3" and "--cpu" in cpu
    with pytest.raises(ValueError, match="labels_prefix"):
        training_entrypoint("retrain", store_url="s3://d", model_name="m", num_pods=1, cpus_per_pod=1)
    with pytest.raises(ValueError, match="cannot feed 4 GPU"):
        training_entrypoint("train", store_url="s3://d", model_name="m", num_pods=1, cpus_per_pod=2, gpus_per_pod=4)
    with pytest.raises(click.UsageError):
        retrain_command.make_context("retrain", ["--num-workers", "2"])  # --labels is required
