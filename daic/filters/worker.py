"""What each Ray Train worker runs for a filter: load the frozen classifier and the data, call
:func:`daic.filters.fit.fit_filter` with the classifier worker's device, DDP wrapper and epoch
reporter (daic.training.worker: the same in a Ray worker and in-process). The checkpoint layout is
the classifier's (daic.training.worker's ``write_checkpoint``), with one network, ``filter``.
"""
from __future__ import annotations

import time
from typing import Any

import torch

FILTER_NET = "filter"


def filter_train_loop_per_worker(payload: dict[str, Any]) -> dict[str, Any]:
    import ray.train

    from daic.filters.config import FilterConfig
    from daic.filters.data import assemble
    from daic.filters.fit import fit_filter
    from daic.filters.registry import FilterRegistry
    from daic.models.card import DataLineage
    from daic.models.registry import ModelRegistry
    from daic.storage import open_store
    from daic.training.worker import epoch_reporter, worker_device, worker_wrap

    entered = time.time()
    config = FilterConfig.model_validate(payload["config"])
    torch.set_num_threads(config.cpus_per_worker)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = worker_device(config.use_gpu, payload)
    store = open_store(payload["store_url"])
    data = assemble(config, store)
    classifier, _ = ModelRegistry(store, config.classifier).load_networks(config.classifier_version)
    warm = None
    if config.warm_start_from:
        warm = FilterRegistry(store, config.classifier).state_dict(config.warm_start_from)
    history: list[dict[str, float]] = []
    report = epoch_reporter(payload, rank, history)

    def on_epoch(metrics: dict[str, float], net: torch.nn.Module) -> None:
        report(metrics, {FILTER_NET: net})

    data_ready = time.time()
    fit_filter(config, data, classifier, device=device, rank=rank, world_size=world, warm=warm,
               wrap=worker_wrap(payload), on_epoch=on_epoch)
    notes = dict(payload.get("notes") or {})
    notes.update({"wraps": f"{config.classifier}/{config.classifier_version}",
                  "corruptions": ",".join(config.corruptions), "pool": config.pool_key or "",
                  "pool_count": str(len(data.pool))})
    lineage = DataLineage(dataset=config.dataset, base_count=len(data.clean), notes=notes)
    return {"precision": "fp32", "device": str(device), "lineage": lineage.model_dump(mode="json"),
            "history": history, "stamps": {"entered": entered, "data_ready": data_ready, "fit_done": time.time()}}
