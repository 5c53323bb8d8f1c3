"""The oracle reference of a model version: what the pseudo-oracles are fitted on.

A model version ships, next to its weights, the softmax outputs, embeddings and shadow-model
softmax outputs it produced on the labelled validation split (docs/CONTRACTS.md:
``models/<name>/<version>/oracle_reference.npz``). Every pseudo-oracle learns "what correct
predictions look like" from these arrays only, so the sidecar never needs training data or the
images themselves.

This module is pure data: shape and value checks, and conversion to and from the plain arrays
the object store writes as npz.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

FIELDS: tuple[str, ...] = ("probs", "embeddings", "labels", "shadow_probs")
# Rows of a probability matrix must sum to 1 within this tolerance (float32 softmax rounding).
_PROB_SUM_TOL = 1e-3


def _check_probs(name: str, probs: np.ndarray, n: int | None, n_classes: int | None) -> None:
    if probs.ndim != 2:
        raise ValueError(f"{name} must have shape (N, C), got {probs.shape}")
    if n is not None and probs.shape[0] != n:
        raise ValueError(f"{name} has {probs.shape[0]} rows, expected {n}")
    if n_classes is not None and probs.shape[1] != n_classes:
        raise ValueError(f"{name} has {probs.shape[1]} classes, expected {n_classes}")
    if probs.shape[1] < 2:
        raise ValueError(f"{name} needs at least 2 classes, got {probs.shape[1]}")
    if not np.all(np.isfinite(probs)):
        raise ValueError(f"{name} contains NaN or infinite values")
    if np.any(probs < 0) or np.any(probs > 1 + _PROB_SUM_TOL):
        raise ValueError(f"{name} must lie in [0, 1] (softmax outputs)")
    sums = probs.sum(axis=1)
    bad = np.flatnonzero(np.abs(sums - 1.0) > _PROB_SUM_TOL)
    if bad.size:
        raise ValueError(
            f"{name} rows must sum to 1 (softmax outputs); row {int(bad[0])} sums to "
            f"{float(sums[bad[0]]):.4f}"
        )


@dataclass(frozen=True)
class OracleReference:
    """Validation-split outputs of a model and its shadow, with the true labels.

    probs: float (N, C) softmax of the model; embeddings: float (N, D) penultimate activations;
    labels: int (N,) in [0, C); shadow_probs: float (N, C) softmax of the shadow model.
    """

    probs: np.ndarray
    embeddings: np.ndarray
    labels: np.ndarray
    shadow_probs: np.ndarray

    def __post_init__(self) -> None:
        probs = np.asarray(self.probs, dtype=np.float64)
        embeddings = np.asarray(self.embeddings, dtype=np.float64)
        labels = np.asarray(self.labels)
        shadow = np.asarray(self.shadow_probs, dtype=np.float64)
        _check_probs("probs", probs, None, None)
        n, c = probs.shape
        if n < 2:
            raise ValueError(f"an oracle reference needs at least 2 inputs, got {n}")
        if embeddings.ndim != 2 or embeddings.shape[0] != n:
            raise ValueError(f"embeddings must have shape ({n}, D), got {embeddings.shape}")
        if embeddings.shape[1] < 1:
            raise ValueError("embeddings must have at least one dimension")
        if not np.all(np.isfinite(embeddings)):
            raise ValueError("embeddings contain NaN or infinite values")
        if labels.shape != (n,):
            raise ValueError(f"labels must have shape ({n},), got {labels.shape}")
        if not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
        if labels.size and (labels.min() < 0 or labels.max() >= c):
            raise ValueError(f"labels must lie in [0, {c}), got range [{labels.min()}, {labels.max()}]")
        _check_probs("shadow_probs", shadow, n, c)
        # Frozen dataclass: normalise dtypes once through object.__setattr__.
        object.__setattr__(self, "probs", probs)
        object.__setattr__(self, "embeddings", embeddings)
        object.__setattr__(self, "labels", labels.astype(np.int64))
        object.__setattr__(self, "shadow_probs", shadow)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def n_classes(self) -> int:
        return int(self.probs.shape[1])

    @property
    def predictions(self) -> np.ndarray:
        return self.probs.argmax(axis=1)

    @property
    def correct(self) -> np.ndarray:
        """Boolean (N,): did the model predict the true label."""
        return self.predictions == self.labels

    @property
    def accuracy(self) -> float:
        return float(self.correct.mean())

    def subset(self, index: np.ndarray) -> "OracleReference":
        """Rows ``index`` (an integer or boolean index) as a new reference."""
        return OracleReference(
            probs=self.probs[index],
            embeddings=self.embeddings[index],
            labels=self.labels[index],
            shadow_probs=self.shadow_probs[index],
        )

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> "OracleReference":
        """Build from a mapping such as ``ObjectStore.get_arrays`` returns; names missing fields."""
        missing = [f for f in FIELDS if f not in arrays]
        if missing:
            raise ValueError(f"oracle reference is missing arrays: {', '.join(missing)}")
        return cls(**{f: np.asarray(arrays[f]) for f in FIELDS})

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Plain arrays for ``ObjectStore.put_arrays`` (float32 to halve the npz size)."""
        return {
            "probs": self.probs.astype(np.float32),
            "embeddings": self.embeddings.astype(np.float32),
            "labels": self.labels.astype(np.int64),
            "shadow_probs": self.shadow_probs.astype(np.float32),
        }
