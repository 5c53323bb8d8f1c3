"""With-replacement sampling with probabilities proportional to a score (PPS), shared by the
failure-seeking and the active design.

Each draw picks input i with probability q_i. A term y_i / (N q_i) then has expectation equal to the
pool mean of y whatever q is (Hansen & Hurwitz, 1943), and this stays true when q is chosen
afresh before every batch from the labels already seen: the terms form a martingale-difference
sequence around the pool mean, so their average is unbiased and its variance is estimated by the
sample variance of the terms over n (the adaptive-importance-sampling argument used by active
inference, Zrnic & Candès, ICML 2024).

Mixing the score with a uniform share ("defensive" importance sampling, Hesterberg 1995) bounds
every weight by 1 / share: an input the oracle wrongly trusts still has a fair chance to be drawn,
which keeps the interval honest when the oracle is wrong.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from daic.sampling.calibration import Recalibration, fit_recalibration
from daic.sampling.pool import Pool
from daic.sampling.sample import Sample


def mixed_probabilities(score: np.ndarray, uniform_share: float) -> np.ndarray:
    """Selection probabilities: (1 - share) * score / sum(score) + share / N."""
    if not 0.0 < uniform_share <= 1.0:
        raise ValueError(f"uniform_share must be in (0, 1], got {uniform_share!r}")
    score = np.asarray(score, float)
    if np.any(~np.isfinite(score)) or np.any(score < 0):
        raise ValueError("score must be finite and >= 0")
    n = score.size
    total = score.sum()
    if total <= 0:
        return np.full(n, 1.0 / n)
    return (1 - uniform_share) * score / total + uniform_share / n


def draw_with_replacement(q: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` independent draws of pool positions with probabilities ``q``."""
    cdf = np.cumsum(q)
    return np.minimum(np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right"), q.size - 1)


def current_recalibration(
    pool: Pool, history: Sample, correct: np.ndarray, min_labels: int, by_class: bool
) -> Recalibration:
    """Platt map fitted on the distinct inputs labeled so far (identity until ``min_labels``)."""
    if history.n_draws == 0:
        return Recalibration()
    idx, first = np.unique(history.indices, return_index=True)
    if idx.size < min_labels:
        return Recalibration()
    return fit_recalibration(pool.p_correct[idx], pool.predictions[idx], correct[first], by_class=by_class)


def mean_interval(
    terms: np.ndarray,
    level: float,
    variance_floor: np.ndarray | None = None,
    skew_correction: bool = True,
    widen_only: bool = False,
) -> tuple[float, float, float]:
    """Mean of the per-draw terms with a confidence interval.

    The terms of a weighted estimator are skewed (rare inputs with large weights), which makes the
    symmetric t interval miss on one side. Two corrections, both checked by simulation:

    * ``variance_floor``: per-term variances a working model predicts bound the sample variance
      from below (when the rare heavy terms have not been drawn yet, the sample variance is small
      exactly when the mean is off);
    * ``skew_correction``: Hall's (JRSS-B 1992) monotone transformation of the studentised mean,
      g(T) = T + a T^2 + a^2 T^3 / 3 + a / 2 with a = skewness / (3 sqrt n), which removes the
      first-order effect of skewness; the interval inverts g at Student-t quantiles (df = n - 1).
      The skewness is the sample third central moment over the variance the interval uses (the
      floored one), not over the sample variance: when the floor binds, the sample has not yet
      shown the spread the working model predicts, and dividing by the smaller sample variance
      overstated the skewness (benchmarks/offline_estimation.py, 99% accuracy, 50 labels: the
      active design's mean half-width was 0.0206, twice 1.96 x its RMSE of 0.0052, at 98-99%
      coverage; with the floored scale 0.0173, coverage unchanged).
    * ``widen_only``: each endpoint is the outer of Hall's and the symmetric t endpoint, so the
      correction never pulls an endpoint in. With rare heavy terms the sample third moment is
      least reliable exactly when the sample over-represents them, and Hall's transformation
      then pulls in the endpoint on the side where the estimate is off (failure-seeking at 99%
      accuracy, 800 draws: coverage 0.915 over 200 runs and 0.946 over 1000 without it, 0.957
      with it). It costs width: the active design, whose coverage did not need it, would need
      0.56x instead of 0.53x SRS's labels for +-2 points under the `drifted` shift.
    """
    n = terms.size
    if n < 2:
        raise ValueError(f"need at least 2 draws for an interval, got {n}")
    mean = float(terms.mean())
    dev = terms - mean
    var = float(dev @ dev) / (n - 1)
    if variance_floor is not None:
        var = max(var, float(np.mean(variance_floor)))
    se = float(np.sqrt(var / n))
    q = float(stats.t.ppf(0.5 + level / 2, n - 1))
    if se == 0.0:
        return mean, mean, mean
    lo_t, hi_t = -q, q
    if skew_correction:
        skew = float(np.mean(dev**3)) / var**1.5
        a = skew / (3.0 * np.sqrt(n))
        if abs(a) > 1e-12:
            inv = lambda y: (np.cbrt(1.0 + 3.0 * a * (y - a / 2)) - 1.0) / a  # noqa: E731
            lo_t, hi_t = inv(-q), inv(q)
            if widen_only:
                lo_t, hi_t = min(lo_t, -q), max(hi_t, q)
    # T = (mean - mu) / se, so mu lies in [mean - se * g^-1(q), mean - se * g^-1(-q)].
    return mean, mean - se * hi_t, mean - se * lo_t


@dataclass(frozen=True)
class AdaptivePPSDesign:
    """What the two adaptive with-replacement designs share: a working model of correctness
    recalibrated from the labels between batches, and a uniform share of the draw probabilities.

    Attributes:
        uniform_share: share of each draw's probability spread uniformly (bounds weights by 1/share).
        adapt: recalibrate the oracle from the labels between batches.
        by_class: let the recalibration learn a per-predicted-class offset.
        min_labels_to_adapt: labels needed before the first recalibration.
        variance_floor: bound the variance below by what the working model predicts.
        initial_uniform_share: uniform share until ``min_labels_to_adapt`` inputs are labeled
            (None: ``uniform_share`` throughout).
        skew_correction: Hall's skewness correction of the interval.
        skew_widen_only: the correction may widen the interval but never pull an endpoint in
            (see `mean_interval`).
    """

    uniform_share: float = 0.1
    adapt: bool = True
    by_class: bool = True
    min_labels_to_adapt: int = 20
    variance_floor: bool = True
    initial_uniform_share: float | None = 0.5
    skew_correction: bool = True
    skew_widen_only: bool = False

    def __post_init__(self) -> None:
        if not 0.0 < self.uniform_share <= 1.0:
            raise ValueError(f"uniform_share must be in (0, 1], got {self.uniform_share!r}")
        if self.initial_uniform_share is not None and not 0.0 < self.initial_uniform_share <= 1.0:
            raise ValueError(f"initial_uniform_share must be in (0, 1], got {self.initial_uniform_share!r}")
        if self.min_labels_to_adapt < 1:
            raise ValueError(f"min_labels_to_adapt must be >= 1, got {self.min_labels_to_adapt}")

    def max_draws(self, pool: Pool) -> None:
        return None

    def share(self, history: Sample) -> float:
        """Uniform share for the next batch: larger before the oracle has been recalibrated."""
        if self.initial_uniform_share is not None and np.unique(history.indices).size < self.min_labels_to_adapt:
            return self.initial_uniform_share
        return self.uniform_share

    def prediction(self, pool: Pool, history: Sample, correct: np.ndarray) -> np.ndarray:
        """The working model's probability of correctness for every input, given labels so far."""
        if not self.adapt:
            return pool.p_correct
        recal = current_recalibration(pool, history, correct, self.min_labels_to_adapt, self.by_class)
        return recal.apply_to_pool(pool)

    @staticmethod
    def model_assisted_sample(f: np.ndarray, q: np.ndarray, idx: np.ndarray, history: Sample) -> Sample:
        """Draws ``idx`` made with selection probabilities ``q``, recorded with the working model
        ``f`` as their controls, the way `difference_estimate` reads them."""
        n = len(idx)
        return Sample(
            indices=idx,
            batch=np.full(n, history.n_batches),
            selection_prob=q[idx],
            control=f[idx],
            control_mean=np.full(n, f.mean()),
        )

    def difference_estimate(self, pool: Pool, sample: Sample, correct: np.ndarray, level: float,
                            method: str) -> "Estimate":
        """The difference (model-assisted) estimator over the whole pool: the working model's mean
        plus the Hansen-Hurwitz-weighted residuals of the draws (Särndal, Swensson & Wretman 1992,
        ch. 6), with `mean_interval`'s interval. Needs the draws' selection probabilities and
        controls (``f``) as the design recorded them."""
        from daic.sampling.sample import Estimate, as_correct, check_level, failures_found

        level = check_level(level)
        correct = as_correct(correct, sample.n_draws)
        if sample.selection_prob is None or sample.control is None or sample.control_mean is None:
            raise ValueError(f"{self.name} estimate needs selection probabilities and controls (drawn by this design)")
        weight = 1.0 / (pool.size * sample.selection_prob)
        terms = sample.control_mean + (correct - sample.control) * weight
        # Variance floor: under the working model y ~ Bernoulli(f) a term's variance is
        # sum_i q_i f_i (1 - f_i) / (N q_i)^2, estimated without bias by the draws themselves.
        floor = sample.control * (1 - sample.control) * weight**2 if self.variance_floor else None
        est, lo, hi = mean_interval(terms, level, floor, self.skew_correction, self.skew_widen_only)
        return Estimate(
            accuracy=est,  # Estimate clips to [0, 1]
            lower=lo,
            upper=hi,
            level=level,
            n_labels=int(sample.distinct.size),
            n_draws=sample.n_draws,
            n_failures_found=failures_found(sample, correct),
            method=method,
        )
