"""Training shows progress while it runs: rank 0 writes each epoch to the store, the driver polls it
during fit and hands every epoch once to the listeners (the CLI and the demo print a line)."""
from __future__ import annotations

import pytest

from daic.storage import open_store
from daic.training.progress import Watcher, describe, listen, progress_key

EPOCH = {"epoch": 1, "train_loss": 0.25, "train_accuracy": 0.9, "epoch_time_s": 2.0, "samples_per_s": 12345.0}


def test_watcher_publishes_each_epoch_once_including_the_last(tmp_path):
    store = open_store(f"file://{tmp_path}")
    key = progress_key("mnist", "run-1", None)
    assert key == "checkpoints/mnist/run-1/progress.json"
    assert progress_key("mnist", "run-1", {"cycle": "c-7"}) == "cycles/c-7/train-progress/mnist.json"
    assert progress_key("mnist-filter", "run-2", {"cycle": "c-7"}) == "cycles/c-7/train-progress/mnist-filter.json"
    got = []
    with listen(got.append):
        watcher = Watcher(store, key, interval_s=3600)  # the test polls by hand
        watcher.poll()  # nothing written yet
        store.put_json(key, {"epochs": 3, "history": [EPOCH]})
        watcher.poll()
        watcher.poll()
        store.put_json(key, {"epochs": 3, "history": [EPOCH, {**EPOCH, "epoch": 2}, {**EPOCH, "epoch": 3}]})
        with watcher:  # leaving the block polls once more: the epochs written at the end
            pass
    assert [m["epoch"] for m in got] == [1, 2, 3] and all(m["epochs"] == 3 for m in got)
    assert describe(got[0]) == "epoch 1/3: loss 0.2500, train acc 90.00%, 12,345 samples/s, 2.0 s"


def test_other_loops_metrics_and_unreadable_progress_never_fail_a_run(tmp_path):
    """The input filter's loop reports other fields (no train_accuracy): described without them."""
    store = open_store(f"file://{tmp_path}")
    store.put_json("k.json", {"epochs": 2, "history": [{"epoch": 1, "train_loss": -1.5, "epoch_time_s": 4.0,
                                                         "samples_per_s": 95.0, "restore_loss": 0.03}]})
    got = []
    with listen(got.append):
        Watcher(store, "k.json").poll()
        store.put_bytes("bad.json", b"{not json")
        Watcher(store, "bad.json").poll()
    assert len(got) == 1 and describe(got[0]) == "epoch 1/2: loss -1.5000, 95 samples/s, 4.0 s"
    assert describe({}) == "epoch ?/?:"


def test_a_failing_listener_never_stops_training(tmp_path):
    store = open_store(f"file://{tmp_path}")
    store.put_json("k.json", {"epochs": 1, "history": [EPOCH]})
    got = []

    def broken(metrics):
        raise RuntimeError("terminal closed")

    with listen(broken), listen(got.append):
        Watcher(store, "k.json").poll()
    assert len(got) == 1


def test_a_real_run_reports_every_epoch_while_it_trains(tmp_path):
    """Ray Train's local mode (one worker in process): two epochs on 256 images."""
    pytest.importorskip("ray")
    from daic.training.config import TrainConfig
    from daic.training.trainer import run_training

    store = open_store(f"file://{tmp_path}")
    got = []
    config = TrainConfig(epochs=2, base_limit=256, batch_size=64, val_limit=64, num_workers=1)
    with listen(got.append):
        run = run_training(config, store, "mnist", notes={"cycle": "c-1"}, in_process=True)
    assert [int(m["epoch"]) for m in got] == [1, 2] == [int(h["epoch"]) for h in run.history]
    assert all(m["samples_per_s"] > 0 and m["epochs"] == 2 and "train_loss" in m for m in got)
    assert [h["epoch"] for h in store.get_json("cycles/c-1/train-progress/mnist.json")["history"]] == [1, 2]
