"""Disagreement with the shadow model: an N-version style pseudo-oracle.

Two independently designed programs rarely fail on the same inputs (N-version programming,
Avizienis, 1985); for networks, disagreement between differently built models tracks their
error rate closely, in and out of distribution (Jiang et al., 2022, "Assessing generalization
of SGD via disagreement"). The shadow (``daic.models.networks.ShadowNet``) is a different
architecture for exactly this reason.

Signal: the probability the shadow gives to the model's predicted class. It is 1 when the
shadow is sure of the same answer, near 0 when it is sure of another, and in between when it
hesitates, which carries more information than the hard agree/disagree bit.
"""
from __future__ import annotations

import numpy as np

from daic.oracles.base import SignalOracle
from daic.oracles.batch import OracleBatch


def shadow_support(probs: np.ndarray, shadow_probs: np.ndarray) -> np.ndarray:
    """Shadow probability of the model's top-1 class, per input."""
    pred = probs.argmax(axis=1)
    return shadow_probs[np.arange(len(pred)), pred]


def agreement(probs: np.ndarray, shadow_probs: np.ndarray) -> np.ndarray:
    """1.0 where model and shadow predict the same class, else 0.0."""
    return (probs.argmax(axis=1) == shadow_probs.argmax(axis=1)).astype(np.float64)


class ShadowDisagreementOracle(SignalOracle):
    """P(correct) from the shadow's support for the model's prediction (soft agreement)."""

    name = "shadow_disagreement"
    higher_means_correct = True

    def __init__(self, hard: bool = False) -> None:
        super().__init__()
        self.hard = hard

    def signal(self, batch: OracleBatch) -> np.ndarray:
        shadow = batch.require_shadow(self.name)
        if self.hard:
            return agreement(batch.probs, shadow)
        return shadow_support(batch.probs, shadow)
