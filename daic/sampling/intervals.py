"""Confidence-interval formulas shared by the estimators, and the SRS label-count formula.

* Clopper–Pearson (1934): exact binomial interval; its coverage is never below the level, which
  matters at the 50-label budgets and 99% accuracies DAIC meets (Wilson and Wald undercover there).
* Wilson (1927): the score interval; used to answer "how many labels would simple random sampling
  need for this half-width" (the figure the issue's anchors, ~864 labels for +-2 points at 90%,
  come from).
* Student-t interval for means of i.i.d. or martingale-difference terms (Hansen–Hurwitz and
  difference estimators).
"""
from __future__ import annotations

import numpy as np
from scipy import special, stats
from scipy.optimize import brentq


def _z(level: float) -> float:
    return float(stats.norm.ppf(0.5 + level / 2))


def clopper_pearson(successes: int, n: int, level: float) -> tuple[float, float]:
    """Exact (conservative) binomial interval for ``successes`` out of ``n``."""
    if n < 1 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n and n >= 1, got successes={successes}, n={n}")
    alpha = 1.0 - level
    return beta_interval(float(successes), float(n), alpha)


def beta_interval(x: float, n: float, alpha: float) -> tuple[float, float]:
    """Clopper–Pearson limits for a (possibly fractional, "effective") count x out of n."""
    lo = 0.0 if x <= 0 else float(special.betaincinv(x, n - x + 1, alpha / 2))
    hi = 1.0 if x >= n else float(special.betaincinv(x + 1, n - x, 1 - alpha / 2))
    return lo, hi


def wilson(successes: int, n: int, level: float) -> tuple[float, float]:
    """Wilson score interval for ``successes`` out of ``n``."""
    if n < 1 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n and n >= 1, got successes={successes}, n={n}")
    z = _z(level)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def wilson_half_width(p: float, n: float, level: float) -> float:
    """Half-width of the Wilson interval at observed proportion ``p`` with ``n`` labels."""
    z = _z(level)
    return float(z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)))


def wilson_required_n(p: float, half_width: float, level: float) -> int:
    """Smallest n whose Wilson interval at proportion ``p`` has half-width <= ``half_width``.

    This is the "labels SRS would have needed" of an assessment record: at p = 0.9, +-0.02, 95% it
    gives 867 (the textbook normal approximation z^2 p(1-p)/e^2 gives 864).
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p!r}")
    if not 0.0 < half_width < 0.5:
        raise ValueError(f"half_width must be in (0, 0.5), got {half_width!r}")
    f = lambda n: wilson_half_width(p, n, level) - half_width  # noqa: E731
    if f(1.0) <= 0:
        return 1
    hi = 2.0
    while f(hi) > 0:
        hi *= 2
    n = int(np.ceil(brentq(f, hi / 2 if hi > 2 else 1.0, hi, xtol=1e-6)))
    while n > 1 and f(n - 1) <= 0:  # guard against rounding at the root
        n -= 1
    return n


def t_interval(mean: float, se: float, df: int, level: float) -> tuple[float, float]:
    """Student-t interval ``mean +- t_{df} * se``."""
    if df < 1:
        raise ValueError(f"df must be >= 1, got {df}")
    t = float(stats.t.ppf(0.5 + level / 2, df))
    return mean - t * se, mean + t * se


def clip01(lo: float, hi: float) -> tuple[float, float]:
    return max(0.0, lo), min(1.0, hi)
