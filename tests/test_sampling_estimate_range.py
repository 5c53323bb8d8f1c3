"""Every design's estimate is an accuracy in [0, 1], whatever rounding or weighting does: the demo's
evaluate step once failed on a stratified estimate of 1.0000000000000002 (an all-correct sample,
stratum weights summing to 1 + 1e-16)."""
from __future__ import annotations

import math

import pytest

from daic.sampling.sample import Estimate


def _estimate(accuracy, lower, upper):
    return Estimate(accuracy=accuracy, lower=lower, upper=upper, level=0.95, n_labels=10, n_draws=10,
                    n_failures_found=0, method="test")


@pytest.mark.parametrize("given,expected", [
    ((1.0000000000000002, 0.9, 1.1), (1.0, 0.9, 1.0)),
    ((-1e-17, -0.2, 0.1), (0.0, 0.0, 0.1)),
    ((0.5, 0.4, 0.6), (0.5, 0.4, 0.6)),
])
def test_estimates_are_clipped_to_accuracies(given, expected):
    e = _estimate(*given)
    assert (e.accuracy, e.lower, e.upper) == expected


def test_a_nan_estimate_is_an_error_not_a_clipped_value():
    with pytest.raises(ValueError, match="NaN"):
        _estimate(math.nan, 0.0, 1.0)


def test_the_stratified_design_on_an_all_correct_sample_stays_at_most_one():
    """Known truth: every labelled input correct. The design's weights need not sum to exactly 1."""
    import numpy as np

    from daic.sampling.pool import Pool
    from daic.sampling.sample import Sample
    from daic.sampling.stratified import StratifiedNeyman

    # seed 14: pool of 1,006 where the stratum weights' rounding gave 1.0000000000000002 before
    rng = np.random.default_rng(14)
    n = int(rng.integers(300, 5000))
    pool = Pool(ids=np.array([f"i{k}" for k in range(n)]), p_correct=rng.uniform(0.05, 0.999, n),
                predictions=rng.integers(0, 10, n))
    design = StratifiedNeyman(interval="korn-graubard", min_per_stratum=2, n_strata=5, sd_floor=0.2)
    sample = design.draw(pool, Sample.empty(), np.zeros(0, bool), int(rng.integers(20, 200)), rng)
    est = design.estimate(pool, sample, np.ones(sample.n_draws, bool), 0.95)
    assert 0.0 <= est.lower <= est.accuracy <= est.upper <= 1.0
    assert est.accuracy == 1.0
