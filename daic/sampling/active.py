"""Active, model-assisted assessment: sample where the oracle is unsure, estimate with a difference
estimator that uses every unlabeled input.

The pool mean of the (recalibrated) oracle prediction f is an estimate of accuracy that costs no
labels but is biased under shift; the labeled draws estimate that bias. Each draw i, made with
probability q_i, contributes

    mean_pool(f) + (y_i - f_i) / (N q_i),

whose expectation is the pool accuracy for any f and q fixed before the draw (the difference /
prediction-powered estimator, Särndal et al. 1992; Angelopoulos et al., Science 2023; with active
sampling, Zrnic & Candès, ICML 2024; for model evaluation, Fogliato et al. 2024). Its variance is
smallest when q_i is proportional to the root mean squared residual, which for a calibrated f is
sqrt(f (1 - f)): labels go to the inputs the oracle is unsure about. f and q are re-fitted from the
labels after each batch (see `daic.sampling.calibration`), and a uniform share of q (0.1, and 0.5
until the oracle has been recalibrated on 20 labels) bounds every weight. The interval is the
skewness-corrected t interval of `daic.sampling.pps.mean_interval`, with the variance floored at
what the recalibrated model predicts; without those two guards the plain t interval undercovered
(86-92%) at 99% accuracy and at 50 labels under shift in our simulations.
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


@dataclass(frozen=True)
class ActiveModelAssisted(AdaptivePPSDesign):
    """Active sampling (q ~ sqrt(f(1-f))) with a difference estimator over the whole pool.

    Attributes: see `AdaptivePPSDesign`.
    """

    uniform_share: float = 0.1
    initial_uniform_share: float | None = 0.5
    name: str = "active"

    def draw(
        self, pool: Pool, history: Sample, correct: np.ndarray, n: int, rng: np.random.Generator
    ) -> Sample:
        correct = check_draw_args(self, pool, history, correct, n)
        f = self.prediction(pool, history, correct)
        q = mixed_probabilities(np.sqrt(f * (1 - f)), self.share(history))
        idx = draw_with_replacement(q, n, rng)
        return self.model_assisted_sample(f, q, idx, history)

    def estimate(self, pool: Pool, sample: Sample, correct: np.ndarray, level: float) -> Estimate:
        return self.difference_estimate(pool, sample, correct, level, method="active/difference-t")
