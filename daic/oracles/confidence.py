"""Confidence-based pseudo-oracles: max-softmax, margin and entropy with a calibration map.

The oldest failure detector: a network is less sure of the inputs it gets wrong (Hendrycks &
Gimpel, 2017, maximum softmax probability). Margin (top-1 minus top-2 probability) and entropy
are the usual variants. Their weakness under shift is the reason this package exists: on
translated or faded digits the network stays confident while being wrong, so these signals are
one input to the combiner, never the estimate on their own.
"""
from __future__ import annotations

import numpy as np

from daic.oracles.base import SignalOracle
from daic.oracles.batch import OracleBatch

CONFIDENCE_KINDS: tuple[str, ...] = ("max_softmax", "margin", "entropy")


def max_softmax(probs: np.ndarray) -> np.ndarray:
    return probs.max(axis=1)


def margin(probs: np.ndarray) -> np.ndarray:
    """Top-1 minus top-2 probability."""
    top2 = np.partition(probs, -2, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def normalised_entropy(probs: np.ndarray) -> np.ndarray:
    """Shannon entropy divided by log(C): 0 for a one-hot output, 1 for the uniform one."""
    p = np.clip(probs, 1e-12, 1.0)
    return -(p * np.log(p)).sum(axis=1) / np.log(probs.shape[1])


def confidence_signal(probs: np.ndarray, kind: str) -> np.ndarray:
    """A confidence where higher means more confident, for ``kind`` in CONFIDENCE_KINDS.

    Entropy is returned negated (1 - normalised entropy) so every kind points the same way.
    """
    if kind == "max_softmax":
        return max_softmax(probs)
    if kind == "margin":
        return margin(probs)
    if kind == "entropy":
        return 1.0 - normalised_entropy(probs)
    raise ValueError(f"unknown confidence kind {kind!r}; valid: {', '.join(CONFIDENCE_KINDS)}")


class ConfidenceOracle(SignalOracle):
    """P(correct) from one confidence signal through an isotonic map fitted on the reference."""

    higher_means_correct = True

    def __init__(self, kind: str = "max_softmax") -> None:
        super().__init__()
        if kind not in CONFIDENCE_KINDS:
            raise ValueError(f"unknown confidence kind {kind!r}; valid: {', '.join(CONFIDENCE_KINDS)}")
        self.kind = kind
        self.name = f"confidence:{kind}"

    def signal(self, batch: OracleBatch) -> np.ndarray:
        return confidence_signal(batch.probs, self.kind)
