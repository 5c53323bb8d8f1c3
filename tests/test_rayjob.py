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


# --- from the AssessmentCycle to the rendered RayJob ------------------------------------------------

CYCLE_SPEC = {
    "deployment": {"name": "mnist"},
    "estimate": {"source": "sidecar", "url": "http://oracle:8300/estimate"},
    "trigger": {"threshold": 0.9},
    "resources": {"gpusPerWorker": 1, "cpusPerWorker": 4},
}
# The pipeline's wiring of its parameters into the train component (pipelines/assess_and_improve.py),
# read back from the compiled pipeline by test_compiled_pipeline_wires_the_training_settings.
PIPELINE_TO_COMPONENT = {
    "ray_workers": "ray_workers", "cpus_per_worker": "cpus_per_worker", "gpus_per_worker": "gpus_per_worker",
    "memory_per_worker": "memory_per_worker", "train_batch_size": "batch_size", "train_precision": "precision",
    "ray_cluster": "ray_cluster", "train_node_selector": "node_selector", "train_tolerations": "tolerations",
}


def _rendered_from_cycle(training: dict, **component) -> dict:
    from datetime import datetime

    from daic.components.train.logic import TrainConfig
    from daic.components.train.registry_access import render_rayjob as render_for_step
    from daic.operators.observations import EstimateReading
    from daic.operators.reconcile import CycleIdentity, pipeline_params
    from daic.operators.spec import parse_spec

    spec = parse_spec({**CYCLE_SPEC, "training": training})
    reading = EstimateReading(accuracy=0.8, n=500, observed_at=datetime.now())
    params = pipeline_params(spec, CycleIdentity("mnist", "0123abcd"), "mnist-c1-0123abcd", 0.9, reading)
    fields = {field: params[name] for name, field in PIPELINE_TO_COMPONENT.items()}
    fields["workers"] = fields.pop("ray_workers")  # the component's input -> its logic's field
    config = TrainConfig(backend="rayjob", namespace="daic", **{**fields, **component})
    return render_for_step("s3://daic", "mnist-c1-0123abcd", "mnist", "v0001", "labels/", config)


def test_crd_training_settings_reach_the_workers_of_a_fresh_cluster():
    """training.tolerations / nodeSelector / batchSize / precision, from the custom resource through
    the operator's pipeline parameters to the RayJob's worker pods and the driver's command line."""
    doc = _rendered_from_cycle({
        "batchSize": 4096, "precision": "fp16", "rayCluster": "",
        "nodeSelector": {"cloud.google.com/gke-accelerator": "nvidia-l4"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "training", "effect": "NoSchedule"}],
    })
    (group,) = doc["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    worker = group["template"]["spec"]
    assert worker["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    assert worker["tolerations"] == [{"key": "dedicated", "operator": "Equal", "value": "training",
                                      "effect": "NoSchedule"}]
    assert group["replicas"] == 1  # one GPU worker by default
    assert worker["containers"][0]["resources"]["limits"]["memory"] == "16Gi"  # a GPU worker's default
    params = retrain_command.make_context("retrain", doc["spec"]["entrypoint"].split()[2:]).params
    assert (params["batch_size"], params["precision"], params["use_gpu"]) == (4096, "fp16", True)
    assert not security_problems(doc)


def test_crd_defaults_submit_to_the_warm_cluster():
    doc = _rendered_from_cycle({})
    assert doc["spec"]["clusterSelector"] == {"ray.io/cluster": "daic-ray"}
    assert "rayClusterSpec" not in doc["spec"]
    argv = doc["spec"]["entrypoint"].split()
    assert "--batch-size" not in argv and argv[argv.index("--precision") + 1] == "auto"


def test_gpu_workers_without_tolerations_tolerate_the_usual_gpu_taints():
    doc = _rendered_from_cycle({"rayCluster": ""})
    (group,) = doc["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    assert {(t["key"], t["effect"]) for t in group["template"]["spec"]["tolerations"]} == {
        ("nvidia.com/gpu", "NoSchedule"), ("sku", "NoSchedule")}


@pytest.mark.parametrize("bad,needle", [
    ({"precision": "int8"}, "spec.training.precision"),
    ({"batchSize": -1}, "spec.training.batchSize"),
    ({"rayCluster": "Daic_Ray"}, "spec.training.rayCluster"),
    ({"tolerations": [{"operator": "Sometimes"}]}, "spec.training.tolerations.0.operator"),
])
def test_bad_training_settings_are_named(bad, needle):
    from daic.operators.spec import InvalidSpec, parse_spec

    with pytest.raises(InvalidSpec, match=needle.replace(".", r"\.")):
        parse_spec({**CYCLE_SPEC, "training": bad})


def test_compiled_pipeline_wires_the_training_settings():
    from pathlib import Path

    compiled = next(yaml.safe_load_all((Path(__file__).resolve().parents[1] / "pipelines" / "compiled" /
                                        "assess_and_improve.yaml").read_text()))
    (inputs,) = [c["dag"]["tasks"]["train"]["inputs"]["parameters"] for c in compiled["components"].values()
                 if "train" in c.get("dag", {}).get("tasks", {})]
    for pipeline_name, component_name in PIPELINE_TO_COMPONENT.items():
        assert inputs[component_name]["componentInputParameter"] == f"pipelinechannel--{pipeline_name}"


@pytest.mark.parametrize("n_examples,flops,max_workers,expected", [
    (55_000, 24e6, 8, 1),  # MNIST: ~0.07 s an epoch on one GPU
    (1_281_167, 8.2e9, 8, 8),  # ImageNet x ResNet-50 training FLOPs: ~525 s an epoch -> all 8
    (10_000_000, 1e8, 4, 2),  # ~50 s an epoch -> two workers
])
def test_one_gpu_worker_unless_the_model_is_large(n_examples, flops, max_workers, expected):
    from daic.training.rayjob import gpu_workers_for

    assert gpu_workers_for(n_examples, flops, max_workers) == expected
