"""The driver side of a training run: Ray Train ``TorchTrainer`` over N data-parallel workers.

Locally (no ``RAY_ADDRESS``) a private Ray with ``num_workers x cpus_per_worker`` CPUs and the
GPUs the machine has is started for the first run and kept for the next ones
(``daic.training.ray_runtime``); against a cluster the same code joins it. Workers use gloo on
CPU and NCCL on GPUs. Each epoch the rank-0 worker reports metrics and a checkpoint, which Ray
persists under ``checkpoints/<model>/<run>/`` in the object store; the driver reads the last one
back and hands its weights to the registry.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
import uuid
from dataclasses import dataclass, field
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
    plan: dict[str, Any] = field(default_factory=dict)  # rank 0's device plan (device_plan.TrainPlan)
    ray_reused: bool = False  # the local Ray of an earlier run in this process
    phases: dict[str, float] = field(default_factory=dict)  # fit_wall_s split (fit_phases)
    mode: str = "local-ray"  # execution_mode: cluster, in-process or local-ray

    @property
    def epochs_s(self) -> float:
        return sum(h.get("epoch_time_s", 0.0) for h in self.history)

    @property
    def fixed_s(self) -> float:
        """Ray's fixed cost of this run: start-up plus everything in fit that is not an epoch."""
        return self.ray_start_s + max(0.0, self.fit_wall_s - self.epochs_s)

    @property
    def final_metrics(self) -> dict[str, float]:
        return dict(self.history[-1]) if self.history else {}


def _payload(config: TrainConfig, store: ObjectStore, model_name: str, notes: dict[str, str] | None) -> dict:
    return {"config": config.model_dump(mode="json"), "store_url": store.url, "model_name": model_name,
            "notes": notes or {}}


IN_PROCESS_ENV = "DAIC_TRAIN_IN_PROCESS"  # "0": never use Ray Train's local mode; "1": whenever allowed


def execution_mode(num_workers: int, joining_cluster: bool, in_process: Optional[bool] = None) -> str:
    """Pure rule: ``"cluster"`` (join ``RAY_ADDRESS``), ``"in-process"`` or ``"local-ray"``.

    One worker on this machine runs in-process: Ray Train's local mode
    (``ScalingConfig(num_workers=0)``) calls the same ``train_loop_per_worker`` in the driver, with
    the same ``ray.train`` context, device, ``prepare_model`` and ``report`` -- one worker has no
    gradients to all-reduce, and it pays no controller and worker processes (~20 s of start-up on a
    2-core machine, more than MNIST epochs take). Several workers start (or reuse) a local Ray.
    ``in_process=False`` forces the local Ray for one worker too (benchmarks measure both).
    """
    if joining_cluster:
        return "cluster"
    if num_workers == 1 and in_process is not False:
        return "in-process"
    if in_process is True:
        raise ValueError(f"in-process training runs one worker, not {num_workers}")
    return "local-ray"


def _in_process_default() -> Optional[bool]:
    value = os.environ.get(IN_PROCESS_ENV, "").strip()
    if value in ("", "auto"):
        return None
    if value not in ("0", "1"):
        raise ValueError(f"{IN_PROCESS_ENV} must be 0, 1 or auto, got {value!r}")
    return value == "1"


def run_training(
    config: TrainConfig,
    store: ObjectStore,
    model_name: str = "mnist",
    *,
    ray_address: Optional[str] = None,
    run_name: Optional[str] = None,
    notes: dict[str, str] | None = None,
    verbose: bool = False,
    keep_ray: bool = True,
    in_process: Optional[bool] = None,
    train_loop=None,
    net_names: tuple[str, ...] = ("model", "shadow"),
) -> TrainRun:
    """Train with Ray Train and return the final weights, per-epoch history and data lineage.

    Where it runs: :func:`execution_mode` (``in_process`` None: ``$DAIC_TRAIN_IN_PROCESS``, else
    the rule). A private local Ray is kept for the next run in this process unless ``keep_ray`` is
    false (``daic.training.ray_runtime``). ``train_loop`` replaces the classifier's per-worker
    function (the input filter's, daic.filters.worker), whose checkpoints hold ``net_names``."""
    from ray.train import CheckpointConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from daic.training.progress import Watcher, progress_key
    from daic.training.ray_runtime import RaySession, gpus_present, local_resources, ray_session
    from daic.training.worker import train_loop_per_worker

    run_name = run_name or f"run-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
    storage_path, filesystem = checkpoint_location(store, model_name)
    resources: dict[str, float] = {"CPU": config.cpus_per_worker}
    if config.use_gpu:
        resources["GPU"] = 1
    joining = bool(ray_address or os.environ.get("RAY_ADDRESS"))
    mode = execution_mode(config.num_workers, joining, in_process if in_process is not None else _in_process_default())
    local = None
    if not joining:
        # This machine: told the GPUs that exist; too many GPU workers fail here, by name.
        local = local_resources(config.num_workers, config.cpus_per_worker, config.use_gpu,
                                gpus_present() if config.use_gpu else 0)
    payload = _payload(config, store, model_name, notes)
    payload["progress_key"] = progress_key(model_name, run_name, notes)
    if store.exists(payload["progress_key"]):  # a retried cycle step: not the last attempt's epochs
        store.delete(payload["progress_key"])
    run_config = RunConfig(name=run_name, storage_path=storage_path, storage_filesystem=filesystem,
                           checkpoint_config=CheckpointConfig(num_to_keep=config.checkpoints_to_keep))
    with contextlib.ExitStack() as stack:
        if mode == "in-process":
            session = RaySession(address="in-process", started_here=False, start_s=0.0)
            # Ray Train's local mode keeps the reported checkpoint where the worker wrote it.
            payload["checkpoint_dir"] = stack.enter_context(tempfile.TemporaryDirectory(prefix="daic-ckpt-"))
            scaling = ScalingConfig(num_workers=0, use_gpu=config.use_gpu)
        else:
            session = stack.enter_context(ray_session(local, address=ray_address, verbose=verbose, keep=keep_ray))
            scaling = ScalingConfig(num_workers=config.num_workers, use_gpu=config.use_gpu,
                                    resources_per_worker=resources)
        trainer = TorchTrainer(
            train_loop or train_loop_per_worker, train_loop_config=payload, scaling_config=scaling,
            torch_config=TorchConfig(backend="nccl" if config.use_gpu else "gloo"), run_config=run_config,
        )
        start, wall_start = time.perf_counter(), time.time()
        try:
            with Watcher(store, payload["progress_key"]):  # one line per epoch while fit runs
                result = trainer.fit()
        except Exception as exc:  # Ray Train V2 raises a worker's error from fit (local mode: as is)
            raise TrainingFailed(f"Ray Train run {run_name!r} failed: {exc}") from exc
        fit_wall, wall_end = time.perf_counter() - start, time.time()
        if mode == "in-process" and result.error is None and result.checkpoint is not None:
            result = _persist(result, storage_path, filesystem, run_name)
    if result.error is not None:
        raise TrainingFailed(f"Ray Train run {run_name!r} failed: {result.error}") from result.error
    if result.checkpoint is None:
        raise TrainingFailed(f"Ray Train run {run_name!r} finished without a checkpoint")
    returned: dict[str, Any] = result.return_value or {}
    with result.checkpoint.as_directory() as folder:
        weights = {name: Path(folder, checkpoint_file(name)).read_bytes() for name in net_names}
        history = json.loads(Path(folder, CHECKPOINT_HISTORY).read_text())
    return TrainRun(
        weights=weights, history=history, lineage=DataLineage.model_validate(returned["lineage"]),
        precision=returned.get("precision", "unknown"), device=returned.get("device", "unknown"),
        checkpoint_path=result.checkpoint.path, ray_start_s=session.start_s, fit_wall_s=fit_wall,
        plan=returned.get("plan", {}), ray_reused=session.reused,
        phases=fit_phases(returned.get("stamps"), wall_start, wall_end, history), mode=mode,
    )


@dataclass(frozen=True)
class _Persisted:
    """A finished in-process run whose last checkpoint now lives in the object store."""

    checkpoint: Any
    return_value: Any
    error: Any = None


def _persist(result, storage_path: str, filesystem, run_name: str) -> _Persisted:
    """Copy the in-process run's last checkpoint to ``<storage_path>/<run>/checkpoint_<n>/`` (where
    Ray Train puts a distributed run's), and point the result there."""
    from pyarrow import fs
    from ray.train import Checkpoint

    source = Path(result.checkpoint.path)
    destination = f"{storage_path}/{run_name}/checkpoint_{source.name}"
    target_fs = filesystem or fs.LocalFileSystem()
    target_fs.create_dir(destination, recursive=True)
    fs.copy_files(str(source), destination, source_filesystem=fs.LocalFileSystem(),
                  destination_filesystem=target_fs)
    return _Persisted(Checkpoint(destination, filesystem=target_fs), result.return_value)


def fit_phases(stamps: Optional[dict[str, float]], fit_start: float, fit_end: float,
               history: list[dict[str, float]]) -> dict[str, float]:
    """``TorchTrainer.fit`` split by rank 0's wall-clock stamps: ``startup`` (controller and worker
    processes, process group: until the train function runs), ``data`` (assembling the training
    set), ``epochs`` (the epochs' own time), ``other`` (networks, checkpoints, validation inside
    the function), ``teardown`` (after the function returns). Empty without stamps."""
    if not stamps:
        return {}
    epochs = sum(h.get("epoch_time_s", 0.0) for h in history)
    inside = stamps["fit_done"] - stamps["data_ready"]
    return {"startup": max(0.0, stamps["entered"] - fit_start),
            "data": max(0.0, stamps["data_ready"] - stamps["entered"]),
            "epochs": epochs, "other": max(0.0, inside - epochs),
            "teardown": max(0.0, fit_end - stamps["fit_done"])}
