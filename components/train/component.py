"""The KFP component: a thin wrapper; the work is in :mod:`.logic` (testable without kfp).

Resource requests, the GPU, node selector and tolerations of this step are set on the task in the
pipeline (``pipelines/assess_and_improve.py``) from pipeline parameters; the same node selector
and tolerations, and the per-worker resources, also size the RayJob on a cluster.

The step's own requests also come in as ``pod_*`` inputs: the local backend checks that the pod
has the GPUs its Ray workers ask for, and ``train.json`` records them. Passing them as inputs is
also what makes the KFP compiler (2.17) hand those parameters into the ``drop-confirmed``
sub-DAG: a parameter used only in ``set_cpu_request`` & co. inside a ``dsl.If`` is referenced by
the task but not declared by the sub-DAG, so neither a cluster's driver nor kfp.local can resolve it
(the same gap as kubeflow/pipelines#12617 for ``mount_pvc``).

The retraining method's inputs (``augment``, ``augment_share``; the semi-supervised
``unlabeled_limit``, ``pseudo_label_threshold``, ``consistency_weight``, ``bn_adapt``,
``self_training_rounds``) have defaults -- the measured default: ``select`` (corruption-robust
``chain`` augmentation or none, chosen per cycle on training labels held out of both candidates),
no semi-supervised term (docs/training.md) -- so the pipeline passes them only to change them.
"""
from typing import NamedTuple

from kfp import dsl

from daic.components.images import image_for


@dsl.component(base_image=image_for("train"), packages_to_install=[], install_kfp_package=False)
def train(
    store_url: str,
    cycle: str,
    model_name: str,
    champion_version: str,
    train_backend: str,
    ray_address: str,
    ray_workers: int,
    cpus_per_worker: int,
    gpus_per_worker: int,
    memory_per_worker: str,
    epochs: int,
    learning_rate: float,
    operational_oversample: int,
    base_limit: int,
    reference_shift_per_condition: int,
    seed: int,
    namespace: str,
    node_selector: dict,
    tolerations: list,
    timeout_s: int,
    pod_cpu_request: str,
    pod_memory_request: str,
    pod_gpus: int,
    batch_size: int,
    precision: str,
    ray_cluster: str,
    model: dsl.Output[dsl.Model],
    augment: str = "select",
    augment_share: float = 0.5,
    unlabeled_limit: int = 0,
    pseudo_label_threshold: float = 0.0,
    consistency_weight: float = 0.0,
    bn_adapt: str = "off",
    self_training_rounds: int = 0,
) -> NamedTuple("Outputs", [("challenger_version", str)]):
    """Retrain from the champion with the cycle's labeled batches on Ray; returns the new version."""
    import json
    from collections import namedtuple

    from daic.components.train.logic import TrainConfig, run

    config = TrainConfig(model_name=model_name, champion_version=champion_version, backend=train_backend,
                         ray_address=ray_address, workers=ray_workers, cpus_per_worker=cpus_per_worker,
                         gpus_per_worker=gpus_per_worker, memory_per_worker=memory_per_worker,
                         epochs=epochs, learning_rate=learning_rate,
                         operational_oversample=operational_oversample, base_limit=base_limit,
                         reference_shift_per_condition=reference_shift_per_condition, seed=seed, namespace=namespace,
                         node_selector=node_selector, tolerations=tolerations, timeout_s=timeout_s,
                         pod_cpu_request=pod_cpu_request, pod_memory_request=pod_memory_request,
                         pod_gpus=pod_gpus, batch_size=batch_size, precision=precision, ray_cluster=ray_cluster,
                         augment=augment, augment_share=augment_share, unlabeled_limit=unlabeled_limit,
                         pseudo_label_threshold=pseudo_label_threshold, consistency_weight=consistency_weight,
                         bn_adapt=bn_adapt, self_training_rounds=self_training_rounds)
    result = run(store_url, cycle, config)
    with open(model.path, "w") as fh:
        json.dump(result.card, fh, indent=2, sort_keys=True, default=str)
    model.metadata.update({"model_name": model_name, "version": result.version,
                           "parent": result.parent, "backend": train_backend})
    return namedtuple("Outputs", ["challenger_version"])(result.version)
