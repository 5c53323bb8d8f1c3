"""Interval formulas and the SRS label-count formula against hand-computed values and the anchors."""
import numpy as np
import pytest
from scipy import stats

from daic.sampling.intervals import clopper_pearson, wilson, wilson_half_width, wilson_required_n


def test_wilson_required_n_matches_the_issue_anchors():
    # The issue: ~864 labels for +-2 points at 95% when accuracy is 90%, ~456 at 95%
    # (z^2 p (1-p) / e^2 = 864.4 and 456.2); Wilson's interval is a little wider (867 and 469).
    n90 = wilson_required_n(0.90, 0.02, 0.95)
    n95 = wilson_required_n(0.95, 0.02, 0.95)
    assert 864 <= n90 <= 864 * 1.01
    assert 456 <= n95 <= 456 * 1.03
    # Minimality: n meets the half-width, n - 1 does not.
    for p, n in ((0.9, n90), (0.95, n95)):
        assert wilson_half_width(p, n, 0.95) <= 0.02 < wilson_half_width(p, n - 1, 0.95)


def test_wilson_interval_hand_computed():
    # 48 of 50 at 95%: centre (48 + 1.92) / 53.84, half 1.96/1.0768 * sqrt(.96*.04/50 + 3.84/10000)
    z = stats.norm.ppf(0.975)
    centre = (0.96 + z * z / 100) / (1 + z * z / 50)
    half = z / (1 + z * z / 50) * np.sqrt(0.96 * 0.04 / 50 + z * z / 10_000)
    lo, hi = wilson(48, 50, 0.95)
    assert lo == pytest.approx(centre - half) and hi == pytest.approx(centre + half)
    assert (lo, hi) == pytest.approx((0.8655, 0.9890), abs=1e-3)


def test_clopper_pearson_edges_and_exact_coverage():
    assert clopper_pearson(50, 50, 0.95) == pytest.approx((0.025 ** (1 / 50), 1.0))
    assert clopper_pearson(0, 50, 0.95)[0] == 0.0
    # Exact coverage at p = 0.99, n = 50 (where Wilson dips to ~91%): never below 95%.
    n, p = 50, 0.99
    xs = np.arange(n + 1)
    covered = [lo <= p <= hi for lo, hi in (clopper_pearson(int(x), n, 0.95) for x in xs)]
    cover = float(stats.binom.pmf(xs, n, p)[covered].sum())
    wcover = float(stats.binom.pmf(xs, n, p)[[wilson(int(x), n, .95)[0] <= p <= wilson(int(x), n, .95)[1] for x in xs]].sum())
    assert cover >= 0.95
    assert wcover < 0.93  # why SRS uses Clopper-Pearson


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="successes"):
        clopper_pearson(51, 50, 0.95)
    with pytest.raises(ValueError, match="half_width"):
        wilson_required_n(0.9, 0.0, 0.95)
    with pytest.raises(ValueError, match="p must be"):
        wilson_required_n(1.5, 0.02, 0.95)
