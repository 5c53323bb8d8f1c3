"""The one place the pipeline's components touch the model registry and the trainer.

``daic.models.registry`` (versions, cards, the champion pointer) and ``daic.training`` (Ray Train
retraining, the RayJob entrypoint and manifest) belong to the training side; keeping every call
here means a change in their signatures touches one module of the pipeline.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from daic.storage import ObjectStore

#: Where the RayJob's driver (``daic retrain --result-key``) leaves its outcome for the train step.
TRAIN_OUTPUT = "train-output.json"


def _registry():
    from daic.models import registry

    return registry


def champion_version(store: ObjectStore, name: str, version: str | None = None) -> str:
    """``version`` when given, else the registry's champion of ``name``."""
    return version or _registry().champion(store, name)


def current_champion(store: ObjectStore, name: str) -> str | None:
    """The champion, or None when none has been promoted yet."""
    pointer = _registry().ModelRegistry(store, name).champion_pointer()
    return pointer.version if pointer else None


def previous_champion(store: ObjectStore, name: str) -> str | None:
    """The champion before the current one (None: none, or no champion yet)."""
    pointer = _registry().ModelRegistry(store, name).champion_pointer()
    return pointer.previous if pointer else None


def check_champion(store: ObjectStore, name: str, expected: str | None) -> None:
    """Raise ``ChampionConflict`` when ``expected`` is given and is not the champion now."""
    if expected is not None and current_champion(store, name) != expected:
        raise _registry().ChampionConflict(
            f"model {name!r}: the champion is {current_champion(store, name)!r}, not {expected!r} "
            "which the challenger was evaluated against; evaluate again")


def set_champion(store: ObjectStore, name: str, version: str, expected_current: str | None = None) -> None:
    """Make ``version`` the champion. With ``expected_current``, a compare-and-set: raises
    ``daic.models.registry.ChampionConflict`` (and writes nothing) when the champion is no longer the
    one the caller judged the challenger against."""
    if expected_current is None:
        _registry().set_champion(store, name, version)
    else:
        _registry().set_champion(store, name, version, expected_current=expected_current)


def load_model(store: ObjectStore, name: str, version: str):
    """The champion-family network of a version, in eval mode."""
    model, _shadow = _registry().load_networks(store, name, version)
    model.eval()
    return model


def card(store: ObjectStore, name: str, version: str) -> dict[str, Any]:
    """The version's model card as JSON (parent, metrics, data lineage)."""
    return _registry().load_card(store, name, version)


def champion_reference_accuracy(store: ObjectStore, name: str, version: str | None = None) -> float:
    """The clean test accuracy recorded in the champion's card (the drop is measured from it)."""
    version = champion_version(store, name, version)
    metrics = card(store, name, version).get("metrics") or {}
    if "test_accuracy" in metrics:
        return float(metrics["test_accuracy"])
    raise ValueError(f"model card of {name} {version} records no test_accuracy (metrics: {sorted(metrics)}); "
                     "give reference_accuracy or threshold")


def predict(model, images: np.ndarray) -> np.ndarray:
    """Predicted classes of float32 images (N, 28, 28), on CPU, in batches."""
    from daic.models.inference import predict as outputs

    return outputs(model, np.asarray(images, dtype=np.float32)).predictions


def training_fields(config) -> dict[str, Any]:
    """The component's TrainConfig as ``daic.training.config.TrainConfig`` fields (what
    ``daic.training.retrain`` takes as ``**config_fields``).

    ``workers``/``cpus_per_worker``/``gpus_per_worker`` describe Ray nodes (pods on a cluster); Ray
    Train runs one worker per GPU, so they map the way ``daic.training.rayjob.training_entrypoint``
    maps them for a RayJob: the same settings mean the same training on every backend.
    ``base_limit`` 0 means the whole base split.
    """
    from daic.training.rayjob import ray_train_workers

    gpus = config.gpus_per_worker
    fields: dict[str, Any] = {
        "epochs": config.epochs, "lr": config.learning_rate, "seed": config.seed,
        "num_workers": ray_train_workers(config.workers, gpus),
        "cpus_per_worker": max(1, config.cpus_per_worker // max(1, gpus)), "use_gpu": gpus > 0,
        "operational_oversample": config.operational_oversample,
        "augment": config.augment, "augment_share": config.augment_share,
        "operational_share": config.operational_share or None,
    }
    if config.base_limit:
        fields["base_limit"] = config.base_limit
    if config.batch_size:
        fields["batch_size"] = config.batch_size
    fields["precision"] = config.precision
    return fields


def semi_supervised_fields(config, unlabeled_key: str) -> dict[str, Any]:
    """The component's semi-supervised settings as TrainConfig fields (none without a pool)."""
    if not unlabeled_key:
        return {}
    return {"unlabeled_key": unlabeled_key,
            "pseudo_label_threshold": config.pseudo_label_threshold or None,
            "consistency_weight": config.consistency_weight, "bn_adapt": config.bn_adapt,
            "self_training_rounds": config.self_training_rounds,
            "self_training_threshold": config.self_training_threshold}


def retrain(store: ObjectStore, name: str, parent: str, labels_prefix: str, config, ray_address: str | None,
            cycle: str, unlabeled_key: str = "") -> str:
    """Warm-start ``parent`` with every labeled batch under ``labels_prefix`` on Ray and register the
    result (not promoted: evaluate decides); returns the new version."""
    from daic.models.reference import ReferenceConfig
    from daic.training.workflow import retrain as train_from

    reference = ReferenceConfig(shift_per_condition=config.reference_shift_per_condition)
    outcome = train_from(store, name, parent, labels_prefix, promote="never", ray_address=ray_address,
                         lineage={"cycle": cycle}, reference_config=reference, **training_fields(config),
                         **semi_supervised_fields(config, unlabeled_key))
    return outcome.version


def rayjob_entrypoint(store_url: str, cycle: str, name: str, parent: str, labels_prefix: str, config,
                      result_key: str, unlabeled_key: str = "") -> list[str]:
    """argv of the RayJob's driver: ``daic retrain ... --result-key KEY`` with the step's settings.

    ``daic.training.rayjob.training_entrypoint`` covers the sizes, epochs, learning rate and seed;
    the labeled-data mix and the oracle reference's size are ``daic retrain`` options it does not
    take, so they are appended here.
    """
    from daic.training.rayjob import training_entrypoint

    argv = training_entrypoint(
        "retrain", store_url=store_url, model_name=name, num_pods=config.workers,
        cpus_per_pod=config.cpus_per_worker, gpus_per_pod=config.gpus_per_worker, parent=parent,
        labels_prefix=labels_prefix, epochs=config.epochs, lr=config.learning_rate, seed=config.seed,
        result_key=result_key, notes={"cycle": cycle}, batch_size=config.batch_size or None,
        precision=config.precision)
    argv += ["--oversample", str(config.operational_oversample),
             "--shift-per-condition", str(config.reference_shift_per_condition),
             "--augment", config.augment, "--augment-share", str(config.augment_share),
             "--operational-share", str(config.operational_share)]
    if config.base_limit:
        argv += ["--base-limit", str(config.base_limit)]
    semi = semi_supervised_fields(config, unlabeled_key)
    if semi:
        argv += ["--unlabeled", unlabeled_key, "--consistency-weight", str(semi["consistency_weight"]),
                 "--bn-adapt", semi["bn_adapt"], "--self-training-rounds", str(semi["self_training_rounds"]),
                 "--self-training-threshold", str(semi["self_training_threshold"])]
        if semi["pseudo_label_threshold"] is not None:
            argv += ["--pseudo-label-threshold", str(semi["pseudo_label_threshold"])]
    return argv


def render_rayjob(store_url: str, cycle: str, name: str, parent: str, labels_prefix: str, config,
                  unlabeled_key: str = "") -> dict:
    """The RayJob manifest for this retraining: ``daic.training.rayjob.render_rayjob`` on a spec
    sized from the step's settings, running the tagged train image, named after the cycle; submitted
    to the long-lived RayCluster ``config.ray_cluster`` (``daic-ray``) unless that is empty."""
    from daic.components.cycle_store import key
    from daic.components.images import image_for
    from daic.components.train.rayjob import rayjob_name
    from daic.training.rayjob import RayJobSpec, render_rayjob as render, scheduling_for, worker_memory

    node_selector, tolerations = scheduling_for(config.gpus_per_worker, dict(config.node_selector),
                                                list(config.tolerations))
    spec = RayJobSpec(
        name=rayjob_name(cycle), namespace=config.namespace or None, image=image_for("train"),
        entrypoint=rayjob_entrypoint(store_url, cycle, name, parent, labels_prefix, config,
                                     key(cycle, TRAIN_OUTPUT), unlabeled_key),
        num_workers=config.workers, cpus_per_worker=str(config.cpus_per_worker),
        memory_per_worker=config.memory_per_worker or worker_memory(config.gpus_per_worker),
        gpus_per_worker=config.gpus_per_worker,
        node_selector=node_selector, tolerations=tolerations,
        active_deadline_seconds=config.timeout_s, cluster_selector=config.ray_cluster or None,
        labels={"app.kubernetes.io/part-of": "daic", "app.kubernetes.io/component": "retrain"},
    )
    return render(spec)
