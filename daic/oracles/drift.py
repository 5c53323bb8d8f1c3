"""Window-level input-drift test with a known false-alarm rate.

Each input's drift value is the percentile of its latent distance among held-out reference
distances (:meth:`daic.oracles.distance.DistanceOracle.percentile`). With no shift those
percentiles are uniform on [0, 1] (ranks against an exchangeable calibration set, as in
conformal prediction), so the window mean has mean 1/2 and variance 1/(12 n): a one-sided
z-test on it alarms on windows from the reference distribution with probability ``alpha``,
whatever the embedding or the model. Inputs farther from the reference push the mean up.

With ``tolerance`` t > 0 the null hypothesis is "the mean percentile is at most 0.5 + t" (a
one-sided test of a relevant difference, an interval null hypothesis as in equivalence testing,
Wellek 2010): operational traffic that is only slightly unlike the reference - MNIST's test
digits are written by other people than the training/validation ones, and their mean
percentile sits a few points above 0.5 - then does not alarm at any window size, while a
shift of more than t is still detected with power growing with the window. The false-alarm
rate is at most ``alpha`` for any traffic whose mean percentile is <= 0.5 + t (the variance
1/12 is that of uniform percentiles; a mean above 0.5 comes with a smaller or similar variance
for the shifts measured, see docs/benchmarks/online.md).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np


@dataclass(frozen=True)
class DriftTest:
    """score: mean percentile (0.5 = like the reference, 1 = beyond all of it); p_value of
    the one-sided test; alarm: p_value < alpha."""

    score: float
    p_value: float
    alarm: bool


def drift_test(percentiles: np.ndarray, alpha: float, tolerance: float = 0.0) -> DriftTest:
    """Test a window of per-input reference percentiles for a shift away from the reference by
    more than ``tolerance`` (in mean percentile)."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}")
    if not 0.0 <= tolerance < 0.5:
        raise ValueError(f"tolerance must lie in [0, 0.5), got {tolerance!r}")
    u = np.asarray(percentiles, dtype=np.float64)
    if u.ndim != 1:
        raise ValueError(f"percentiles must be 1-d, got shape {u.shape}")
    if u.size == 0:
        return DriftTest(score=math.nan, p_value=1.0, alarm=False)
    if np.any((u < 0) | (u > 1)) or not np.all(np.isfinite(u)):
        raise ValueError("percentiles must lie in [0, 1]")
    score = float(u.mean())
    z = (score - 0.5 - tolerance) / math.sqrt(1.0 / (12.0 * u.size))
    p_value = 1.0 - NormalDist().cdf(z)
    return DriftTest(score=score, p_value=p_value, alarm=p_value < alpha)
