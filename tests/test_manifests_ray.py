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
