"""The shape every pseudo-oracle shares: a raw per-input signal and a calibration map.

A pseudo-oracle judges each prediction without its label. Each one computes a raw *signal*
(a confidence, an agreement, a distance) whose scale means nothing by itself; ``fit`` learns,
on the labelled oracle reference, a monotone map from that signal to P(correct) (isotonic
regression: Zadrozny & Elkan, 2002), so ``score`` speaks one unit for every oracle. The
combiner (:mod:`daic.oracles.combiner`) works on the raw signals instead, since a joint model
can use them better than a vote of separately calibrated scores.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from daic.oracles.batch import OracleBatch
from daic.oracles.reference import OracleReference


class NotFittedError(RuntimeError):
    """An oracle was asked to score before ``fit``."""


class SignalOracle(ABC):
    """Base class: subclasses define ``name``, ``higher_means_correct`` and ``signal``."""

    name: str = "oracle"
    #: direction of the raw signal: True for confidences, False for distances.
    higher_means_correct: bool = True

    def __init__(self) -> None:
        self._calibration = None

    # -- what a subclass provides ------------------------------------------------------------
    def _fit_signal(self, reference: OracleReference) -> None:
        """Learn what the signal needs from the reference (default: nothing)."""

    @abstractmethod
    def signal(self, batch: OracleBatch) -> np.ndarray:
        """Raw per-input signal (N,) float."""

    def reference_signal(self, reference: OracleReference) -> np.ndarray:
        """The signal on the reference itself; neighbour-based oracles override it to leave
        each point out of its own neighbourhood."""
        return self.signal(OracleBatch.of(reference))

    # -- shared -----------------------------------------------------------------------------
    @property
    def fitted(self) -> bool:
        return self._calibration is not None

    def fit(self, reference: OracleReference) -> "SignalOracle":
        from sklearn.isotonic import IsotonicRegression

        self._fit_signal(reference)
        sig = self.reference_signal(reference)
        iso = IsotonicRegression(
            increasing=self.higher_means_correct, out_of_bounds="clip", y_min=0.0, y_max=1.0
        )
        iso.fit(sig, reference.correct.astype(np.float64))
        self._calibration = iso
        return self

    def _check_fitted(self) -> None:
        if self._calibration is None:
            raise NotFittedError(f"{self.name}: call fit(reference) before scoring")

    def score(self, batch: OracleBatch) -> np.ndarray:
        """Per-input P(correct) under the reference distribution, in [0, 1]."""
        self._check_fitted()
        return np.asarray(self._calibration.predict(self.signal(batch)), dtype=np.float64)
