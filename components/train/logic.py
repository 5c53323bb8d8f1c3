"""train: retrain from the champion with the labeled batches, on Ray; register the challenger.

Backends:

* ``local``: Ray in this process (``ray.init()`` on the step's own machine or pod), the embedded
  default and what ``kfp.local`` runs;
* ``ray-address``: an existing Ray cluster (``ray_address`` or ``RAY_ADDRESS``);
* ``rayjob``: a KubeRay ``RayJob`` (``daic.training.rayjob.render_rayjob``, named by
  :func:`.rayjob.rayjob_name`), submitted through the Kubernetes API and waited for
  (:mod:`.rayjob`); its driver, ``daic retrain ... --result-key cycles/<c>/train-output.json``,
  leaves the new version there. By default the job runs on the long-lived autoscaling RayCluster
  ``ray_cluster`` (``daic-ray``: warm head, GPU workers scaled from zero); ``ray_cluster=""``
  brings a fresh cluster per job.

Every backend runs the same training: a warm start from the champion (``daic.training.retrain``)
on the base split (``base_limit`` > 0: its first images) plus the labeled batches, each labeled
example repeated ``operational_oversample`` times per epoch; the challenger is registered but not
promoted (evaluate decides).

The trainer reads every labeled batch under ``labels/`` (this cycle's and earlier cycles'); the
held-out inputs are not there (:mod:`daic.components.cycle_store`). Writes ``cycles/<c>/train.json``.

Two attempts of one cycle at once (a KFP retry while the first still trains) each register a
version, but the cycle keeps one: ``train.json`` is written only if it is still the record that was
there when the attempt began (a compare-and-set on its ETag), and an attempt that finds another's
record written meanwhile adopts it -- it returns the recorded version (and its parent), so the
version the step hands to evaluate, and evaluate writes into ``result.json``, is always the one in
``train.json``. The adopting attempt's own version stays in the registry, registered but never
used (logged); the registry keeps every version by design. A rerun after an attempt finished
trains again and replaces the record.
"""
from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, StrictStr

from daic.components import cycle_store
from daic.components.train import registry_access
from daic.models.card import check_version
from daic.storage import KeyNotFound, ObjectStore, PreconditionFailed, open_store
from daic.storage.parsed import read_object

log = logging.getLogger(__name__)

BACKENDS = ("local", "ray-address", "rayjob")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
LABELS_PREFIX = "labels/"
# "select": chain or off, chosen per cycle on training labels held out of the candidates' fits
# (daic.training.loop.select_recipe).
AUGMENT = ("off", "chain", "augmix", "select")


@dataclass(frozen=True)
class TrainConfig:
    model_name: str = "mnist"
    champion_version: str = ""
    backend: str = "local"
    ray_address: str = ""
    workers: int = 1
    cpus_per_worker: int = 1
    gpus_per_worker: int = 0
    memory_per_worker: str = ""  # "": by worker kind (daic.training.rayjob.worker_memory)
    epochs: int = 2
    learning_rate: float = 1e-3
    operational_oversample: int = 10
    # Labelled inputs make up at least this share of each epoch (their repeats raised above
    # operational_oversample where the base split would drown them); 0: operational_oversample alone.
    operational_share: float = 0.3
    base_limit: int = 0  # 0: the whole base split
    reference_shift_per_condition: int = 100  # oracle reference size of the new version (0: clean only)
    seed: int = 0
    namespace: str = ""
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, Any]] = field(default_factory=list)
    timeout_s: int = 7200
    poll_s: float = 10.0
    # The step's own pod (set on the task from the same pipeline parameters; recorded, and checked
    # against what local Ray asks for).
    pod_cpu_request: str = ""
    pod_memory_request: str = ""
    pod_gpus: int = 0
    # Per Ray Train worker; 0: chosen on the worker for its device (daic.training.device_plan).
    batch_size: int = 0
    precision: str = "auto"
    # rayjob backend: the long-lived RayCluster the job is submitted to; "": a fresh cluster per job.
    ray_cluster: str = "daic-ray"
    # Semi-supervised retraining (daic.training.semi_supervised) on up to unlabeled_limit unsampled
    # inputs of the cycle's window (0: none, and the options below must stay off).
    unlabeled_limit: int = 0
    pseudo_label_threshold: float = 0.0  # 0: no pseudo-labels
    consistency_weight: float = 0.0  # 0: no consistency term
    bn_adapt: str = "off"  # off | pool | pool+base
    # Corruption-robust retraining (daic.training.augment): base examples distorted by a fixed
    # family of generic operations, labelled examples given a weak view; "off" | "chain" | "augmix" |
    # "select" (chain or off, whichever classifies training labels held out of both candidates better).
    augment: str = "select"
    augment_share: float = 0.5  # share of each batch's base examples distorted
    # Self-training rounds with the challenger as teacher on the unlabelled pool (0: off).
    self_training_rounds: int = 0
    self_training_threshold: float = 0.9

    @property
    def semi_supervised(self) -> bool:
        return (self.pseudo_label_threshold > 0 or self.consistency_weight > 0 or self.bn_adapt != "off"
                or self.self_training_rounds > 0)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"train_backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        for name in ("workers", "cpus_per_worker", "epochs", "timeout_s", "operational_oversample"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if isinstance(self.gpus_per_worker, bool) or not isinstance(self.gpus_per_worker, int) \
                or self.gpus_per_worker < 0:
            raise ValueError(f"gpus_per_worker must be an integer >= 0, got {self.gpus_per_worker!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"train_precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.precision == "fp16" and not self.gpus_per_worker:
            raise ValueError("train_precision 'fp16' needs GPU workers (gpus_per_worker >= 1)")
        if self.ray_cluster and not _DNS_LABEL.match(self.ray_cluster):
            raise ValueError(f"ray_cluster must be a RayCluster name (DNS-1123 label) or empty, got {self.ray_cluster!r}")
        if self.memory_per_worker and not _QUANTITY.match(str(self.memory_per_worker)):
            raise ValueError(f"memory_per_worker must be a Kubernetes quantity such as 8Gi, got {self.memory_per_worker!r}")
        if not 0 <= self.pseudo_label_threshold <= 1:
            raise ValueError(f"pseudo_label_threshold must be in [0, 1] (0: off), got {self.pseudo_label_threshold!r}")
        if not 0 <= self.consistency_weight <= 100:
            raise ValueError(f"consistency_weight must be in [0, 100] (0: off), got {self.consistency_weight!r}")
        if self.bn_adapt not in ("off", "pool", "pool+base"):
            raise ValueError(f"bn_adapt must be off, pool or pool+base, got {self.bn_adapt!r}")
        if not 0 <= self.operational_share < 1:
            raise ValueError(f"operational_share must be in [0, 1) (0: off), got {self.operational_share!r}")
        if self.augment not in AUGMENT:
            raise ValueError(f"augment must be one of {', '.join(AUGMENT)}, got {self.augment!r}")
        if not 0 <= self.augment_share <= 1:
            raise ValueError(f"augment_share must be in [0, 1], got {self.augment_share!r}")
        if isinstance(self.self_training_rounds, bool) or not isinstance(self.self_training_rounds, int) \
                or not 0 <= self.self_training_rounds <= 5:
            raise ValueError(f"self_training_rounds must be an integer in [0, 5], got {self.self_training_rounds!r}")
        if not 0 < self.self_training_threshold <= 1:
            raise ValueError(f"self_training_threshold must be in (0, 1], got {self.self_training_threshold!r}")
        if self.semi_supervised and not self.unlabeled_limit:
            raise ValueError("pseudo_label_threshold, consistency_weight, bn_adapt and self_training_rounds need "
                             "unlabeled_limit >= 1 "
                             "(how many unlabelled inputs of the window to use)")
        for name in ("base_limit", "reference_shift_per_condition", "seed", "batch_size", "unlabeled_limit"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        if not 0 < self.learning_rate < 1:
            raise ValueError(f"learning_rate must be in (0, 1), got {self.learning_rate!r}")
        if isinstance(self.pod_gpus, bool) or not isinstance(self.pod_gpus, int) or self.pod_gpus < 0:
            raise ValueError(f"train_gpus must be an integer >= 0, got {self.pod_gpus!r}")
        if self.backend == "local" and self.gpus_per_worker and self.pod_gpus < self.workers * self.gpus_per_worker:
            raise ValueError(
                f"train_backend 'local' runs Ray inside the train step's pod: {self.workers} worker(s) x "
                f"{self.gpus_per_worker} GPU(s) need train_gpus >= {self.workers * self.gpus_per_worker}, "
                f"got {self.pod_gpus}")
        if self.backend == "ray-address" and not (self.ray_address or os.environ.get("RAY_ADDRESS")):
            raise ValueError("train_backend 'ray-address' needs ray_address (or RAY_ADDRESS)")
        if not isinstance(self.node_selector, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in self.node_selector.items()):
            raise ValueError(f"node_selector must map label names to values (strings), got {self.node_selector!r}")
        if not isinstance(self.tolerations, list) or not all(isinstance(t, dict) for t in self.tolerations):
            raise ValueError(f"tolerations must be a list of toleration objects, got {self.tolerations!r}")


class TrainConflict(RuntimeError):
    """Another train attempt of the same cycle changed its record in a way this one cannot adopt."""


# A registry version as a record names it ('v0002'): anything else is no version to hand on.
Version = Annotated[StrictStr, AfterValidator(check_version)]


class TrainRecord(BaseModel):
    """What is read back from ``train.json`` (another attempt's record, adopted): the version and
    its parent, both named."""

    model_config = ConfigDict(extra="allow")
    version: Version
    parent: Version


class TrainOutput(BaseModel):
    """What is read back from the RayJob driver's ``train-output.json`` (``daic retrain
    --result-key``, daic.commands.train.report): the version it registered and its parent."""

    model_config = ConfigDict(extra="allow")
    version: Version
    parent: StrictStr | None = None


@dataclass(frozen=True)
class TrainResult:
    version: str
    parent: str
    card: dict[str, Any]


def run(store: ObjectStore | str, cycle: str, config: TrainConfig, api=None) -> TrainResult:
    store = open_store(store or None) if isinstance(store, str) else store
    if not store.list(cycle_store.train_labels_key(cycle)):
        raise ValueError(f"cycle {cycle!r} has no labeled training batch ({cycle_store.train_labels_key(cycle)}): "
                         "run collect-labels first")
    record_key = cycle_store.key(cycle, "train.json")
    began_with = _record_etag(store, record_key)  # replaced below only if still this one
    parent = registry_access.champion_version(store, config.model_name, config.champion_version or None)
    started = time.time()
    unlabeled_key, n_unlabeled = "", 0
    if config.semi_supervised:
        from daic.components.train.unlabeled import write_unlabeled_pool

        unlabeled_key, n_unlabeled = write_unlabeled_pool(store, cycle, config.unlabeled_limit, config.seed)
        if not n_unlabeled:
            log.warning("cycle %s: no unsampled inputs in the window; retraining without the unlabelled pool", cycle)
            unlabeled_key = ""
    if config.backend == "rayjob":
        from daic.components.deploy.logic import cluster_namespace, custom_objects_api
        from daic.components.train.rayjob import submit_rayjob

        manifest = registry_access.render_rayjob(store.url, cycle, config.model_name, parent, LABELS_PREFIX, config,
                                                 unlabeled_key)
        namespace = cluster_namespace(config.namespace)
        status = submit_rayjob(api or custom_objects_api(), namespace, manifest, config.timeout_s, config.poll_s)
        version = _rayjob_version(store, cycle, manifest["metadata"]["name"], parent)
        extra: dict[str, Any] = {"rayjob": manifest["metadata"]["name"], "status": status}
    else:
        address = (config.ray_address or os.environ.get("RAY_ADDRESS")) if config.backend == "ray-address" else None
        version = registry_access.retrain(store, config.model_name, parent, LABELS_PREFIX, config, address, cycle,
                                          unlabeled_key)
        extra = {"ray_address": address}
    card = registry_access.card(store, config.model_name, version)
    record = {
        "cycle": cycle, "version": version, "parent": parent, "config": asdict(config),
        "seconds": time.time() - started, "unlabeled_key": unlabeled_key, "unlabeled_count": n_unlabeled, **extra,
    }
    try:
        store.put_json_if_unchanged(record_key, record, began_with)
    except PreconditionFailed:
        return _adopt(store, cycle, config.model_name, record_key, version)
    log.info("cycle %s: trained %s %s from %s", cycle, config.model_name, version, parent)
    return TrainResult(version=version, parent=parent, card=card)


def _record_etag(store: ObjectStore, key: str) -> str | None:
    """The ETag of the record at ``key`` now; None when there is none yet."""
    try:
        return store.get_with_etag(key)[1]
    except KeyNotFound:
        return None


def _adopt(store: ObjectStore, cycle: str, name: str, record_key: str, unused: str) -> TrainResult:
    """Another attempt of this cycle recorded its version while this one trained: this attempt
    returns that version (its record stands); ``unused``, registered by this attempt, is left
    in the registry unused."""
    try:
        recorded = read_object(store, record_key, TrainRecord)  # CorruptObject: naming no version, say
    except KeyNotFound:
        raise TrainConflict(f"cycle {cycle!r}: {record_key} changed and then vanished while this train attempt "
                            f"ran; its version {name} {unused} was registered but not recorded") from None
    version, parent = recorded.version, recorded.parent
    if version != unused:
        log.warning("cycle %s: another train attempt recorded %s %s while this one trained; adopting it (this "
                    "attempt's %s stays registered, unused)", cycle, name, version, unused)
    return TrainResult(version=version, parent=parent, card=registry_access.card(store, name, version))


def _rayjob_version(store: ObjectStore, cycle: str, job: str, parent: str) -> str:
    """The version the RayJob's driver registered, from its ``--result-key`` record."""
    from daic.storage import KeyNotFound

    output_key = cycle_store.key(cycle, registry_access.TRAIN_OUTPUT)
    try:
        output = read_object(store, output_key, TrainOutput)
    except KeyNotFound:
        raise RuntimeError(f"RayJob {job} succeeded but left no {output_key} in {store.url}: "
                           "its driver must run `daic retrain ... --result-key` against the same store") from None
    if output.parent != parent:
        raise RuntimeError(f"{output_key} names version {output.version!r} from parent "
                           f"{output.parent!r}, expected a version from {parent!r}")
    return output.version
