"""KubeRay's own operator (v1.5.0, built from its Go module by ``make kuberay-operator``) against the
test control plane (tests/cluster): the RayJob daic's train step submits becomes a RayCluster owned
by the RayJob, with the GPU worker group daic asked for. No pod runs here (no kubelet), so the job
goes no further than Initializing. Optional: skipped unless the binary was built (``make test``
does not build it: a cold build takes about 15 minutes)."""
from __future__ import annotations

import os
import subprocess

import pytest
import yaml

from cluster.binaries import ray_operator
from cluster.control_plane import die_with_parent, free_port
from cluster.upstream import KUBERAY, module_dir
from fakes.waiting import wait_for


def test_kuberays_operator_turns_daics_rayjob_into_a_raycluster(kube, tmp_path):
    from daic.components.train import registry_access
    from daic.components.train.logic import TrainConfig

    binary = ray_operator()
    if not os.access(binary, os.X_OK):
        pytest.skip(f"{binary.name} not built: run `make kuberay-operator`")
    if kube.control_plane is None:
        pytest.skip("a cluster of your own may run KubeRay already")
    folder = module_dir(KUBERAY.module, KUBERAY.version) / KUBERAY.folder
    kube.install_crds([yaml.safe_load(p.read_text()) for p in sorted(folder.glob("*.yaml"))])  # + RayService
    ns = kube.namespace("kuberay")
    job = registry_access.render_rayjob("s3://daic", "demo-c1-0123abcd", "mnist", "v0001", "labels/demo-c1-0123abcd/",
                                        TrainConfig(namespace=ns, backend="rayjob", gpus_per_worker=1, ray_cluster=""))
    log = tmp_path / "ray-operator.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(binary), f"--kubeconfig={kube.kubeconfig}", f"--watch-namespace={ns}",
                                 "--enable-leader-election=false", "--leader-election-namespace=default",
                                 f"--metrics-addr=127.0.0.1:{free_port()}",
                                 f"--health-probe-bind-address=127.0.0.1:{free_port()}"],
                                stdout=out, stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
    try:
        kube.apply_objects([job])
        clusters = wait_for(lambda: kube.custom().list_namespaced_custom_object("ray.io", "v1", ns, "rayclusters")["items"],
                            60, f"a RayCluster from KubeRay (log {log})")
        status = wait_for(lambda: kube.custom().get_namespaced_custom_object(
            "ray.io", "v1", ns, "rayjobs", job["metadata"]["name"]).get("status"), 60, "the RayJob's status")
    finally:
        proc.terminate()
        proc.wait(30)
    (cluster,) = clusters
    assert [(o["kind"], o["name"]) for o in cluster["metadata"]["ownerReferences"]] == [("RayJob", job["metadata"]["name"])]
    (group,) = cluster["spec"]["workerGroupSpecs"]
    assert group["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert status["rayClusterName"] == cluster["metadata"]["name"]
    assert status["jobDeploymentStatus"] == "Initializing", status
