"""Render the KubeRay ``RayJob`` (``ray.io/v1``) that runs one training run on Kubernetes.

``render_rayjob(spec)`` is pure: it loads ``manifests/ray/rayjob-template.yaml`` and fills the
typed fields of a :class:`RayJobSpec` into a copy -- never string formatting, so a value can
never break the YAML structure. The pipeline's train component creates the result through the
Kubernetes API; the entrypoint (``daic retrain ... --result-key KEY``) runs as the job's driver
on the RayJob's head, where ``RAY_ADDRESS`` is set, so it joins that cluster instead of starting
a local Ray.
"""
from __future__ import annotations

import copy
import math
import os
import re
import shlex
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

TEMPLATE_ENV = "DAIC_RAYJOB_TEMPLATE"
DEFAULT_TEMPLATE = Path(__file__).resolve().parents[2] / "manifests" / "ray" / "rayjob-template.yaml"
GPU_RESOURCE = "nvidia.com/gpu"


def default_image() -> str:
    """The tagged train image (``daic.components.images``): an untagged image would mean :latest."""
    from daic.components.images import IMAGES

    return IMAGES["train"].ref


_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_QUANTITY = re.compile(r"^([0-9]+(\.[0-9]+)?)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")


class Toleration(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    key: Optional[str] = None
    operator: Literal["Exists", "Equal"] = "Equal"
    value: Optional[str] = None
    effect: Optional[Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]] = None

    @model_validator(mode="after")
    def _consistent(self) -> "Toleration":
        if self.operator == "Exists" and self.value is not None:
            raise ValueError(f"toleration {self.key!r}: operator Exists must not have a value")
        if self.operator == "Equal" and not self.key:
            raise ValueError("toleration with operator Equal needs a key")
        return self


def _quantity(field: str, value: str) -> str:
    if not isinstance(value, str) or not _QUANTITY.match(value):
        raise ValueError(f"{field} {value!r} is not a Kubernetes quantity (e.g. '2', '500m', '8Gi')")
    return value


class RayJobSpec(BaseModel):
    """Everything that varies between training RayJobs; defaults match the template."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="RayJob name; KubeRay derives the cluster name from it (<= 47 chars)")
    namespace: Optional[str] = None
    image: str = Field(default_factory=default_image)
    entrypoint: list[str] = Field(min_length=1, description="argv of the driver, e.g. ['daic', 'retrain', ...]")
    num_workers: int = Field(2, ge=1, le=512, description="worker pods")
    cpus_per_worker: str = "2"
    memory_per_worker: str = "8Gi"
    gpus_per_worker: int = Field(0, ge=0, le=16)
    head_cpu: str = "2"
    head_memory: str = "4Gi"
    node_selector: dict[str, str] = {}
    tolerations: list[Toleration] = []
    env: dict[str, str] = {}
    store_configmap: Optional[str] = "daic-storage"
    store_secret: Optional[str] = "daic-store"
    ttl_seconds_after_finished: int = Field(600, ge=0)
    active_deadline_seconds: int = Field(7200, ge=1)
    run_as_user: int = Field(8888, ge=1, description="non-root uid for every container")
    labels: dict[str, str] = {}
    # Submit to an existing RayCluster (e.g. "daic-ray") instead of bringing one.
    cluster_selector: Optional[str] = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _DNS1035.match(v) or len(v) > 47:
            raise ValueError(f"name {v!r} must be a DNS-1035 label (lower-case letters, digits, '-', starting "
                             "with a letter) of at most 47 characters")
        return v

    @field_validator("namespace", "cluster_selector")
    @classmethod
    def _dns(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and (not _DNS1123.match(v) or len(v) > 63):
            raise ValueError(f"{v!r} must be a DNS-1123 label of at most 63 characters")
        return v

    @field_validator("image")
    @classmethod
    def _image(cls, v: str) -> str:
        if not v or any(c.isspace() for c in v):
            raise ValueError(f"image {v!r} must be a non-empty image reference without spaces")
        return v

    @field_validator("cpus_per_worker", "head_cpu", "memory_per_worker", "head_memory", mode="before")
    @classmethod
    def _quantities(cls, v: Any, info) -> str:
        return _quantity(info.field_name, str(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v)

    @field_validator("entrypoint")
    @classmethod
    def _argv(cls, v: list[str]) -> list[str]:
        if any(not isinstance(a, str) or not a for a in v):
            raise ValueError("entrypoint arguments must be non-empty strings")
        return v


@lru_cache(maxsize=4)
def _load_template(path: str) -> dict[str, Any]:
    with open(path, encoding="utf-8") as fh:
        doc = yaml.safe_load(fh)
    if not isinstance(doc, dict) or doc.get("kind") != "RayJob":
        raise ValueError(f"{path}: not a RayJob template")
    return doc


def template_path() -> Path:
    return Path(os.environ.get(TEMPLATE_ENV) or DEFAULT_TEMPLATE)


def _fill_container(container: dict[str, Any], spec: RayJobSpec, cpu: str, memory: str, gpus: int) -> None:
    container["image"] = spec.image
    requests = {"cpu": cpu, "memory": memory}
    limits = {"cpu": cpu, "memory": memory}
    if gpus:
        requests[GPU_RESOURCE] = str(gpus)
        limits[GPU_RESOURCE] = str(gpus)
    container["resources"] = {"requests": requests, "limits": limits}
    env = [e for e in container.get("env", []) if e["name"] not in spec.env]
    env += [{"name": k, "value": v} for k, v in sorted(spec.env.items())]
    container["env"] = env
    env_from = []
    if spec.store_configmap:
        env_from.append({"configMapRef": {"name": spec.store_configmap}})
    if spec.store_secret:
        env_from.append({"secretRef": {"name": spec.store_secret}})
    if env_from:
        container["envFrom"] = env_from
    else:
        container.pop("envFrom", None)


def _fill_pod(pod_spec: dict[str, Any], spec: RayJobSpec, *, scheduling: bool) -> None:
    pod_spec["securityContext"]["runAsUser"] = spec.run_as_user
    pod_spec["securityContext"]["runAsGroup"] = spec.run_as_user
    if "fsGroup" in pod_spec["securityContext"]:
        pod_spec["securityContext"]["fsGroup"] = spec.run_as_user
    if scheduling:
        if spec.node_selector:
            pod_spec["nodeSelector"] = dict(spec.node_selector)
        if spec.tolerations:
            pod_spec["tolerations"] = [t.model_dump(exclude_none=True) for t in spec.tolerations]


def render_rayjob(spec: RayJobSpec, template: Optional[Path] = None) -> dict[str, Any]:
    """The RayJob manifest (a plain dict, ready for ``CustomObjectsApi`` or ``yaml.safe_dump``)."""
    doc = copy.deepcopy(_load_template(str(template or template_path())))
    meta = doc["metadata"]
    meta["name"] = spec.name
    if spec.namespace:
        meta["namespace"] = spec.namespace
    meta["labels"] = {**meta.get("labels", {}), **spec.labels}
    body = doc["spec"]
    body["entrypoint"] = shlex.join(spec.entrypoint)
    body["ttlSecondsAfterFinished"] = spec.ttl_seconds_after_finished
    body["activeDeadlineSeconds"] = spec.active_deadline_seconds

    submitter = body["submitterPodTemplate"]["spec"]
    _fill_pod(submitter, spec, scheduling=False)
    submitter["containers"][0]["image"] = spec.image

    if spec.cluster_selector:
        body.pop("rayClusterSpec")
        body.pop("shutdownAfterJobFinishes", None)  # the cluster is not ours to shut down
        body["clusterSelector"] = {"ray.io/cluster": spec.cluster_selector}
        return doc

    cluster = body["rayClusterSpec"]
    head = cluster["headGroupSpec"]["template"]["spec"]
    _fill_pod(head, spec, scheduling=False)  # node selector / tolerations are for the workers
    _fill_container(head["containers"][0], spec, spec.head_cpu, spec.head_memory, 0)
    (group,) = cluster["workerGroupSpecs"]
    group["replicas"] = group["minReplicas"] = group["maxReplicas"] = spec.num_workers
    worker = group["template"]["spec"]
    _fill_pod(worker, spec, scheduling=True)
    _fill_container(worker["containers"][0], spec, spec.cpus_per_worker, spec.memory_per_worker, spec.gpus_per_worker)
    return doc


#: Taints GPU node pools usually carry (GKE and EKS: nvidia.com/gpu=present:NoSchedule; AKS:
#: sku=gpu:NoSchedule), tolerated by GPU workers when no tolerations are given -- without them a
#: GPU worker stays Pending on a tainted pool until the job's deadline.
DEFAULT_GPU_TOLERATIONS = (
    {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"},
)
#: Memory per worker pod when none is given: a CPU worker holds torch, Ray's worker and the data
#: set (8Gi, as the template); a GPU worker also the CUDA context and pinned staging buffers, and
#: its /dev/shm (Ray's object store, NCCL) counts against the same limit (16Gi, as daic-ray's GPU group).
CPU_WORKER_MEMORY, GPU_WORKER_MEMORY = "8Gi", "16Gi"


def worker_memory(gpus_per_worker: int) -> str:
    return GPU_WORKER_MEMORY if gpus_per_worker else CPU_WORKER_MEMORY


def scheduling_for(gpus_per_worker: int, node_selector: dict[str, str],
                   tolerations: list[dict[str, Any]]) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """(node selector, tolerations) of the worker pods: as given; GPU workers given no tolerations
    tolerate the usual GPU taints (:data:`DEFAULT_GPU_TOLERATIONS`)."""
    if gpus_per_worker and not tolerations:
        tolerations = [dict(t) for t in DEFAULT_GPU_TOLERATIONS]
    return dict(node_selector), list(tolerations)


def gpu_workers_for(n_examples: int, train_flops_per_example: float, max_workers: int,
                    sustained_flops: float = 2e13, min_epoch_s: float = 30.0) -> int:
    """How many GPU workers pay for a run: one, unless an epoch on one GPU would take longer than
    ``min_epoch_s`` at ``sustained_flops`` (20 TFLOP/s: what a small network sustains on an H100,
    far below peak). Below that, data parallelism adds pods, image pulls and an all-reduce every
    step (NCCL) to save seconds: for MNIST (55,000 examples x 24 MFLOP, ~0.07 s an epoch) one worker."""
    if n_examples < 0 or train_flops_per_example <= 0 or max_workers < 1:
        raise ValueError("need n_examples >= 0, train_flops_per_example > 0 and max_workers >= 1")
    epoch_s = n_examples * train_flops_per_example / sustained_flops
    if epoch_s <= min_epoch_s:
        return 1
    return max(1, min(max_workers, math.ceil(epoch_s / min_epoch_s)))


def ray_train_workers(num_pods: int, gpus_per_pod: int) -> int:
    """Ray Train workers a RayJob's pods hold: one per GPU, or one per pod on CPU."""
    return num_pods * max(1, gpus_per_pod)


def training_entrypoint(
    command: Literal["train", "retrain"],
    *,
    store_url: str,
    model_name: str,
    num_pods: int,
    cpus_per_pod: int,
    gpus_per_pod: int = 0,
    parent: Optional[str] = None,
    labels_prefix: Optional[str] = None,
    epochs: Optional[int] = None,
    lr: Optional[float] = None,
    seed: Optional[int] = None,
    result_key: Optional[str] = None,
    notes: Optional[dict[str, str]] = None,
    batch_size: Optional[int] = None,
    precision: str = "auto",
) -> list[str]:
    """argv of ``daic train|retrain`` sized to the pods: every CPU (or GPU) of the workers in use."""
    if command not in ("train", "retrain"):
        raise ValueError(f"command must be 'train' or 'retrain', got {command!r}")
    if command == "retrain" and not labels_prefix:
        raise ValueError("a retrain entrypoint needs labels_prefix")
    workers = ray_train_workers(num_pods, gpus_per_pod)
    cpus = cpus_per_pod // max(1, gpus_per_pod)
    if cpus < 1:
        raise ValueError(f"{cpus_per_pod} CPUs per pod cannot feed {gpus_per_pod} GPU workers (need >= 1 CPU each)")
    argv = ["daic", command, "--store", store_url, "--name", model_name, "--num-workers", str(workers),
            "--cpus-per-worker", str(cpus), "--use-gpu" if gpus_per_pod else "--cpu"]
    if command == "retrain":
        argv += ["--from", parent or "champion", "--labels", labels_prefix]
        for key, value in sorted((notes or {}).items()):
            argv += ["--note", f"{key}={value}"]
    for flag, value in (("--epochs", epochs), ("--lr", lr), ("--seed", seed), ("--batch-size", batch_size),
                        ("--result-key", result_key)):
        if value is not None:
            argv += [flag, str(value)]
    # The precision always travels: "auto" is resolved by each worker on its own device.
    return argv + ["--precision", precision, "--json"]
