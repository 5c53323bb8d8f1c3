"""Recalibration from labels: exact answers for each method."""
import math

import numpy as np
import pytest
from scipy.special import expit, logit

from daic.oracles.recalibration import Recalibration, fit_recalibration


def test_intercept_matches_observed_accuracy_exactly():
    rng = np.random.default_rng(1)
    p = rng.uniform(0.6, 0.99, size=300)
    y = rng.uniform(size=300) < 0.5  # the online estimate is far too optimistic
    rec = fit_recalibration(p, y, "intercept")
    assert rec.apply(p).mean() == pytest.approx(y.mean(), abs=1e-9)
    assert rec.intercept < 0 and rec.slope == 1.0
    np.testing.assert_allclose(rec.apply(p), expit(logit(p) + rec.intercept))
    resid = y - rec.apply(p)
    assert rec.std_error == pytest.approx(math.sqrt(np.mean(resid**2) / 300))


def test_platt_recovers_a_known_miscalibration():
    rng = np.random.default_rng(2)
    z = rng.normal(1.0, 1.5, size=20000)
    true_p = expit(0.5 * z - 0.7)          # what P(correct) really is
    y = rng.uniform(size=z.size) < true_p
    rec = fit_recalibration(expit(z), y, "platt")
    assert rec.slope == pytest.approx(0.5, abs=0.05)
    assert rec.intercept == pytest.approx(-0.7, abs=0.05)


def test_rogan_gladen_formula_is_exact():
    # Labelled: 40 incorrect of which 30 alarmed (TPR .75); 60 correct of which 6 alarmed (FPR .1).
    p = np.r_[np.full(30, 0.2), np.full(10, 0.8), np.full(6, 0.3), np.full(54, 0.9)]
    y = np.r_[np.zeros(40, bool), np.ones(60, bool)]
    rec = fit_recalibration(p, y, "rogan_gladen")
    assert (rec.tpr, rec.fpr, rec.n_incorrect, rec.n_correct) == (0.75, 0.1, 40, 60)
    window = np.r_[np.full(30, 0.1), np.full(70, 0.95)]  # alarm rate 0.3
    acc, se = rec.window_accuracy(window)
    assert acc == pytest.approx((0.75 - 0.3) / (0.75 - 0.1))
    gap = 0.65
    var = ((0.3 - 0.1) / gap**2) ** 2 * 0.75 * 0.25 / 40 + ((0.75 - 0.3) / gap**2) ** 2 * 0.1 * 0.9 / 60
    assert se == pytest.approx(math.sqrt(var))


def test_rogan_gladen_refuses_a_useless_alarm():
    p = np.r_[np.full(10, 0.9), np.full(10, 0.9)]
    y = np.r_[np.zeros(10, bool), np.ones(10, bool)]
    with pytest.raises(ValueError, match="does not separate"):
        fit_recalibration(p, y, "rogan_gladen")
    with pytest.raises(ValueError, match="both correct and incorrect"):
        fit_recalibration(p, np.ones(20, bool), "rogan_gladen")


@pytest.mark.parametrize("method", ["intercept", "platt", "rogan_gladen"])
def test_round_trip(method):
    p = np.r_[np.full(10, 0.3), np.full(30, 0.9)]
    y = np.r_[np.zeros(8, bool), np.ones(32, bool)]
    rec = fit_recalibration(p, y, method)
    back = Recalibration.from_dict(rec.to_dict())
    assert back.to_dict() == rec.to_dict()
    assert back.window_accuracy(p) == pytest.approx(rec.window_accuracy(p), nan_ok=True)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="method"):
        fit_recalibration(np.array([0.5]), np.array([True]), "magic")
    with pytest.raises(ValueError, match="correct must have shape"):
        fit_recalibration(np.array([0.5, 0.5]), np.array([True]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fit_recalibration(np.array([1.5]), np.array([True]))
    with pytest.raises(ValueError, match="unknown recalibration fields"):
        Recalibration.from_dict({"method": "intercept", "n_labels": 1, "std_error": 0.1, "bogus": 1})
