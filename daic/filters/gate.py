"""Per-input gate: send an input through the filter only when it looks off-distribution (pure numpy).

The off-distribution score is the filter's own correction, ``mean |filter(x) - x|``: trained to
leave clean images alone and to undo corruptions, the filter changes an in-distribution input
little and a corrupted one a lot (the reconstruction-error detector of denoising autoencoders,
e.g. Sakurada & Yairi 2014, here on a filter that exists anyway, so the gate costs no second
network). The threshold is the ``1 - clean_rate`` quantile of the score on clean validation
images, so at most ``clean_rate`` of clean traffic is touched -- which bounds what the filter can
cost on clean inputs.

**Uncertainty part** (issue 21, measured): a corruption the filter changes little (motion blur)
passes the residual gate, so the gate also sends an input through the filter when the wrapped
classifier is uncertain about the *raw* input: its predictive entropy above the ``1 - clean_rate``
quantile on the same clean validation images (``FilterNet.gate_entropy``, set with the threshold;
the classifier's own view of "off-distribution", the confidence signal the assessor builds on).
On the 3-seed benchmark's adapted filters it took motion blur from 3 % to 45 % of the drop
regained and impulse noise from 87 % to 92 %, at most 0.1 points of clean accuracy lost
(always-on: 49 % and 95 %, but 0.33 and 0.20 points; docs/benchmarks.md).
Modes: ``gated`` (this rule), ``always`` (every input filtered), ``off``.
"""
from __future__ import annotations

import numpy as np

GATE_MODES = ("gated", "always", "off")


def residual_score(images: np.ndarray, filtered: np.ndarray) -> np.ndarray:
    images, filtered = np.asarray(images, np.float32), np.asarray(filtered, np.float32)
    return np.abs(filtered - images).reshape(len(images), -1).mean(axis=1)


def calibrate_threshold(clean_scores: np.ndarray, clean_rate: float) -> float:
    if not 0 < clean_rate < 1:
        raise ValueError(f"clean_rate must be in (0, 1), got {clean_rate}")
    scores = np.asarray(clean_scores, np.float64)
    if scores.size == 0:
        raise ValueError("no clean scores to calibrate the gate on")
    return float(np.quantile(scores, 1.0 - clean_rate))


def select(images: np.ndarray, filtered: np.ndarray, mode: str, threshold: float,
           uncertain: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(what the classifier gets, boolean mask of the inputs that were filtered); ``uncertain``
    (N,): inputs the classifier is uncertain about, filtered too in ``gated`` mode."""
    if mode not in GATE_MODES:
        raise ValueError(f"gate mode must be one of {', '.join(GATE_MODES)}, got {mode!r}")
    n = len(images)
    if mode == "off":
        return np.asarray(images, np.float32), np.zeros(n, bool)
    if mode == "always":
        return np.asarray(filtered, np.float32), np.ones(n, bool)
    mask = residual_score(images, filtered) > threshold
    if uncertain is not None:
        mask = mask | np.asarray(uncertain, bool)
    return np.where(mask[:, None, None], filtered, images).astype(np.float32), mask
