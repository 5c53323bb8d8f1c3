"""The one place the pipeline's components touch the model registry and the trainer.

``daic.models.registry`` (versions, cards, the champion pointer) and ``daic.training`` (Ray Train
retraining, RayJob rendering) are written by the training side; serving already relies on
``registry.champion``, ``registry.load_networks`` and ``registry.load_oracle_reference``. Keeping
every call here means a change in their signatures touches one module of the pipeline.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from daic.storage import ObjectStore


def _registry():
    from daic.models import registry

    return registry


def champion_version(store: ObjectStore, name: str, version: str | None = None) -> str:
    """``version`` when given, else the registry's champion of ``name``."""
    return version or _registry().champion(store, name)


def set_champion(store: ObjectStore, name: str, version: str) -> None:
    _registry().set_champion(store, name, version)


def load_model(store: ObjectStore, name: str, version: str):
    """The champion-family network of a version, in eval mode."""
    model, _shadow = _registry().load_networks(store, name, version)
    model.eval()
    return model


def card(store: ObjectStore, name: str, version: str) -> dict[str, Any]:
    return _registry().load_card(store, name, version)


def champion_reference_accuracy(store: ObjectStore, name: str, version: str | None = None) -> float:
    """The clean test accuracy recorded in the champion's card (the drop is measured from it)."""
    version = champion_version(store, name, version)
    metrics = card(store, name, version).get("metrics") or {}
    for key in ("test_accuracy", "accuracy"):
        if key in metrics:
            return float(metrics[key])
    raise ValueError(f"model card of {name} {version} records no test accuracy (metrics: {sorted(metrics)}); "
                     "give reference_accuracy or threshold")


def predict(model, images: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Predicted classes of float32 images (N, 28, 28), on CPU, in batches."""
    import torch

    out = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            x = torch.as_tensor(np.asarray(images[start:start + batch_size], dtype=np.float32))
            out.append(model(x).argmax(dim=1).numpy())
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def retrain(store: ObjectStore, name: str, parent: str, labels_prefix: str, config, ray_address: str | None,
            cycle: str) -> str:
    """Retrain ``parent`` with every labeled batch under ``labels_prefix`` on Ray; the new version."""
    from daic import training

    return training.retrain(store, name, parent, labels_prefix, epochs=config.epochs,
                            learning_rate=config.learning_rate, seed=config.seed, num_workers=config.workers,
                            cpus_per_worker=config.cpus_per_worker, gpus_per_worker=config.gpus_per_worker,
                            ray_address=ray_address, lineage={"cycle": cycle})


def render_rayjob(store_url: str, cycle: str, name: str, parent: str, labels_prefix: str, config) -> dict:
    """The RayJob manifest for this retraining (rendered by the training side)."""
    from daic.training import rayjob

    return rayjob.render_rayjob(store_url=store_url, model_name=name, parent_version=parent,
                                labels_prefix=labels_prefix, epochs=config.epochs,
                                learning_rate=config.learning_rate, seed=config.seed,
                                num_workers=config.workers, cpus_per_worker=config.cpus_per_worker,
                                gpus_per_worker=config.gpus_per_worker,
                                memory_per_worker=config.memory_per_worker, node_selector=config.node_selector,
                                tolerations=config.tolerations, namespace=config.namespace or None,
                                name=f"retrain-{cycle}".lower()[:63],
                                result_key=f"cycles/{cycle}/train-output.json")
