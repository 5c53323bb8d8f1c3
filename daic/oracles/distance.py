"""Latent-space distance to the reference: k-nearest-neighbour and Mahalanobis.

An input far from everything the model was validated on is both a likely error and evidence
of input drift, so this one signal serves the combiner and the drift alarm
(:mod:`daic.oracles.drift`).

* :class:`KNNDistanceOracle`: distance to the k-th nearest reference embedding after L2
  normalisation (Sun, Ming, Zhu & Li, 2022, "Out-of-distribution detection with deep nearest
  neighbors"). Non-parametric: no assumption on the shape of the class clusters.
* :class:`MahalanobisOracle`: distance to the closest class mean under a shared covariance
  (Lee, Lee, Lee & Shin, 2018). The covariance is shrunk (Ledoit & Wolf, 2004) because ReLU
  embeddings have near-constant dimensions that make the sample covariance singular.
"""
from __future__ import annotations

import numpy as np

from daic.oracles import ann
from daic.oracles.ann import KNNIndex
from daic.oracles.threads import single_thread

from daic.oracles.base import NotFittedError, SignalOracle
from daic.oracles.batch import OracleBatch
from daic.oracles.reference import OracleReference

_EPS = 1e-12


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length; an all-zero row stays zero."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, _EPS)


class DistanceOracle(SignalOracle):
    """A distance signal (higher = farther = less likely correct) with reference percentiles."""

    higher_means_correct = False

    def __init__(self) -> None:
        super().__init__()
        self._sorted_reference: np.ndarray | None = None

    def fit(self, reference: OracleReference) -> "DistanceOracle":
        super().fit(reference)
        self._sorted_reference = np.sort(self.reference_signal(reference))
        return self

    @property
    def reference_distances(self) -> np.ndarray:
        """Sorted held-out distances of the reference points (leave-one-out where defined)."""
        if self._sorted_reference is None:
            raise NotFittedError(f"{self.name}: call fit(reference) first")
        return self._sorted_reference

    def percentile(self, distances: np.ndarray) -> np.ndarray:
        """Share of reference distances strictly below each distance, in [0, 1].

        Under no shift these are (nearly) uniform on [0, 1]: a rank against an exchangeable
        calibration set, as in conformal prediction (Vovk et al., 2005).
        """
        ref = self.reference_distances
        below = np.searchsorted(ref, distances, side="left")
        ties = np.searchsorted(ref, distances, side="right") - below
        return (below + 0.5 * ties + 0.5) / (len(ref) + 1)


class KNNDistanceOracle(DistanceOracle):
    """Distance to the k-th nearest neighbour among L2-normalised reference embeddings.

    Exact below ``exact_below`` bank rows, an IVF index above (:mod:`daic.oracles.ann`): query
    cost O(sqrt(n)) instead of O(n). The leave-one-out distances of the bank are computed once
    per fit (they serve both the isotonic calibration and the sorted reference distances)."""

    name = "knn_distance"

    def __init__(self, k: int = 10, exact_below: int | None = None) -> None:
        super().__init__()
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        if exact_below is not None and (isinstance(exact_below, bool) or not isinstance(exact_below, (int, np.integer))
                                        or exact_below < 1):
            raise ValueError(f"exact_below must be a positive integer, got {exact_below!r}")
        self.k = int(k)
        self.exact_below = None if exact_below is None else int(exact_below)  # None: ann.EXACT_BELOW at fit
        self._index: KNNIndex | None = None
        self._loo: np.ndarray | None = None

    def _fit_signal(self, reference: OracleReference) -> None:
        if len(reference) <= self.k:
            raise ValueError(f"k={self.k} needs more than {self.k} reference inputs, got {len(reference)}")
        points = l2_normalise(reference.embeddings)
        # Brute force below the threshold: exact, and for a few thousand 64-256-d points faster
        # than any tree or index.
        exact_below = ann.EXACT_BELOW if self.exact_below is None else self.exact_below
        self._index = KNNIndex(points, self.k, exact_below=exact_below)
        with single_thread():
            self._loo = self._index.query_self(points)[:, -1]

    @property
    def index_kind(self) -> str:
        """``"exact"`` or ``"ivf"`` (see :mod:`daic.oracles.ann`)."""
        if self._index is None:
            raise NotFittedError(f"{self.name}: call fit(reference) first")
        return self._index.kind

    def _distances(self, emb: np.ndarray) -> np.ndarray:
        if self._index is None:
            raise NotFittedError(f"{self.name}: call fit(reference) first")
        if emb.shape[1] != self._index.dim:
            raise ValueError(
                f"embeddings have {emb.shape[1]} dimensions, the reference has {self._index.dim}"
            )
        # One thread: per-batch queries are small, and the sidecar shares its cores.
        with single_thread():
            dist = self._index.query(l2_normalise(emb), threads=1)
        return dist[:, -1]

    def signal(self, batch: OracleBatch) -> np.ndarray:
        return self._distances(batch.require_embeddings(self.name))

    def reference_signal(self, reference: OracleReference) -> np.ndarray:
        """The indexed points themselves, each left out of its own neighbours (computed at fit)."""
        if self._loo is None:
            raise NotFittedError(f"{self.name}: call fit(reference) first")
        return self._loo


class MahalanobisOracle(DistanceOracle):
    """Smallest Mahalanobis distance to a class mean, with a shared shrunk covariance."""

    name = "mahalanobis"

    def __init__(self) -> None:
        super().__init__()
        self._means: np.ndarray | None = None
        self._precision: np.ndarray | None = None

    def _fit_signal(self, reference: OracleReference) -> None:
        from sklearn.covariance import LedoitWolf

        emb, labels = reference.embeddings, reference.labels
        classes = np.unique(labels)
        means = np.stack([emb[labels == c].mean(axis=0) for c in classes])
        centred = emb - means[np.searchsorted(classes, labels)]
        self._precision = LedoitWolf(assume_centered=True).fit(centred).get_precision()
        self._means = means

    @property
    def embedding_dim(self) -> int | None:
        """The embedding width it was fitted on (None before ``fit``)."""
        return None if self._means is None else int(self._means.shape[1])

    def signal(self, batch: OracleBatch) -> np.ndarray:
        if self._means is None:
            raise NotFittedError(f"{self.name}: call fit(reference) first")
        emb = batch.require_embeddings(self.name)
        if emb.shape[1] != self._means.shape[1]:
            raise ValueError(
                f"embeddings have {emb.shape[1]} dimensions, the reference has {self._means.shape[1]}"
            )
        p = self._precision
        with single_thread():  # small products: BLAS threads only contend with the sidecar's others
            xp = emb @ p
            sq = (xp * emb).sum(axis=1)[:, None] - 2 * xp @ self._means.T
            sq += ((self._means @ p) * self._means).sum(axis=1)[None, :]
        return np.sqrt(np.maximum(sq.min(axis=1), 0.0))
