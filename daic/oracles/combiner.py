"""Combine the pseudo-oracles' signals into one per-input probability of correctness.

No single signal survives every shift: confidence fails on confidently-wrong inputs, the shadow
fails where both models fail alike, distances flag harmless shifts. A probabilistic classifier
over all of them, fitted on labelled held-out data (the reference, plus synthetic shifts of
it when given), is the standard way to merge such detectors (stacking: Wolpert, 1992; for
misclassification detection cf. Jiang, Kim, Guan & Gupta, 2018, "To trust or not to trust a
classifier"). Logistic regression on standardised signals is the default: few parameters, a
calibrated output, and a monotone response to each signal that cannot memorise the shifts it
was fitted on.
"""
from __future__ import annotations

import numpy as np
from scipy.special import logit

from daic.oracles.batch import OracleBatch
from daic.oracles.confidence import margin, max_softmax, normalised_entropy
from daic.oracles.disagreement import agreement, shadow_support
from daic.oracles.distance import KNNDistanceOracle, MahalanobisOracle
from daic.oracles.threads import single_thread

FEATURES: tuple[str, ...] = (
    "logit_max_softmax",
    "margin",
    "entropy",
    "logit_shadow_support",
    "agreement",
    "logit_shadow_max",
    "knn_distance",
    "log_mahalanobis",
)
# Appended after FEATURES when the assessor's references carry the model's self-agreement under
# test-time transforms (daic.oracles.self_agreement).
SELF_AGREEMENT_FEATURE = "logit_self_agreement"
# Appended when the assessor knows the champion's linear head (daic.oracles.pipeline): the
# logsumexp of the logits recomputed from the embedding, i.e. minus the free energy (Liu et al.,
# 2020, "Energy-based out-of-distribution detection"), which the probabilities alone cannot give.
ENERGY_FEATURE = "neg_energy"
COMBINER_METHODS: tuple[str, ...] = ("logistic", "boosting")
_CLIP = 1e-6


def _clipped_logit(p: np.ndarray) -> np.ndarray:
    return logit(np.clip(p, _CLIP, 1 - _CLIP))


def neg_energy(embeddings: np.ndarray, head: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """logsumexp of the logits ``embeddings @ W.T + b`` per input, for ``head = (W, b)``."""
    from scipy.special import logsumexp

    w, b = head
    return logsumexp(np.asarray(embeddings, dtype=np.float64) @ w.T + b, axis=1)


def signal_features(batch: OracleBatch, knn: KNNDistanceOracle, mahalanobis: MahalanobisOracle,
                    self_agreement: bool = False, head: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """The (N, len(FEATURES)) matrix of raw signals, columns in FEATURES order; with a ``head``
    (W, b), one more column (ENERGY_FEATURE) from the batch's embeddings; with ``self_agreement``,
    one more (SELF_AGREEMENT_FEATURE) from the batch's self_agreement."""
    probs = batch.probs
    shadow = batch.require_shadow("combiner")
    extra = [neg_energy(batch.require_embeddings("combiner"), head)] if head is not None else []
    if self_agreement:
        extra.append(_clipped_logit(batch.require_self_agreement("combiner")))
    return np.column_stack([
        _clipped_logit(max_softmax(probs)),
        margin(probs),
        normalised_entropy(probs),
        _clipped_logit(shadow_support(probs, shadow)),
        agreement(probs, shadow),
        _clipped_logit(shadow.max(axis=1)),
        knn.signal(batch),
        np.log1p(mahalanobis.signal(batch)),
        *extra,
    ])


class Combiner:
    """P(correct | signals): logistic regression (default) or gradient-boosted trees."""

    def __init__(self, method: str = "logistic", regularisation: float = 1.0, seed: int = 0) -> None:
        if method not in COMBINER_METHODS:
            raise ValueError(f"unknown combiner method {method!r}; valid: {', '.join(COMBINER_METHODS)}")
        if not regularisation > 0:
            raise ValueError(f"regularisation must be > 0, got {regularisation!r}")
        self.method = method
        self.regularisation = regularisation
        self.seed = seed
        self._model = None

    def fit(self, features: np.ndarray, correct: np.ndarray,
            sample_weight: np.ndarray | None = None) -> "Combiner":
        x = np.asarray(features, dtype=np.float64)
        y = np.asarray(correct).astype(bool)
        if x.ndim != 2 or x.shape[0] != y.shape[0]:
            raise ValueError(f"features must have shape ({y.shape[0]}, F), got {x.shape}")
        if y.all() or not y.any():
            raise ValueError("the combiner needs both correct and incorrect examples to fit")
        if self.method == "logistic":
            from sklearn.linear_model import LogisticRegression
            from sklearn.pipeline import make_pipeline
            from sklearn.preprocessing import StandardScaler

            model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0 / self.regularisation, max_iter=2000))
            with single_thread():
                model.fit(x, y, logisticregression__sample_weight=sample_weight)
        else:
            from sklearn.ensemble import HistGradientBoostingClassifier

            model = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.05, max_leaf_nodes=15,
                                                   l2_regularization=self.regularisation,
                                                   random_state=self.seed)
            with single_thread():
                model.fit(x, y, sample_weight=sample_weight)
        self._model = model
        return self

    def predict(self, features: np.ndarray) -> np.ndarray:
        """P(correct) per row, in [0, 1]."""
        if self._model is None:
            from daic.oracles.base import NotFittedError

            raise NotFittedError("combiner: call fit before predict")
        x = np.asarray(features, dtype=np.float64)
        with single_thread():
            proba = self._model.predict_proba(x)
        col = list(self._model.classes_).index(True)
        return proba[:, col]
