"""Is model B better than model A on the same labeled draws? A paired comparison under the design.

Two models judged on the same labeled inputs differ only where one is right and the other wrong:
the *discordant* draws. Comparing B's interval with A's (or B's point estimate with A's upper
bound, the rule evaluate used before) throws that pairing away and needs a gain several times
larger than the paired test does: both intervals carry the sampling noise of *which* inputs were
drawn, which is the same for both models and cancels in the difference. This is McNemar's (1947)
observation; here it is made under the sampling design that drew the labels:

* the per-draw difference ``d_i = b_i - a_i`` (1, 0 or -1) has the pool's accuracy difference as
  its design-weighted mean, estimated with the design's linear estimator: the stratified mean for
  the stratified design (the pipeline's default), the plain mean for SRS;
* its one-sided lower confidence bound (``mean_interval``'s skew-corrected t bound, widened only;
  the stratified variance with every stratum's variance floored at the whole sample's, because a
  stratum whose few draws are all discordant the same way has a sample variance of 0);
* and, because a t bound is optimistic when only a handful of draws are discordant, the exact
  sign test on the discordant draws (B right and A wrong against the reverse, a fair coin under
  "no difference") must also reject at the same level.

B is **better** when both hold: the design-based bound is above 0 and the sign test rejects. A
false "better" (B no better than A on the pool) is bounded by the one-sided level; the simulation
in tests/test_sampling_paired.py checks it with known truth, benchmarks/promotion_rule.py measures
it beside evaluate's interval rule.

**Not for the with-replacement designs** (failure-seeking, active, dual): their Hansen-Hurwitz
terms ``d_i / (N q_i)`` are heavily skewed, and at the ~60 held-out draws a cycle has, a
challenger that gains where the oracle is unsure (oversampled) and loses as much where it is sure
(rarely drawn) was called better in up to 38 % of repetitions (benchmarks/promotion_rule.py, 400
each). :func:`compare_paired` refuses them rather than give a bound that is not one.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from daic.sampling.pool import Pool
from daic.sampling.pps import mean_interval
from daic.sampling.sample import Design, Sample, as_correct, check_level
from daic.sampling.stratified import StratifiedNeyman, stratum_of_rank


@dataclass(frozen=True)
class PairedComparison:
    """B against A on the same draws: the estimated accuracy difference (B - A) on the pool, its
    one-sided lower bound at ``level``, the discordant counts and the sign test's p-value."""

    difference: float
    lower: float
    level: float
    n_draws: int
    b_only: int  # draws B got right and A wrong
    a_only: int  # draws A got right and B wrong
    sign_p: float
    method: str

    @property
    def better(self) -> bool:
        """B is better than A at the one-sided ``level``: both the bound and the sign test agree."""
        return self.lower > 0.0 and self.sign_p <= 1.0 - self.level

    def describe(self) -> str:
        return (f"paired difference {self.difference:+.4f} (one-sided {self.level:.0%} lower bound {self.lower:+.4f}; "
                f"discordant {self.b_only} for / {self.a_only} against, sign test p={self.sign_p:.3f}; {self.method})")


def sign_test_p(b_only: int, a_only: int) -> float:
    """One-sided exact p-value of ``b_only`` or more successes among the discordant draws, each a
    fair coin under "no difference" (McNemar's exact test)."""
    n = b_only + a_only
    if n == 0:
        return 1.0
    return float(stats.binom.sf(b_only - 1, n, 0.5))


def _stratified(design: StratifiedNeyman, pool: Pool, sample: Sample, d: np.ndarray, level: float) -> tuple[float, float]:
    if sample.stratum is None:
        raise ValueError("a stratified comparison needs a sample with strata (drawn by this design)")
    sizes = np.bincount(stratum_of_rank(pool.size, design.n_strata), minlength=design.n_strata).astype(float)
    nh = np.bincount(sample.stratum, minlength=design.n_strata).astype(float)
    w = sizes / sizes.sum()
    if np.any(nh < 2):
        raise ValueError(f"every stratum needs >= 2 labeled draws for a variance; counts per stratum are "
                         f"{nh.astype(int).tolist()}")
    mean_h = np.bincount(sample.stratum, weights=d, minlength=design.n_strata) / nh
    dev = d - mean_h[sample.stratum]
    s2_h = np.bincount(sample.stratum, weights=dev**2, minlength=design.n_strata) / (nh - 1)
    s2_h = np.maximum(s2_h, float(np.var(d, ddof=1)))  # a stratum's few draws can all agree
    fpc = 1 - nh / sizes
    est = float(np.sum(w * mean_h))
    se = float(np.sqrt(np.sum(w**2 * fpc * s2_h / nh)))
    df = max(int(nh.sum()) - design.n_strata, 1)
    return est, est - float(stats.t.ppf(level, df)) * se


def compare_paired(design: Design, pool: Pool, sample: Sample, a_correct: np.ndarray, b_correct: np.ndarray,
                   level: float) -> PairedComparison:
    """B (``b_correct``) against A (``a_correct``), both per draw of ``sample`` (a sample the
    ``design`` drew from ``pool``); ``level`` is one-sided (0.95: a 5 % chance of calling a model
    better that is not)."""
    level = check_level(level)
    if sample.selection_prob is not None:
        raise ValueError(f"no paired comparison for the with-replacement design {design.name!r}: its bound "
                         "was not valid at a cycle's sizes (benchmarks/promotion_rule.py)")
    a = as_correct(a_correct, sample.n_draws)
    b = as_correct(b_correct, sample.n_draws)
    n = sample.n_draws
    if n < 2:
        raise ValueError(f"need at least 2 labeled draws to compare two models, got {n}")
    d = b.astype(float) - a.astype(float)
    b_only, a_only = int(np.sum(b & ~a)), int(np.sum(a & ~b))
    if isinstance(design, StratifiedNeyman):
        est, lower = _stratified(design, pool, sample, d, level)
        method = "paired/stratified-t"
    else:
        # mean_interval is two-sided at its level: a two-sided 2L-1 interval's lower end is the
        # one-sided L bound.
        est, lower, _ = mean_interval(d, 2 * level - 1, skew_correction=True, widen_only=True)
        method = "paired/mean-t"
    return PairedComparison(difference=float(est), lower=float(lower), level=level, n_draws=n, b_only=b_only,
                            a_only=a_only, sign_p=sign_test_p(b_only, a_only), method=method)
