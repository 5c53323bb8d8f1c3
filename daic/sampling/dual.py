"""A design whose labels both measure and teach: a deterministic mixture of an estimation design
and a failure-seeking one, with known selection probabilities.

The stratified and active designs estimate best (labels where the outcome is uncertain); the
failure-seeking design finds most mispredictions (what retraining learns from). This design
splits every batch of ``n`` draws: ``n_fail = round(failure_share * n)`` are drawn with
probabilities ``q_fail`` proportional to the (recalibrated) probability of failure 1 - f_i, and
the other ``n_est`` with probabilities ``q_est`` proportional to sqrt(f_i (1 - f_i)) (the active
design's variance-optimal choice); both components keep a uniform share, which bounds every
weight ("defensive" importance sampling, Hesterberg 1995).

Every draw of the batch is then weighted with the *mixture* probability

    q_i = (n_est q_est,i + n_fail q_fail,i) / n,

not with the probability of the component that drew it: the deterministic-mixture ("balance
heuristic") estimator of multiple importance sampling (Veach & Guibas, SIGGRAPH 1995; Owen &
Zhou, JASA 2000). The sum over a batch of y_i / (N q_i) then has expectation n * mean_pool(y)
whatever the split (sum over components of n_c sum_i q_c,i y_i / (N q_i) = n sum_i q_i y_i /
(N q_i)), so the Hansen–Hurwitz argument (Hansen & Hurwitz 1943) carries over unchanged; with
q re-fitted between batches from the labels seen so far the batch averages form a
martingale-difference sequence, as for the other adaptive designs (Zrnic & Candès 2024). The
estimator is the difference (model-assisted) estimator of the active design (Särndal et al.
1992): mean_pool(f) + (y_i - f_i) / (N q_i) per draw. Within a batch the draws are independent
but not identically distributed, so the sample variance of the terms overstates the variance
(conservative); the interval is `daic.sampling.pps.mean_interval` with the working model's
variance floor and Hall's skewness correction in its widen-only form (as failure-seeking: a
failure found among inputs the oracle trusts is a rare heavy term).

A random subset of a batch's draws (the held-out share) is still an unbiased sample under the same
q: the draws are shuffled, so a kept draw came from each component in proportion n_c / n.

The probabilities each draw was made with are recorded (``Sample.selection_prob``), so first-order
inclusion probabilities follow (1 - (1 - q_i)^n) and the interval stays design-based. Measured on
simulated pools with known truth: tests/test_sampling_dual.py.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from daic.sampling.pool import Pool
from daic.sampling.pps import (
    AdaptivePPSDesign,
    draw_with_replacement,
    mixed_probabilities,
)
from daic.sampling.sample import (
    Estimate,
    Sample,
    check_draw_args,
)


def split_batch(n: int, failure_share: float) -> tuple[int, int]:
    """(n_est, n_fail): how many of ``n`` draws each component makes."""
    n_fail = int(round(failure_share * n))
    return n - n_fail, n_fail


@dataclass(frozen=True)
class TeachAndMeasure(AdaptivePPSDesign):
    """Deterministic mixture of active (estimation) and failure-seeking draws, balance-heuristic
    weights, difference estimator (see the module docstring).

    Attributes:
        failure_share: share of each batch drawn proportionally to the probability of failure
            (0: the active design's draws; 1: failure-seeking draws, still with this estimator).
        others: see `AdaptivePPSDesign`.
    """

    failure_share: float = 0.5
    uniform_share: float = 0.2
    initial_uniform_share: float | None = 0.5
    skew_widen_only: bool = True
    name: str = "dual"

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.failure_share, bool) or not isinstance(self.failure_share, (int, float)) \
                or not 0.0 <= self.failure_share <= 1.0:
            raise ValueError(f"failure_share must be in [0, 1], got {self.failure_share!r}")

    def probabilities(self, pool: Pool, history: Sample, correct: np.ndarray) -> tuple[np.ndarray, ...]:
        """(f, q_est, q_fail): the working model and the two components' selection probabilities."""
        f = self.prediction(pool, history, correct)
        share = self.share(history)
        return (f, mixed_probabilities(np.sqrt(f * (1 - f)), share),
                mixed_probabilities(1.0 - f, share))

    def draw(
        self, pool: Pool, history: Sample, correct: np.ndarray, n: int, rng: np.random.Generator
    ) -> Sample:
        correct = check_draw_args(self, pool, history, correct, n)
        f, q_est, q_fail = self.probabilities(pool, history, correct)
        n_est, n_fail = split_batch(n, self.failure_share)
        q = (n_est * q_est + n_fail * q_fail) / n
        idx = np.concatenate([draw_with_replacement(q_est, n_est, rng), draw_with_replacement(q_fail, n_fail, rng)])
        idx = rng.permutation(idx)  # which component drew a draw carries no weight: all use q
        return self.model_assisted_sample(f, q, idx, history)

    def estimate(self, pool: Pool, sample: Sample, correct: np.ndarray, level: float) -> Estimate:
        return self.difference_estimate(pool, sample, correct, level, method="dual/mixture-difference-t")
