"""`daic train` / `daic retrain` reject bad input before starting Ray (fast, no training)."""
from __future__ import annotations

import torch
from click.testing import CliRunner

from daic.cli import main
from daic.models.card import DataLineage
from daic.models.networks import build
from daic.models.reference import ReferenceConfig
from daic.models.registry import ModelRegistry
from daic.storage import open_store


def _run(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_train_rejects_bad_config_naming_the_field(tmp_path):
    url = f"file://{tmp_path}"
    out = _run("train", "--store", url, "--epochs", "0")
    assert out.exit_code == 2 and "epochs" in out.output and "greater than or equal to 1" in out.output
    out = _run("train", "--store", url, "--precision", "fp16")
    assert out.exit_code == 2 and "fp16" in out.output and "use_gpu" in out.output
    assert open_store(url).list("models/") == []


def test_retrain_needs_a_parent_and_labels(tmp_path):
    url = f"file://{tmp_path}"
    out = _run("retrain", "--store", url, "--labels", "labels/c-1/")
    assert out.exit_code == 2 and "no champion" in out.output
    store = open_store(url)
    torch.manual_seed(0)
    ModelRegistry(store, "mnist").register(model=build("small_cnn"), shadow=build("shadow_net"),
                                           data=DataLineage(dataset="mnist", base_count=0),
                                           reference_config=ReferenceConfig(val_limit=16, shift_per_condition=0))
    out = _run("retrain", "--store", url, "--from", "v0001", "--labels", "labels/c-1/")
    assert out.exit_code == 1 and "no labeled batches (*.npz) under 'labels/c-1/'" in out.output
    out = _run("retrain", "--store", url, "--from", "v0001", "--labels", "/etc/")
    assert out.exit_code == 2 and "labels_prefix" in out.output
    out = _run("retrain", "--store", url, "--from", "v0001", "--labels", "labels/c-1/", "--note", "cycle")
    assert out.exit_code == 2 and "KEY=VALUE" in out.output
    assert ModelRegistry(store, "mnist").versions() == ["v0001"]


def test_more_gpu_workers_than_gpus_is_a_usage_error_naming_both(tmp_path, monkeypatch):
    """The GPU count is the hardware boundary (no GPU here): replaced by a fixed count of 1."""
    from daic.training import ray_runtime

    monkeypatch.setattr(ray_runtime, "gpus_present", lambda: 1)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    url = f"file://{tmp_path}"
    out = _run("train", "--store", url, "--use-gpu", "--num-workers", "2", "--base-limit", "8")
    assert out.exit_code == 1 and "Traceback" not in out.output
    assert "2 GPU workers asked for but this machine has 1 GPU(s)" in out.output
    assert open_store(url).list("models/") == []
