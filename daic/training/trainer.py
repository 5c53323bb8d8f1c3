"""The driver side of a training run: Ray Train ``TorchTrainer`` over N data-parallel workers.

Locally (no ``RAY_ADDRESS``) a private Ray with ``num_workers x cpus_per_worker`` CPUs is started
for the run and stopped after it; against a cluster the same code joins it. Workers use gloo on
CPU and NCCL on GPUs. Each epoch the rank-0 worker reports metrics and a checkpoint, which Ray
persists under ``checkpoints/<model>/<run>/`` in the object store; the driver reads the last one
back and hands its weights to the registry.
"""
from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from daic.models.card import DataLineage
from daic.storage import ObjectStore
from daic.training.checkpoints import checkpoint_location
from daic.training.config import TrainConfig
from daic.training.worker import CHECKPOINT_HISTORY, checkpoint_file


class TrainingFailed(RuntimeError):
    """The Ray Train run ended in error (the message carries the worker's exception)."""


@dataclass(frozen=True)
class TrainRun:
    weights: dict[str, bytes]  # "model", "shadow" -> state_dict bytes
    history: list[dict[str, float]]  # per-epoch metrics of rank 0
    lineage: DataLineage
    precision: str
    device: str
    checkpoint_path: str
    ray_start_s: float  # ray.init (0 when joining an already initialised Ray)
    fit_wall_s: float  # TrainerFit: worker start-up, data loading, epochs, checkpoint uploads

    @property
    def final_metrics(self) -> dict[str, float]:
        return dict(self.history[-1]) if self.history else {}


def _payload(config: TrainConfig, store: ObjectStore, model_name: str, notes: dict[str, str] | None) -> dict:
    return {"config": config.model_dump(mode="json"), "store_url": store.url, "model_name": model_name,
            "notes": notes or {}}


def run_training(
    config: TrainConfig,
    store: ObjectStore,
    model_name: str = "mnist",
    *,
    ray_address: Optional[str] = None,
    run_name: Optional[str] = None,
    notes: dict[str, str] | None = None,
    verbose: bool = False,
) -> TrainRun:
    """Train on Ray and return the final weights, per-epoch history and data lineage."""
    from ray.train import CheckpointConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from daic.training.ray_runtime import ray_session
    from daic.training.worker import train_loop_per_worker

    run_name = run_name or f"run-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
    storage_path, filesystem = checkpoint_location(store, model_name)
    resources: dict[str, float] = {"CPU": config.cpus_per_worker}
    if config.use_gpu:
        resources["GPU"] = 1
    local_cpus = config.num_workers * config.cpus_per_worker
    local_gpus = config.num_workers if config.use_gpu else None
    with ray_session(num_cpus=local_cpus, num_gpus=local_gpus, address=ray_address, verbose=verbose) as session:
        trainer = TorchTrainer(
            train_loop_per_worker,
            train_loop_config=_payload(config, store, model_name, notes),
            scaling_config=ScalingConfig(num_workers=config.num_workers, use_gpu=config.use_gpu,
                                         resources_per_worker=resources),
            torch_config=TorchConfig(backend="nccl" if config.use_gpu else "gloo"),
            run_config=RunConfig(
                name=run_name, storage_path=storage_path, storage_filesystem=filesystem,
                checkpoint_config=CheckpointConfig(num_to_keep=config.checkpoints_to_keep),
            ),
        )
        start = time.perf_counter()
        result = trainer.fit()
        fit_wall = time.perf_counter() - start
    if result.error is not None:
        raise TrainingFailed(f"Ray Train run {run_name!r} failed: {result.error}") from result.error
    if result.checkpoint is None:
        raise TrainingFailed(f"Ray Train run {run_name!r} finished without a checkpoint")
    returned: dict[str, Any] = result.return_value or {}
    with result.checkpoint.as_directory() as folder:
        weights = {name: Path(folder, checkpoint_file(name)).read_bytes() for name in ("model", "shadow")}
        history = json.loads(Path(folder, CHECKPOINT_HISTORY).read_text())
    return TrainRun(
        weights=weights, history=history, lineage=DataLineage.model_validate(returned["lineage"]),
        precision=returned.get("precision", "unknown"), device=returned.get("device", "unknown"),
        checkpoint_path=result.checkpoint.path, ray_start_s=session.start_s, fit_wall_s=fit_wall,
    )
