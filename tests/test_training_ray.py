"""Real, short Ray Train runs: 2 CPU workers, a few hundred images, 1 epoch, warm-started from a
registered parent with a labeled batch of corrupted digits; the result is a registered child. The
local Ray is kept and reused by the next run in the process; one worker runs in-process (Ray
Train's local mode) and its checkpoint still lands in the object store."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from daic.data.corruptions import corrupt
from daic.data.mnist import load_split
from daic.models.card import DataLineage
from daic.models.networks import build
from daic.models.reference import ReferenceConfig
from daic.models.registry import ModelRegistry
from daic.storage import open_store
from daic.training.ray_runtime import LocalResources, kept_local, shutdown_local
from daic.training.workflow import retrain

SMALL_REFERENCE = ReferenceConfig(val_limit=64, shift_per_condition=2, corruptions=("fog",))


def test_two_worker_warm_start_run_registers_a_child(tmp_path):
    ray = pytest.importorskip("ray")
    store = open_store(f"file://{tmp_path / 'store'}")
    registry = ModelRegistry(store, "mnist")
    torch.manual_seed(0)
    parent = registry.register(model=build("small_cnn"), shadow=build("shadow_net"),
                               data=DataLineage(dataset="mnist", base_count=0), reference_config=SMALL_REFERENCE)
    registry.promote(parent.version)
    test = load_split("test")
    store.put_arrays("labels/c-1/batch-0.npz", images=corrupt(test.images[:64], "fog", 3, seed=1),
                     labels=test.labels[:64], ids=np.array([f"r{i}" for i in range(64)]))

    shutdown_local()
    try:
        outcome = retrain(store, "mnist", "champion", "labels/c-1/", num_workers=2, epochs=1, base_limit=256,
                          batch_size=32, val_limit=128, operational_oversample=2, lineage={"cycle": "c-1"},
                          reference_config=SMALL_REFERENCE, test_limit=256)
        # The private local Ray is kept for the next run, which pays no ray.init.
        assert ray.is_initialized() and kept_local() == LocalResources(cpus=2, gpus=0)
        assert outcome.run.ray_start_s > 0 and not outcome.run.ray_reused and outcome.run.mode == "local-ray"
        again = retrain(store, "mnist", "champion", "labels/c-1/", num_workers=2, epochs=1, base_limit=64,
                        batch_size=32, val_limit=16, reference_config=SMALL_REFERENCE, test_limit=64)
        assert again.run.ray_reused and again.run.ray_start_s == 0.0
        assert set(again.run.phases) == {"startup", "data", "epochs", "other", "teardown"}
    finally:
        shutdown_local()
    assert not ray.is_initialized()
    card = outcome.card
    assert (card.version, card.parent) == ("v0002", "v0001")
    assert [(b.key, b.count) for b in card.data.labeled_batches] == [("labels/c-1/batch-0.npz", 64)]
    assert card.data.base_count == 256 and card.data.notes == {"cycle": "c-1"}
    assert card.train_config["warm_start_from"] == "v0001" and card.train_config["num_workers"] == 2
    (epoch,) = card.history
    assert epoch["world_size"] == 2 and epoch["epoch"] == 1
    # The retrain default (augment="select") chose its recipe across both workers: 19 of the 64
    # labelled inputs held out of the two candidates' fits.
    assert card.train_config["augment"] == "select" and epoch["select_held_out"] == 19
    assert epoch["select_chosen"] in (0.0, 1.0)
    assert 0.0 <= card.metrics["val_accuracy"] <= 1.0 and "test_accuracy" in card.metrics
    # The checkpoint Ray persisted lives in the object store.
    assert outcome.run.checkpoint_path.startswith(f"{store.root}/checkpoints/mnist/")
    assert any(k.startswith("checkpoints/mnist/") and k.endswith("model.pt") for k in store.list("checkpoints/"))
    # Fine-tuned, so the weights moved away from the parent's; the champion did not move.
    new_model, _ = registry.load_networks("v0002")
    old_model, _ = registry.load_networks("v0001")
    assert not torch.equal(new_model.head.weight, old_model.head.weight)
    assert registry.champion() == "v0001"
    assert registry.ancestry("v0002") == ["v0002", "v0001"]


def test_one_worker_runs_in_process_and_checkpoints_to_the_store(tmp_path):
    """No Ray processes for one worker: Ray Train's local mode, the same worker function."""
    ray = pytest.importorskip("ray")
    store = open_store(f"file://{tmp_path / 'store'}")
    shutdown_local()
    outcome = retrain_from_scratch(store)
    run = outcome.run
    assert run.mode == "in-process" and run.ray_start_s == 0.0 and not ray.is_initialized()
    assert run.phases["startup"] < 1.0  # no controller or worker process to wait for
    assert run.checkpoint_path.startswith(f"{store.root}/checkpoints/mnist/")
    assert any(k.endswith("model.pt") for k in store.list("checkpoints/mnist/"))
    assert outcome.card.train_config["num_workers"] == 1 and len(outcome.card.history) == 2


def retrain_from_scratch(store):
    from daic.training.config import TrainConfig
    from daic.training.workflow import train_and_register

    config = TrainConfig(num_workers=1, epochs=2, base_limit=128, batch_size=32, val_limit=32)
    return train_and_register(store, "mnist", config, reference_config=SMALL_REFERENCE, test_limit=64)


def test_a_local_ray_started_off_the_main_thread_is_not_kept():
    """Ray's GCS and raylet get PR_SET_PDEATHSIG=SIGKILL against the thread that starts them, so a
    Ray kept after a worker thread's run would be killed when that thread ends (and Ray then exits
    the whole process a minute later: seen when a test drove `daic demo` from a thread). Started
    from the main thread it is kept; from any other thread it is shut down with its run."""
    import threading

    ray = pytest.importorskip("ray")
    from daic.training.ray_runtime import ray_session

    seen = {}

    def run():
        with ray_session(LocalResources(cpus=1, gpus=0)) as session:
            seen["started"], seen["initialized"] = session.started_here, ray.is_initialized()
        seen["kept"], seen["initialized_after"] = kept_local(), ray.is_initialized()

    shutdown_local()
    try:
        worker = threading.Thread(target=run)
        worker.start()
        worker.join(timeout=300)
        assert not worker.is_alive()
        assert seen == {"started": True, "initialized": True, "kept": None, "initialized_after": False}
        with ray_session(LocalResources(cpus=1, gpus=0)):
            pass
        assert kept_local() == LocalResources(cpus=1, gpus=0)  # the main thread's Ray is kept
    finally:
        shutdown_local()
