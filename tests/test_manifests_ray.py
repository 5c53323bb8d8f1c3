"""Ray on the cluster: the RayJob template the train step fills (manifests/ray/rayjob-template.yaml,
daic.training.rayjob) and the RayJobs it renders pass the same checks as the installed objects,
run the same Ray as the RayCluster and the images, and can target the installed `daic-ray`.
"""
from __future__ import annotations

import copy
import functools
from pathlib import Path

from daic.components.images import IMAGES
from daic.deploy.check import USER_CREATED, check_objects
from daic.deploy.operator_rules import check_ray_job
from daic.deploy.pods import container_sites
from daic.deploy.render import kustomize, load_file
from daic.training.rayjob import RayJobSpec, Toleration, render_rayjob

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "manifests"
TEMPLATE = MANIFESTS / "ray" / "rayjob-template.yaml"
EXTERNAL = {**USER_CREATED, "ConfigMap": {"daic-storage"}}


@functools.cache
def installed() -> tuple:
    return tuple(kustomize(MANIFESTS / "overlays" / "gpu"))


def in_namespace(doc: dict) -> dict:
    doc = copy.deepcopy(doc)
    doc["metadata"]["namespace"] = "daic"
    return doc


def test_template_passes_every_check():
    """The template leaves image tags to the renderer; with the tag filled in, it passes."""
    (template,) = load_file(TEMPLATE)
    assert check_ray_job(template) == []
    filled = in_namespace(template)
    for site in container_sites(filled):
        site.container["image"] = IMAGES["train"].ref
    problems = check_objects([filled], external=EXTERNAL)
    assert not problems, "\n".join(map(str, problems))


def test_template_runs_the_ray_of_the_cluster_and_the_images():
    (template,) = load_file(TEMPLATE)
    cluster = next(o for o in installed() if o["kind"] == "RayCluster")
    assert template["spec"]["rayClusterSpec"]["rayVersion"] == cluster["spec"]["rayVersion"]
    train = IMAGES["train"].ref.rsplit(":", 1)[0]
    images = {c["image"] for g in [template["spec"]["rayClusterSpec"]["headGroupSpec"],
                                   *template["spec"]["rayClusterSpec"]["workerGroupSpecs"]]
              for c in g["template"]["spec"]["containers"]}
    assert images == {train}


def test_rendered_gpu_rayjob_passes_every_check():
    spec = RayJobSpec(name="retrain-mnist-c3-0a1b2c3d", namespace="daic", entrypoint=["daic", "retrain"],
                      image=IMAGES["train"].ref,
                      num_workers=2, cpus_per_worker="4", memory_per_worker="16Gi", gpus_per_worker=1,
                      node_selector={"cloud.google.com/gke-accelerator": "nvidia-l4"},
                      tolerations=[Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")])
    job = render_rayjob(spec, TEMPLATE)
    problems = check_objects([job], external=EXTERNAL)
    assert not problems, "\n".join(map(str, problems))
    (group,) = job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "1" and group["replicas"] == 2


def test_rendered_rayjob_can_target_the_installed_cluster():
    cluster = next(o for o in installed() if o["kind"] == "RayCluster")
    job = render_rayjob(RayJobSpec(name="retrain-mnist-c1-0a1b2c3d", namespace="daic", entrypoint=["daic", "retrain"],
                                   image=IMAGES["train"].ref, cluster_selector=cluster["metadata"]["name"]), TEMPLATE)
    assert job["spec"]["clusterSelector"] == {"ray.io/cluster": "daic-ray"}
    assert "rayClusterSpec" not in job["spec"]
    problems = check_objects([job], external=EXTERNAL)
    assert not problems, "\n".join(map(str, problems))


def test_rendered_rayjob_runs_the_tagged_train_image():
    job = render_rayjob(RayJobSpec(name="retrain-x", entrypoint=["daic", "retrain"]), TEMPLATE)
    submitter = job["spec"]["submitterPodTemplate"]["spec"]["containers"][0]["image"]
    assert submitter == IMAGES["train"].ref, \
        "an untagged image means :latest; default to components/images.py's IMAGES['train'].ref"


def test_train_steps_rayjob_passes_every_check():
    """The RayJob the pipeline's train step really creates (components/train, backend rayjob), for
    the longest run name the operator gives (an AssessmentCycle name of 40 characters)."""
    from daic.components.train.logic import TrainConfig
    from daic.components.train.registry_access import render_rayjob as render_for_step
    from daic.operators.reconcile import CycleIdentity, run_name

    cycle = run_name(CycleIdentity(name="m" * 40, uid="0a1b2c3d-4e5f-6789-abcd-ef0123456789"), 12)
    config = TrainConfig(backend="rayjob", workers=2, cpus_per_worker=4, gpus_per_worker=1,
                         memory_per_worker="16Gi", namespace="daic")
    job = render_for_step("s3://daic", cycle, "mnist", "v0001", "labels/", config)
    problems = check_objects([in_namespace(job)], external=EXTERNAL) + check_ray_job(job)
    assert not problems, "\n".join(map(str, problems))
    images = {s.container["image"] for s in container_sites(job)}
    assert images == {IMAGES["train"].ref}


def _ray_pods(doc: dict) -> list[tuple[str, dict]]:
    """(where, pod spec) of every pod template in a RayCluster or RayJob."""
    spec = doc["spec"]
    pods = []
    if doc["kind"] == "RayJob":
        pods.append(("submitter", spec["submitterPodTemplate"]["spec"]))
        spec = spec.get("rayClusterSpec")
        if spec is None:
            return pods
    pods.append(("head", spec["headGroupSpec"]["template"]["spec"]))
    pods += [(f"group {g['groupName']}", g["template"]["spec"]) for g in spec["workerGroupSpecs"]]
    return pods


def _rendered(**fields) -> dict:
    return render_rayjob(RayJobSpec(name="retrain-c-1", image=IMAGES["train"].ref,
                                    entrypoint=["daic", "retrain", "--labels", "labels/"], **fields))


def test_every_ray_container_has_a_read_only_root_and_scratch_space():
    """readOnlyRootFilesystem on every Ray container (issue 15), with emptyDirs where Python, torch
    and Ray write: /tmp (and /tmp/ray for Ray's sessions and logs) and $HOME."""
    cluster = next(o for o in installed() if o["kind"] == "RayCluster")
    docs = [cluster, _rendered(gpus_per_worker=1), _rendered(cluster_selector="daic-ray")]
    for doc in docs:
        for where, pod in _ray_pods(doc):
            emptydirs = {v["name"] for v in pod.get("volumes", []) if "emptyDir" in v}
            for container in pod["containers"]:
                name = f"{doc['kind']} {where} {container['name']}"
                assert container["securityContext"].get("readOnlyRootFilesystem") is True, name
                mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
                assert mounts.get("/tmp") in emptydirs and mounts.get("/home/daic") in emptydirs, name
                if where != "submitter":
                    assert mounts.get("/tmp/ray") in emptydirs, name


def test_gpu_workers_get_memory_for_cuda_and_the_object_store():
    from daic.training.rayjob import GPU_WORKER_MEMORY, worker_memory

    cluster = next(o for o in installed() if o["kind"] == "RayCluster")
    (gpu,) = [g for g in cluster["spec"]["workerGroupSpecs"] if g["groupName"] == "gpu"]
    limits = gpu["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["memory"] == GPU_WORKER_MEMORY == worker_memory(1)
    shm = next(v for v in gpu["template"]["spec"]["volumes"] if v["name"] == "dshm")
    assert int(shm["emptyDir"]["sizeLimit"].rstrip("Gi")) * 4 <= int(limits["memory"].rstrip("Gi"))
    assert gpu["minReplicas"] == gpu["replicas"] == 0  # scales from zero


def test_warm_cluster_job_brings_no_cluster_and_the_fresh_one_does():
    warm, fresh = _rendered(cluster_selector="daic-ray"), _rendered()
    assert warm["spec"]["clusterSelector"] == {"ray.io/cluster": "daic-ray"} and "rayClusterSpec" not in warm["spec"]
    assert "clusterSelector" not in fresh["spec"] and fresh["spec"]["shutdownAfterJobFinishes"] is True
    names = {o["metadata"]["name"] for o in installed() if o["kind"] == "RayCluster"}
    assert warm["spec"]["clusterSelector"]["ray.io/cluster"] in names
