"""train alone. The cluster path (RayJob) runs the real ``kubernetes`` client against a tiny
Kubernetes API stand-in over HTTP (:mod:`daic.components.testing.fake_kube`: no kube-apiserver runs
here) in which the test plays KubeRay, moving the job's status one step per read, and plays an API
server's bad moments (error statuses, reset connections) through its ``fault`` hook; a "black hole"
(a listening socket that never accepts) plays a hung API server. No sleeps (the poll's clock and
sleep are given)."""
from __future__ import annotations

import re

import pytest

from daic.components.testing.black_hole import never_answering_server, returns_within
from daic.components.testing.fake_kube import FakeKube
from daic.components.train.logic import TrainConfig
from daic.components.train.rayjob import (MAX_NAME, PLURAL, RayJobApiError, RayJobFailed, rayjob_name,
                                         submit_rayjob)

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


def _faults(plan):
    """A ``FakeKube.fault`` hook: the n-th request (0-based) gets ``plan[n]`` (None: served)."""
    plan = list(plan)

    def fault(method, path):
        return plan.pop(0) if plan else None
    return fault


def test_transient_api_faults_while_polling_are_waited_through():
    """A 503, a 429, a reset connection and a 500 during an hour-long job cost polls, not the step."""
    with FakeKube() as kube:
        kube.on_get = _kuberay([("Running", "RUNNING"), ("Running", "RUNNING"), ("Complete", "SUCCEEDED")])
        #              POST  GET   GET  GET   GET   GET      GET   GET   GET
        kube.fault = _faults([503, None, 503, 429] + ["reset"] * 4 + [500, None])
        clock = _Clock()
        status = submit_rayjob(kube.api(), "daic", MANIFEST, timeout_s=3600, poll_s=5, clock=clock,
                               sleep=clock.sleep)
    assert status["jobStatus"] == "SUCCEEDED"
    assert [m for m, *_ in kube.requests].count("POST") == 2  # the create that met a 503 was tried again
    assert kube.objects[(PLURAL, "daic", "retrain-c1")]["spec"] == MANIFEST["spec"]


def test_an_api_server_failing_until_the_deadline_is_a_timeout_naming_the_last_error():
    with FakeKube() as kube:
        kube.fault = _faults([None] + [503] * 1000)
        clock = _Clock()
        with pytest.raises(TimeoutError, match=r"within 60s .*7 API call\(s\) failed, the last: read: HTTP 503"):
            submit_rayjob(kube.api(), "daic", MANIFEST, timeout_s=60, poll_s=10, clock=clock, sleep=clock.sleep)
    assert clock.now == 60


def test_a_rayjob_deleted_while_waiting_is_a_clear_error_at_once():
    with FakeKube() as kube:
        kube.on_get = _kuberay([("Running", "RUNNING")] * 10)
        reads = []

        def delete_before_the_third_read(method, path):  # someone deletes the job: the read finds none
            reads.append(method)
            if reads.count("GET") == 3:
                kube.objects.pop((PLURAL, "daic", "retrain-c1"))
        kube.fault = delete_before_the_third_read
        clock = _Clock()
        with pytest.raises(RayJobApiError, match=r"retrain-c1 was deleted while the step waited .*jobStatus=RUNNING"):
            submit_rayjob(kube.api(), "daic", MANIFEST, timeout_s=3600, poll_s=5, clock=clock, sleep=clock.sleep)
    assert clock.now == 10  # the third read found it gone: no waiting out the hour


@pytest.mark.parametrize("plan,match", [
    ([403], "403 .*to create RayJob daic/retrain-c1: the step's service account may not do this"),
    ([None, 401], "401 .*to read RayJob daic/retrain-c1: the step's credentials were refused"),
    ([None, None, 403], "403 .*to read RayJob"),
    ([404], "404 .*to create RayJob"),  # no RayJob CRD: KubeRay is not installed
    ([422], "422 .*to create RayJob"),
])
def test_refusals_fail_at_once(plan, match):
    with FakeKube() as kube:
        kube.on_get = _kuberay([("Running", "RUNNING")] * 10)
        kube.fault = _faults(plan)
        clock = _Clock()
        with pytest.raises(RayJobApiError, match=match):
            submit_rayjob(kube.api(), "daic", MANIFEST, timeout_s=3600, poll_s=5, clock=clock, sleep=clock.sleep)
    assert clock.now <= 5


@pytest.fixture
def black_hole():
    """An API server that accepted the connection and never answers."""
    with never_answering_server() as url:
        yield url


def test_a_hung_api_server_cannot_hold_the_step_past_its_deadline(black_hole):
    from kubernetes import client

    configuration = client.Configuration()
    configuration.host = black_hole
    api = client.CustomObjectsApi(client.ApiClient(configuration))
    clock = _Clock()
    outcome = returns_within(30, lambda: submit_rayjob(api, "daic", MANIFEST, timeout_s=20, poll_s=10, clock=clock,
                                                       sleep=clock.sleep, request_timeout=(0.5, 0.5)))
    assert outcome.elapsed < 15
    assert isinstance(outcome.error, TimeoutError), outcome
    assert "the last: create: ReadTimeoutError" in str(outcome.error) or "timed out" in str(outcome.error)


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
    ("operational_oversample", 0, "operational_oversample must be an integer >= 1"),
    ("base_limit", -1, "base_limit must be an integer >= 0"),
    ("reference_shift_per_condition", 1.5, "reference_shift_per_condition must be an integer >= 0"),
    ("batch_size", -2, "batch_size must be an integer >= 0"),
    ("precision", "int8", "train_precision must be one of auto, fp32, bf16, fp16"),
    ("precision", "fp16", "train_precision 'fp16' needs GPU workers"),
    ("ray_cluster", "Daic_Ray", "ray_cluster must be a RayCluster name"),
    ("memory_per_worker", "lots", "memory_per_worker must be a Kubernetes quantity"),
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


# -- the step's RayJob: its name, and the whole cluster path against the fake API -------------------
@pytest.mark.parametrize("cycle", [
    "c1", "c-20250101T120000Z-1a2b3c", "C1", "a.b", "a_b", "7days", "x" * 100, "-".join(["ab"] * 40),
])
def test_rayjob_names_are_kuberay_valid_and_stable(cycle):
    name = rayjob_name(cycle)
    assert len(name) <= MAX_NAME == 47
    assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name), name
    assert name == rayjob_name(cycle)  # a retried step finds its own job


def test_rayjob_names_keep_cycles_apart():
    short = ["c1", "C1", "c.1", "c_1", "c-1"]
    long = ["x" * 60 + "a", "x" * 60 + "b"]
    names = [rayjob_name(c) for c in short + long]
    assert len(set(names)) == len(names)
    assert rayjob_name("c1") == "retrain-c1"  # a plain short id is kept readable


class _KubeRayRunningTheDriver:
    """Plays KubeRay and the RayJob's driver: on the first read of a new job it checks that the
    entrypoint is a valid ``daic retrain`` command line (parsed by the real click command), registers
    a version from the parent it names, and writes the driver's outcome with the real ``report``
    that ``daic retrain --result-key`` calls; then reports the job as succeeded. Only the Ray
    training itself is left out (the end-to-end pipeline test runs it)."""

    def __init__(self, store):
        self.store = store
        self.runs = []

    def __call__(self, obj):
        if obj.get("status"):
            return
        import shlex

        from daic.commands.retrain import command as retrain_command
        from daic.commands.train import report
        from daic.components.testing.registry import register_untrained
        from daic.models.card import DataLineage
        from daic.models.registry import ModelRegistry
        from daic.training.trainer import TrainRun
        from daic.training.workflow import Outcome

        argv = shlex.split(obj["spec"]["entrypoint"])
        assert argv[:2] == ["daic", "retrain"], argv
        params = retrain_command.make_context("retrain", argv[2:]).params  # raises on a bad option
        self.runs.append(params)
        registry = ModelRegistry(self.store, params["name"])
        (version,) = register_untrained(self.store, [registry.resolve(params["parent"])], champion=None)
        run = TrainRun(weights={}, history=[], lineage=DataLineage(dataset="mnist", base_count=0),
                       precision="fp32", device="cpu", checkpoint_path="/tmp/ckpt", ray_start_s=0.0,
                       fit_wall_s=0.0)
        report(Outcome(card=registry.card(version), run=run, promoted=False), self.store, params["result_key"],
               as_json=True)
        obj["status"] = {"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"}


@pytest.fixture
def cluster_cycle(tmp_path):
    """A store with a champion and one labeled batch for cycle ``C-7.retry_1`` (an id that is not
    a DNS label), and a fake Kubernetes API playing KubeRay."""
    import numpy as np

    from daic.components import cycle_store
    from daic.components.testing.registry import register_untrained
    from daic.storage import open_store

    store = open_store(f"file://{tmp_path / 'store'}")
    register_untrained(store, [None])
    cycle = "C-7.retry_1"
    store.put_arrays(cycle_store.train_labels_key(cycle), images=np.zeros((4, 28, 28), np.float32),
                     labels=np.arange(4), ids=np.array([f"i{k}" for k in range(4)]))
    with FakeKube() as kube:
        kube.on_get = _KubeRayRunningTheDriver(store)
        yield store, cycle, kube


def test_cluster_path_creates_a_valid_rayjob_and_reads_the_drivers_result(cluster_cycle):
    from daic.components.images import IMAGES
    from daic.components.train.logic import run

    store, cycle, kube = cluster_cycle
    config = TrainConfig(backend="rayjob", namespace="daic", workers=2, cpus_per_worker=8, gpus_per_worker=2,
                         memory_per_worker="16Gi", epochs=3, learning_rate=2e-3, operational_oversample=5,
                         base_limit=1000, reference_shift_per_condition=20, seed=4,
                         node_selector={"gpu": "h100"}, tolerations=[{"key": "gpu", "operator": "Exists"}],
                         batch_size=2048, precision="bf16", ray_cluster="")
    result = run(store, cycle, config, api=kube.api())

    assert (result.version, result.parent) == ("v0002", "v0001")
    (name,) = [n for (plural, ns, n) in kube.objects if plural == PLURAL and ns == "daic"]
    assert name == rayjob_name(cycle) and len(name) <= 47
    job = kube.objects[(PLURAL, "daic", name)]
    (group,) = job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    worker = group["template"]["spec"]
    assert group["replicas"] == 2 and worker["nodeSelector"] == {"gpu": "h100"}
    assert worker["tolerations"] == [{"key": "gpu", "operator": "Exists"}]
    assert worker["containers"][0]["resources"]["limits"] == {"cpu": "8", "memory": "16Gi", "nvidia.com/gpu": "2"}
    assert worker["containers"][0]["image"] == IMAGES["train"].ref
    # What the driver was told (as `daic retrain` parsed it): 2 pods x 2 GPUs = 4 Ray Train workers.
    (params,) = kube.on_get.runs
    assert params["parent"] == "v0001" and params["labels_prefix"] == "labels/"
    assert (params["epochs"], params["lr"], params["seed"], params["oversample"]) == (3, 2e-3, 4, 5)
    assert (params["base_limit"], params["shift_per_condition"]) == (1000, 20)
    assert (params["num_workers"], params["cpus_per_worker"], params["use_gpu"]) == (4, 4, True)
    assert params["store_url"] == store.url and params["result_key"] == f"cycles/{cycle}/train-output.json"
    assert params["notes"] == ("cycle=C-7.retry_1",)
    assert (params["batch_size"], params["precision"]) == (2048, "bf16")
    record = store.get_json(f"cycles/{cycle}/train.json")
    assert record["version"] == "v0002" and record["rayjob"] == name
    assert record["status"]["jobStatus"] == "SUCCEEDED"


def test_by_default_the_job_goes_to_the_warm_daic_ray_cluster(cluster_cycle):
    """No cluster of its own: clusterSelector names the long-lived autoscaling RayCluster, and the
    driver gets a batch size chosen per device ("auto") and the precision to resolve there."""
    from daic.components.train.logic import run

    store, cycle, kube = cluster_cycle
    result = run(store, cycle, TrainConfig(backend="rayjob", namespace="daic", gpus_per_worker=1), api=kube.api())
    assert result.version == "v0002"
    (job,) = [o for (plural, ns, _), o in kube.objects.items() if plural == PLURAL]
    assert job["spec"]["clusterSelector"] == {"ray.io/cluster": "daic-ray"}
    assert "rayClusterSpec" not in job["spec"] and "shutdownAfterJobFinishes" not in job["spec"]
    (params,) = kube.on_get.runs
    assert (params["num_workers"], params["use_gpu"], params["batch_size"], params["precision"]) == (1, True, None,
                                                                                                   "auto")


def test_a_fresh_gpu_cluster_tolerates_gpu_taints_and_has_gpu_memory(cluster_cycle):
    from daic.components.train.logic import run

    store, cycle, kube = cluster_cycle
    run(store, cycle, TrainConfig(backend="rayjob", namespace="daic", gpus_per_worker=1, ray_cluster=""),
        api=kube.api())
    (job,) = [o for (plural, ns, _), o in kube.objects.items() if plural == PLURAL]
    (group,) = job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    worker = group["template"]["spec"]
    assert {t["key"] for t in worker["tolerations"]} == {"nvidia.com/gpu", "sku"}
    assert worker["containers"][0]["resources"]["limits"]["memory"] == "16Gi"
    assert group["replicas"] == 1


def test_a_retried_step_reuses_the_job_and_its_result(cluster_cycle):
    from daic.components.train.logic import run

    store, cycle, kube = cluster_cycle
    config = TrainConfig(backend="rayjob", namespace="daic")
    first = run(store, cycle, config, api=kube.api())
    second = run(store, cycle, config, api=kube.api())
    assert first.version == second.version == "v0002"
    assert len(kube.on_get.runs) == 1  # one driver run, one version
    assert [m for m, *_ in kube.requests].count("POST") == 2  # the second create answered 409


def test_a_job_that_left_no_result_is_an_error(cluster_cycle):
    from daic.components.train.logic import run

    store, cycle, kube = cluster_cycle
    kube.on_get = _kuberay([("Complete", "SUCCEEDED")])  # succeeds without running our driver
    with pytest.raises(RuntimeError, match="left no cycles/C-7.retry_1/train-output.json"):
        run(store, cycle, TrainConfig(backend="rayjob", namespace="daic"), api=kube.api())


def test_local_backend_needs_the_gpus_in_its_own_pod():
    with pytest.raises(ValueError, match=r"2 worker\(s\) x 1 GPU\(s\) need train_gpus >= 2, got 1"):
        TrainConfig(workers=2, gpus_per_worker=1, pod_gpus=1)
    assert TrainConfig(workers=2, gpus_per_worker=1, pod_gpus=2).pod_gpus == 2
    assert TrainConfig(backend="rayjob", gpus_per_worker=1).pod_gpus == 0  # the RayJob's workers hold the GPUs
