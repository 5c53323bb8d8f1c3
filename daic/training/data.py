"""The training set of one run: the base split plus every labeled operational batch under a prefix.

Labeled batches are ``labels/<cycle>/batch-<n>.npz`` with ``images`` (N, 28, 28) float32,
``labels`` (N,) int64 and ``ids`` (N,) str (docs/CONTRACTS.md), and optionally ``weights`` (N,)
float32 > 0: how much each labeled input counts in the loss, as collect-labels' ``train_weighting``
set it (1 where a batch has none); it multiplies the config's ``operational_weight``. Each batch is recorded in the
model card by key, size and SHA-256 of its bytes, so a version's data lineage names exactly what
it saw even if a batch is later rewritten.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from daic.models.card import DataLineage, LabeledBatchRef
from daic.storage import ObjectStore
from daic.training.config import TrainConfig

NUM_CLASSES = 10


@dataclass(frozen=True)
class LabeledBatches:
    images: np.ndarray  # float32 (N, 28, 28)
    labels: np.ndarray  # int64 (N,)
    refs: tuple[LabeledBatchRef, ...]
    weights: np.ndarray | None = None  # float32 (N,): per-input loss weights (1 where a batch has none)


@dataclass(frozen=True)
class TrainingSet:
    """``images``/``labels`` = base examples first (``n_base``), then operational ones."""

    images: np.ndarray
    labels: np.ndarray
    n_base: int
    n_operational: int
    lineage: DataLineage
    operational_weights: np.ndarray | None = None  # (n_operational,) per-input weights; None: all 1


def check_labeled_batch(arrays: dict[str, np.ndarray], key: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate one batch's arrays; errors name the key and the field."""
    missing = [f for f in ("images", "labels", "ids") if f not in arrays]
    if missing:
        raise ValueError(f"labeled batch {key!r} is missing arrays: {', '.join(missing)}")
    images, labels, ids = arrays["images"], arrays["labels"], arrays["ids"]
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(f"labeled batch {key!r}: images must have shape (N, 28, 28), got {images.shape}")
    n = images.shape[0]
    if labels.shape != (n,) or ids.shape != (n,):
        raise ValueError(f"labeled batch {key!r}: labels {labels.shape} and ids {ids.shape} must be ({n},)")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labeled batch {key!r}: labels must be integers, got {labels.dtype}")
    if n and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise ValueError(f"labeled batch {key!r}: labels must lie in [0, {NUM_CLASSES}), "
                         f"got [{labels.min()}, {labels.max()}]")
    images = np.asarray(images, dtype=np.float32)
    if n and (not np.isfinite(images).all() or images.min() < 0 or images.max() > 1):
        raise ValueError(f"labeled batch {key!r}: images must be finite floats in [0, 1]")
    return images, labels.astype(np.int64)


def load_labeled_batches(store: ObjectStore, prefix: str) -> LabeledBatches:
    """Every ``.npz`` batch under ``prefix``, in key order; an empty prefix is an error."""
    keys = [k for k in store.list(prefix) if k.endswith(".npz")]
    if not keys:
        raise ValueError(f"no labeled batches (*.npz) under {prefix!r} in {store.url}")
    images, labels, refs, weights = [], [], [], []
    for key in keys:
        raw = store.get_bytes(key)
        arrays = store.arrays_from_bytes(key, raw)
        imgs, labs = check_labeled_batch(arrays, key)
        images.append(imgs)
        labels.append(labs)
        weights.append(batch_weights(arrays, len(labs), key))
        refs.append(LabeledBatchRef(key=key, count=len(labs), sha256=hashlib.sha256(raw).hexdigest()))
    w = np.concatenate(weights)
    return LabeledBatches(np.concatenate(images), np.concatenate(labels), tuple(refs),
                          None if np.all(w == 1) else w)


def batch_weights(arrays: dict[str, np.ndarray], n: int, key: str) -> np.ndarray:
    """A batch's per-input ``weights`` (finite, > 0), or ones when it has none."""
    if "weights" not in arrays:
        return np.ones(n, np.float32)
    w = np.asarray(arrays["weights"], dtype=np.float32)
    if w.shape != (n,):
        raise ValueError(f"labeled batch {key!r}: weights {w.shape} must be ({n},)")
    if n and (not np.isfinite(w).all() or w.min() <= 0):
        raise ValueError(f"labeled batch {key!r}: weights must be finite and > 0")
    return w


def assemble(config: TrainConfig, store: ObjectStore | None, notes: dict[str, str] | None = None) -> TrainingSet:
    """Base split (first ``base_limit`` images) + the labeled batches under ``labels_prefix``."""
    from daic.data.mnist import load_split

    base = load_split("train", dataset=config.dataset)
    limit = len(base) if config.base_limit is None else min(config.base_limit, len(base))
    images, labels = [base.images[:limit]], [base.labels[:limit]]
    refs: tuple[LabeledBatchRef, ...] = ()
    n_op = 0
    op_weights = None
    if config.labels_prefix is not None:
        if store is None:
            raise ValueError("labels_prefix is set but no object store was given to read it from")
        batches = load_labeled_batches(store, config.labels_prefix)
        images.append(batches.images)
        labels.append(batches.labels)
        refs, n_op, op_weights = batches.refs, len(batches.labels), batches.weights
    lineage = DataLineage(
        dataset=config.dataset, base_split="train", base_count=limit, labels_prefix=config.labels_prefix,
        labeled_batches=list(refs), operational_oversample=config.operational_oversample,
        operational_weight=config.operational_weight, notes=notes or {},
    )
    return TrainingSet(np.concatenate(images).astype(np.float32, copy=False), np.concatenate(labels),
                       n_base=limit, n_operational=n_op, lineage=lineage, operational_weights=op_weights)
