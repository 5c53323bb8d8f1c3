"""train alone. The cluster path (RayJob) runs the real ``kubernetes`` client against a tiny
Kubernetes API stand-in over HTTP (:mod:`daic.components.testing.fake_kube`) in which the test plays
KubeRay, moving the job's status one step per read; no sleeps (the poll's clock and sleep are given)."""
from __future__ import annotations

import pytest

from daic.components.testing.fake_kube import FakeKube
from daic.components.train.logic import TrainConfig
from daic.components.train.rayjob import PLURAL, RayJobFailed, submit_rayjob

MANIFEST = {
    "apiVersion": "ray.io/v1", "kind": "RayJob",
    "metadata": {"name": "retrain-c1"},
    "spec": {"entrypoint": "python -m daic.training.job", "shutdownAfterJobFinishes": True},
}


def _kuberay(states):
    """A stand-in for KubeRay: each read of the job shows the next (deployment, job) status."""
    states = list(states)

    def advance(obj):
        if states:
            deployment, job = states.pop(0)
            obj["status"] = {"jobDeploymentStatus": deployment, "jobStatus": job}
    return advance


class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def test_rayjob_is_created_and_waited_for():
    with FakeKube() as kube:
        kube.on_get = _kuberay([("Initializing", None), ("Running", "RUNNING"), ("Complete", "SUCCEEDED")])
        clock = _Clock()
        status = submit_rayjob(kube.api(), "daic", MANIFEST, timeout_s=600, poll_s=5, clock=clock, sleep=clock.sleep)
    assert status["jobStatus"] == "SUCCEEDED"
    assert clock.now == 10  # two waits before the third read saw success
    created = kube.objects[(PLURAL, "daic", "retrain-c1")]
    assert created["spec"]["entrypoint"] == MANIFEST["spec"]["entrypoint"]
    assert [r[0] for r in kube.requests] == ["POST", "GET", "GET", "GET"]


def test_existing_rayjob_is_reused_not_resubmitted():
    with FakeKube() as kube:
        kube.put(PLURAL, "daic", {**MANIFEST, "status": {"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"}})
        status = submit_rayjob(kube.api(), "daic", MANIFEST, timeout_s=60)
    assert status["jobStatus"] == "SUCCEEDED"
    assert [r[0] for r in kube.requests] == ["POST", "GET"]  # the POST answered 409


def test_failed_rayjob_raises_with_kuberays_status():
    with FakeKube() as kube:
        kube.on_get = _kuberay([("Running", "RUNNING"), ("Failed", "FAILED")])
        clock = _Clock()
        with pytest.raises(RayJobFailed, match="jobStatus=FAILED, jobDeploymentStatus=Failed"):
            submit_rayjob(kube.api(), "daic", MANIFEST, timeout_s=600, poll_s=5, clock=clock, sleep=clock.sleep)


def test_rayjob_timeout():
    with FakeKube() as kube:
        kube.on_get = _kuberay([("Running", "RUNNING")] * 100)
        clock = _Clock()
        with pytest.raises(TimeoutError, match="did not finish within 30s"):
            submit_rayjob(kube.api(), "daic", MANIFEST, timeout_s=30, poll_s=10, clock=clock, sleep=clock.sleep)


def test_not_a_rayjob_is_refused():
    with FakeKube() as kube:
        with pytest.raises(ValueError, match="not a ray.io/v1 RayJob"):
            submit_rayjob(kube.api(), "daic", {**MANIFEST, "kind": "Job"}, timeout_s=1)


@pytest.mark.parametrize("field,value,match", [
    ("backend", "spark", "train_backend must be one of local, ray-address, rayjob"),
    ("workers", 0, "workers must be an integer >= 1"),
    ("gpus_per_worker", -1, "gpus_per_worker must be an integer >= 0"),
    ("learning_rate", 2.0, r"learning_rate must be in \(0, 1\)"),
    ("node_selector", {"gpu": 1}, "node_selector must map label names to values"),
    ("tolerations", ["NoSchedule"], "tolerations must be a list of toleration objects"),
])
def test_config_rejects_bad_values(field, value, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**{field: value})


def test_ray_address_backend_needs_an_address(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(ValueError, match="needs ray_address"):
        TrainConfig(backend="ray-address")
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    assert TrainConfig(backend="ray-address").backend == "ray-address"
