"""Train a filter on Ray (the classifier's trainer, the filter's per-worker loop), calibrate its
gate on clean validation images and register it: what ``benchmarks/filter.py`` and a cycle's
filter remedy call."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional

import numpy as np

from daic.filters.config import FilterConfig
from daic.filters.registry import FilterRegistry, filter_model_name
from daic.models.card import ModelCard
from daic.models.registry import ModelRegistry
from daic.storage import ObjectStore
from daic.training.trainer import TrainRun, run_training


@dataclass(frozen=True)
class FilterOutcome:
    card: ModelCard
    run: TrainRun

    @property
    def version(self) -> str:
        return self.card.version

    @property
    def threshold(self) -> float:
        return float(self.card.metrics["gate_threshold"])


def clean_gate_metrics(classifier, net, config: FilterConfig) -> dict[str, float]:
    """Gate threshold from clean val scores, and clean val accuracy alone / gated / always-on."""
    from daic.data.mnist import load_split
    from daic.filters.apply import apply_filter
    import torch

    from daic.filters.apply import gate
    from daic.filters.gate import calibrate_threshold, residual_score
    from daic.models.inference import predict

    val = load_split("val", dataset=config.dataset)
    n = min(config.val_limit, len(val))
    images, labels = np.asarray(val.images[:n], np.float32), np.asarray(val.labels[:n])
    started = time.perf_counter()
    filtered = apply_filter(net, images)  # once: the gate's scores and both modes' inputs
    threshold = calibrate_threshold(residual_score(images, filtered), config.gate_clean_rate)
    entropy = net.entropy(torch.from_numpy(np.require(images, requirements=["C", "W"]))) if hasattr(net, "entropy") else None
    extra = {}
    if entropy is not None:  # the gate's uncertainty part, on the same clean images and rate
        with torch.no_grad():
            net.gate_entropy.fill_(calibrate_threshold(entropy.numpy(), config.gate_clean_rate))
        extra["gate_entropy_threshold"] = float(net.gate_entropy)
    alone = float((predict(classifier, images).predictions == labels).mean())
    gated_inputs, mask = gate(net, images, filtered, "gated", threshold)
    gated = predict(classifier, gated_inputs).predictions
    always = predict(classifier, filtered).predictions
    return {"gate_threshold": threshold, "val_accuracy_alone": alone, "calibrate_s": time.perf_counter() - started,
            "val_accuracy_gated": float((gated == labels).mean()),
            "val_accuracy_always": float((always == labels).mean()), "val_gated_share": float(mask.mean()), **extra}


def train_filter(store: ObjectStore, config: FilterConfig, *, notes: Optional[dict[str, str]] = None,
                 ray_address: Optional[str] = None, in_process: Optional[bool] = None) -> FilterOutcome:
    """One Ray Train run of the filter, then a new filter version wrapping ``config.classifier_version``."""
    from daic.filters.network import FilterNet
    from daic.filters.worker import FILTER_NET, filter_train_loop_per_worker
    from daic.models.weights import state_dict_from_bytes

    registry = FilterRegistry(store, config.classifier)
    # Fail before Ray starts: the classifier and the parent filter must exist, the pool must read.
    ModelRegistry(store, config.classifier).card(config.classifier_version)
    if config.warm_start_from is not None:
        registry.card(config.warm_start_from)
    if config.pool_key is not None:
        from daic.filters.data import load_pool

        load_pool(store, config.pool_key)
    started = time.perf_counter()
    run = run_training(config, store, filter_model_name(config.classifier), ray_address=ray_address, notes=notes,
                       in_process=in_process, train_loop=filter_train_loop_per_worker, net_names=(FILTER_NET,))
    net = FilterNet()
    net.load_state_dict(state_dict_from_bytes(run.weights[FILTER_NET], source="trained filter"))
    net.eval()
    classifier, _ = ModelRegistry(store, config.classifier).load_networks(config.classifier_version)
    if net.searches:
        aligner, _ = ModelRegistry(store, config.classifier).load_networks(config.classifier_version)
        net.attach_aligner(aligner)
    run_s = time.perf_counter() - started
    metrics = {**clean_gate_metrics(classifier, net, config), "train_wall_s": run.fit_wall_s, "run_s": run_s,
               "ray_start_s": run.ray_start_s, "epochs": float(config.epochs),
               "steps": float(run.history[-1].get("steps", 0)) if run.history else 0.0}
    card = registry.register_filter(net=net, data=run.lineage, wraps_version=config.classifier_version,
                                    parent=config.warm_start_from, metrics=metrics, history=run.history,
                                    train_config={**config.model_dump(mode="json"), "device": run.device,
                                                  "checkpoint_path": run.checkpoint_path})
    return FilterOutcome(card=card, run=run)
