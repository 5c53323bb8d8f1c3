"""Local Ray is told the GPUs that exist, and more GPU workers than GPUs is an error naming both
numbers, raised before Ray starts. ``torch.cuda.device_count`` is the hardware boundary, replaced
here (no GPU on this machine) by a fixed count; ``ray.init`` is replaced by a recorder so the test
sees what Ray would have been told without starting it."""
from __future__ import annotations

import pytest

from daic.storage import open_store
from daic.training import ray_runtime
from daic.training.config import TrainConfig
from daic.training.ray_runtime import LocalResources, NotEnoughGPUs, local_resources
from daic.training.trainer import run_training


@pytest.mark.parametrize("workers,cpus,use_gpu,present,expected", [
    (2, 1, False, 0, LocalResources(2, 0)),
    (2, 1, False, 4, LocalResources(2, 0)),  # a CPU run never lands on a GPU
    (1, 4, True, 1, LocalResources(4, 1)),
    (1, 1, True, 8, LocalResources(1, 8)),  # Ray knows every GPU there is
    (8, 2, True, 8, LocalResources(16, 8)),
])
def test_local_ray_gets_the_gpus_that_exist(workers, cpus, use_gpu, present, expected):
    assert local_resources(workers, cpus, use_gpu, present) == expected


@pytest.mark.parametrize("workers,present,needles", [
    (2, 1, ["2 GPU workers", "1 GPU(s)", "--num-workers 1"]),
    (4, 2, ["4 GPU workers", "2 GPU(s)"]),
    (1, 0, ["no GPU", "device_count() == 0"]),
])
def test_more_gpu_workers_than_gpus_is_a_clear_error(workers, present, needles):
    with pytest.raises(NotEnoughGPUs) as info:
        local_resources(workers, 1, True, present)
    for needle in needles:
        assert needle in str(info.value)


class _InitCalled(Exception):
    pass


@pytest.fixture
def recorded_init(monkeypatch):
    import ray

    calls = []

    def fake_init(**kwargs):
        calls.append(kwargs)
        raise _InitCalled

    monkeypatch.setattr(ray, "init", fake_init)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return calls


def test_two_gpu_workers_on_a_one_gpu_host_fail_before_ray_starts(tmp_path, monkeypatch, recorded_init):
    monkeypatch.setattr(ray_runtime, "gpus_present", lambda: 1)
    config = TrainConfig(num_workers=2, use_gpu=True, base_limit=8)
    with pytest.raises(NotEnoughGPUs, match=r"2 GPU workers asked for but this machine has 1 GPU"):
        run_training(config, open_store(f"file://{tmp_path}"), "m")
    assert recorded_init == []


@pytest.mark.parametrize("use_gpu,present,gpus", [(True, 2, 2), (False, 2, 0)])
def test_ray_init_is_told_the_gpus_present(tmp_path, monkeypatch, recorded_init, use_gpu, present, gpus):
    monkeypatch.setattr(ray_runtime, "gpus_present", lambda: present)
    config = TrainConfig(num_workers=1, cpus_per_worker=2, use_gpu=use_gpu, base_limit=8)
    with pytest.raises(_InitCalled):
        run_training(config, open_store(f"file://{tmp_path}"), "m", in_process=False)
    (call,) = recorded_init
    assert (call["num_cpus"], call["num_gpus"]) == (2, gpus)


def test_joining_a_cluster_does_not_count_local_gpus(tmp_path, monkeypatch, recorded_init):
    def no_local_count():
        raise AssertionError("the local GPU count is irrelevant when joining a cluster")

    monkeypatch.setattr(ray_runtime, "gpus_present", no_local_count)
    config = TrainConfig(num_workers=4, use_gpu=True, base_limit=8)
    with pytest.raises(_InitCalled):
        run_training(config, open_store(f"file://{tmp_path}"), "m", ray_address="ray://head:10001")
    assert recorded_init[0]["address"] == "ray://head:10001"
