"""Train (or retrain) on Ray, evaluate, and register the result: what ``daic train``,
``daic retrain`` and the pipeline's train component call.

Retraining is a warm start (continual development, Gesmundo 2022: one model grown by successive
extensions rather than trial models thrown away): both networks start from the parent version's
weights, are fine-tuned on the base split plus the labeled operational batches, and the new
version records the parent, so the registry's lineage is the model's history.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from daic.models.card import ModelCard
from daic.models.reference import ReferenceConfig
from daic.models.registry import ModelRegistry
from daic.storage import ObjectStore
from daic.training.config import TrainConfig
from daic.training.data import load_labeled_batches
from daic.training.trainer import TrainRun, run_training

Promote = Literal["if-none", "always", "never"]

# Fine-tuning defaults for a retrain (an initial run uses TrainConfig's defaults).
RETRAIN_DEFAULTS = {"epochs": 2, "lr": 1e-3, "operational_oversample": 10, "operational_share": 0.3,
                    "augment": "select"}


@dataclass(frozen=True)
class Outcome:
    card: ModelCard
    run: TrainRun
    promoted: bool

    @property
    def version(self) -> str:
        return self.card.version


def clean_test_metrics(model, shadow, dataset: str, limit: Optional[int] = None) -> dict[str, float]:
    """Clean test-split accuracy of both networks (the reference the drop is measured from)."""
    from daic.data.mnist import load_split
    from daic.models.inference import accuracy

    test = load_split("test", dataset=dataset)
    n = len(test) if limit is None else min(limit, len(test))
    return {"test_accuracy": accuracy(model, test.images[:n], test.labels[:n]),
            "shadow_test_accuracy": accuracy(shadow, test.images[:n], test.labels[:n])}


def train_and_register(
    store: ObjectStore,
    name: str,
    config: TrainConfig,
    *,
    promote: Promote = "if-none",
    ray_address: Optional[str] = None,
    notes: Optional[dict[str, str]] = None,
    reference_config: Optional[ReferenceConfig] = None,
    test_limit: Optional[int] = None,
    verbose: bool = False,
) -> Outcome:
    """One Ray Train run, then a new registry version whose parent is ``config.warm_start_from``."""
    from daic.models.weights import network_from_bytes

    registry = ModelRegistry(store, name)
    # Fail before starting Ray: a missing parent or a malformed labeled batch is the caller's error.
    if config.warm_start_from is not None:
        registry.card(config.warm_start_from)
    if config.labels_prefix is not None:
        load_labeled_batches(store, config.labels_prefix)
    if config.unlabeled_key is not None:
        from daic.training.semi_supervised import load_unlabeled

        load_unlabeled(store, config.unlabeled_key)
    champion_before = registry.champion_pointer()
    run = run_training(config, store, name, ray_address=ray_address, notes=notes, verbose=verbose)
    model = network_from_bytes("small_cnn", run.weights["model"], source="trained model")
    shadow = network_from_bytes("shadow_net", run.weights["shadow"], source="trained shadow")
    final = run.final_metrics
    metrics = {
        **{k: final[k] for k in ("val_accuracy", "shadow_val_accuracy") if k in final},
        **clean_test_metrics(model, shadow, config.dataset, test_limit),
        "train_wall_s": run.fit_wall_s,
        "ray_start_s": run.ray_start_s,
        "epochs": float(config.epochs),
        "samples_per_s_last_epoch": final.get("samples_per_s", 0.0),
    }
    card = registry.register(
        model=model, shadow=shadow, data=run.lineage, parent=config.warm_start_from, metrics=metrics,
        history=run.history,
        train_config={**config.model_dump(mode="json"), "resolved_precision": run.precision, "device": run.device,
                      "checkpoint_path": run.checkpoint_path},
        reference_config=reference_config or ReferenceConfig(dataset=config.dataset),
        fit_assessor=True,  # the sidecar loads it instead of fitting (issue 22)
    )
    promoted = False
    if promote == "always" or (promote == "if-none" and champion_before is None):
        expected = champion_before.version if champion_before else None
        registry.promote(card.version, expected_current=expected)
        promoted = True
    return Outcome(card=card, run=run, promoted=promoted)


def retrain(
    store: ObjectStore,
    name: str,
    parent: str = "champion",
    labels_prefix: Optional[str] = None,
    *,
    promote: Promote = "never",
    ray_address: Optional[str] = None,
    lineage: Optional[dict[str, str]] = None,
    reference_config: Optional[ReferenceConfig] = None,
    test_limit: Optional[int] = None,
    verbose: bool = False,
    **config_fields,
) -> Outcome:
    """Warm-start from ``parent`` ("champion", "latest" or a version) with the labeled batches
    under ``labels_prefix``; ``config_fields`` override ``RETRAIN_DEFAULTS`` and TrainConfig's."""
    version = ModelRegistry(store, name).resolve(parent)
    config = TrainConfig(**{**RETRAIN_DEFAULTS, **config_fields, "warm_start_from": version,
                            "labels_prefix": labels_prefix})
    return train_and_register(store, name, config, promote=promote, ray_address=ray_address, notes=lineage,
                              reference_config=reference_config, test_limit=test_limit, verbose=verbose)
