"""Published label-free accuracy estimators, kept as baselines the benchmark compares against.

* ATC, Average Thresholded Confidence (Garg, Balakrishnan, Lipton, Neyshabur & Sedghi, ICLR
  2022): pick the confidence threshold t at which the share of reference inputs above t equals
  the reference accuracy; the estimate on new data is the share above t.
* DoC, Difference of Confidences (Guillory, Shankar, Ebrahimi, Darrell & Schmidt, ICCV 2021):
  the drop in average confidence from the reference is taken as the drop in accuracy.

Both assume the network's confidence falls as its accuracy falls, which is what fails when the
network is confidently wrong (translated or faded digits); the benchmark shows it.
"""
from __future__ import annotations

import numpy as np

from daic.oracles.base import NotFittedError
from daic.oracles.batch import OracleBatch
from daic.oracles.confidence import CONFIDENCE_KINDS, confidence_signal
from daic.oracles.reference import OracleReference


class ATCOracle:
    """Per-input score 1.0 if the confidence is above the ATC threshold, else 0.0.

    Default signal is negative entropy, the better of the two variants in Garg et al. (2022).
    """

    def __init__(self, kind: str = "entropy") -> None:
        if kind not in CONFIDENCE_KINDS:
            raise ValueError(f"unknown confidence kind {kind!r}; valid: {', '.join(CONFIDENCE_KINDS)}")
        self.kind = kind
        self.name = f"atc:{kind}"
        self.threshold: float | None = None

    def fit(self, reference: OracleReference) -> "ATCOracle":
        s = np.sort(confidence_signal(reference.probs, self.kind))
        n = len(s)
        n_correct = int(reference.correct.sum())
        # Exactly n_correct reference inputs lie strictly above the threshold (up to ties).
        self.threshold = float(s[n - n_correct - 1]) if n_correct < n else float(np.nextafter(s[0], -np.inf))
        return self

    def score(self, batch: OracleBatch) -> np.ndarray:
        if self.threshold is None:
            raise NotFittedError(f"{self.name}: call fit(reference) before scoring")
        return (confidence_signal(batch.probs, self.kind) > self.threshold).astype(np.float64)

    def estimate(self, batch: OracleBatch) -> float:
        return float(self.score(batch).mean())


class DoCOracle:
    """Per-input score: max-softmax minus the reference's confidence-accuracy gap."""

    name = "doc"

    def __init__(self) -> None:
        self.gap: float | None = None

    def fit(self, reference: OracleReference) -> "DoCOracle":
        self.gap = float(confidence_signal(reference.probs, "max_softmax").mean() - reference.accuracy)
        return self

    def score(self, batch: OracleBatch) -> np.ndarray:
        if self.gap is None:
            raise NotFittedError(f"{self.name}: call fit(reference) before scoring")
        return confidence_signal(batch.probs, "max_softmax") - self.gap

    def estimate(self, batch: OracleBatch) -> float:
        """Average score, clipped to [0, 1] as an accuracy must be."""
        return float(np.clip(self.score(batch).mean(), 0.0, 1.0))
