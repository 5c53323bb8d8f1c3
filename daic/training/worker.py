"""What each Ray Train worker runs: load the data, build (or warm-start) the networks, call
``daic.training.loop.fit`` with Ray's device and DDP wrapper, report metrics every epoch and a
checkpoint from rank 0.

Every worker reads the data itself (the base split ships with the package's image; labeled
batches and warm-start weights come from the object store by URL), so nothing large travels
through the driver.
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_HISTORY = "history.json"


def checkpoint_file(net_name: str) -> str:
    return f"{net_name}.pt"


def in_process(payload: dict[str, Any]) -> bool:
    """Running in the driver (Ray Train's local mode, ``execution_mode`` "in-process")."""
    return bool(payload.get("checkpoint_dir"))


def worker_device(use_gpu: bool, payload: dict[str, Any]) -> torch.device:
    """Ray's device for a Ray worker; in-process, the driver's own (no Ray, so no Ray GPU ids)."""
    if not use_gpu:
        return torch.device("cpu")
    if in_process(payload):
        from daic.training.precision import select_device

        return select_device(True)
    import ray.train.torch

    return ray.train.torch.get_device()


def worker_wrap(payload: dict[str, Any]):
    """DDP through Ray Train's ``prepare_model`` for Ray workers; nothing in-process (one worker,
    no process group; ``fit`` moves the networks to the device itself)."""
    if in_process(payload):
        return lambda net: net
    import ray.train.torch

    return ray.train.torch.prepare_model


def epoch_reporter(payload: dict[str, Any], rank: int, history: list[dict[str, float]]):
    """The per-epoch callback of a worker's fit: every rank reports its metrics to Ray Train; rank 0
    also appends them to ``history`` and reports a checkpoint of ``nets`` (name -> network)."""
    import ray.train

    progress = {"store": None}

    def on_epoch(metrics: dict[str, float], nets: dict[str, torch.nn.Module]) -> None:
        if rank != 0:
            ray.train.report(metrics)
            return
        history.append(metrics)
        if payload.get("progress_key"):  # the driver shows it while fit runs (daic.training.progress)
            from daic.storage import open_store

            progress["store"] = progress["store"] or open_store(payload["store_url"])
            progress["store"].put_json(payload["progress_key"],
                                       {"epochs": payload["config"].get("epochs"), "history": history})
        if in_process(payload):
            # In-process (Ray Train's local mode): the reported directory is the checkpoint itself,
            # so it must outlive this call; the driver copies the last one to the object store.
            folder = Path(payload["checkpoint_dir"], f"{int(metrics['epoch']):06d}")
            folder.mkdir(parents=True, exist_ok=True)
            write_checkpoint(folder, nets, history)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(folder)))
            return
        with tempfile.TemporaryDirectory() as folder:
            write_checkpoint(Path(folder), nets, history)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))

    return on_epoch


def write_checkpoint(folder: Path, nets: dict[str, torch.nn.Module], history: list[dict[str, float]]) -> None:
    from daic.models.weights import state_dict_to_bytes

    for name, net in nets.items():
        Path(folder, checkpoint_file(name)).write_bytes(state_dict_to_bytes(getattr(net, "module", net)))
    Path(folder, CHECKPOINT_HISTORY).write_text(json.dumps(history))


def train_loop_per_worker(payload: dict[str, Any]) -> dict[str, Any]:
    import ray.train

    from daic.models.registry import ModelRegistry
    from daic.storage import open_store
    from daic.training.config import TrainConfig
    from daic.training.data import assemble
    from daic.training.loop import MAIN, SHADOW, EvalSet, WarmStart, fit

    entered = time.time()
    config = TrainConfig.model_validate(payload["config"])
    torch.set_num_threads(config.cpus_per_worker)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = worker_device(config.use_gpu, payload)
    store = open_store(payload["store_url"])
    data = assemble(config, store, notes=payload.get("notes"))
    unlabeled = None
    if config.unlabeled_key:
        from daic.training.semi_supervised import load_unlabeled

        unlabeled = load_unlabeled(store, config.unlabeled_key)

    warm = None
    if config.warm_start_from:
        model_bytes, shadow_bytes = ModelRegistry(store, payload["model_name"]).weights_bytes(config.warm_start_from)
        warm = WarmStart({MAIN: model_bytes, SHADOW: shadow_bytes})

    val = None
    if rank == 0:
        from daic.data.mnist import load_split

        split = load_split("val", dataset=config.dataset)
        n = len(split) if config.val_limit is None else min(config.val_limit, len(split))
        val = EvalSet(split.images[:n], split.labels[:n])

    history: list[dict[str, float]] = []
    on_epoch = epoch_reporter(payload, rank, history)
    data_ready = time.time()
    result = fit(config, data.images, data.labels, n_base=data.n_base, device=device, rank=rank, world_size=world,
                 warm=warm, wrap=worker_wrap(payload), val=val, on_epoch=on_epoch, unlabeled=unlabeled,
                 operational_weights=data.operational_weights)
    return {
        "precision": result.precision,
        "plan": result.plan.as_record(),
        "device": str(device),
        "lineage": data.lineage.model_dump(mode="json"),
        "history": history,
        "threads": torch.get_num_threads(),
        # wall-clock stamps (time.time) so the driver can split the fit into start-up, data, epochs, teardown
        "stamps": {"entered": entered, "data_ready": data_ready, "fit_done": time.time()},
    }
