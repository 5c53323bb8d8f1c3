"""OnlineEstimator: window arithmetic, band, drift alarm rate, trust flag, state round trip."""
import json
import math
from statistics import NormalDist

import numpy as np
import pytest

from daic.oracles.drift import drift_test
from daic.oracles.recalibration import fit_recalibration
from daic.oracles.scores import PerInputScores
from daic.oracles.window import OnlineEstimator, WindowConfig


def _scores(p, drift=None, far=None):
    p = np.asarray(p, dtype=float)
    return PerInputScores(p, np.full(p.size, 0.5) if drift is None else drift,
                          np.zeros(p.size, bool) if far is None else far)


def test_count_window_keeps_last_inputs_and_exact_band():
    est = OnlineEstimator(WindowConfig(max_count=4, model_error=0.0, min_trusted_count=1))
    est.update(_scores([1.0, 1.0, 0.2]))
    est.update(_scores([0.5, 0.8, 0.9]))  # window is now [0.2, 0.5, 0.8, 0.9]
    e = est.estimate()
    assert e.n == 4
    assert e.accuracy == pytest.approx(0.6)
    sd = math.sqrt(0.2 * 0.8 + 0.25 + 0.8 * 0.2 + 0.9 * 0.1) / 4
    z = NormalDist().inv_cdf(0.975)
    assert e.lower == pytest.approx(0.6 - z * sd)
    assert e.upper == pytest.approx(0.6 + z * sd)


def test_model_error_adds_in_quadrature():
    est = OnlineEstimator(WindowConfig(max_count=10, model_error=0.03, level=0.9))
    est.update(_scores([1.0] * 10))  # no sampling variance
    e = est.estimate()
    assert e.upper == 1.0
    assert e.lower == pytest.approx(1.0 - NormalDist().inv_cdf(0.95) * 0.03)


def test_time_window_evicts_by_age():
    est = OnlineEstimator(WindowConfig(max_count=None, max_age_s=10.0, min_trusted_count=1))
    est.update(_scores([0.0, 0.0]), timestamps=np.array([0.0, 5.0]))
    est.update(_scores([1.0]), timestamps=12.0)  # the input at t=0 is now older than 10 s
    assert est.estimate().accuracy == pytest.approx(0.5)
    assert est.estimate(now=15.5).n == 1  # t=5 dropped at 15.5 (age 10.5)
    assert est.estimate(now=30.0).n == 0
    assert math.isnan(est.estimate().accuracy) and not est.estimate().trusted


def test_count_and_time_limits_both_apply():
    est = OnlineEstimator(WindowConfig(max_count=3, max_age_s=100.0))
    est.update(_scores([0.1, 0.2, 0.3, 0.4, 0.5]), timestamps=np.arange(5.0))
    assert len(est) == 3
    est.update(_scores([0.9]), timestamps=103.5)  # t=2, 3 are older than 100 s
    assert est.estimate().accuracy == pytest.approx((0.5 + 0.9) / 2)


def test_timestamps_validated():
    est = OnlineEstimator(WindowConfig(max_count=None, max_age_s=5.0))
    with pytest.raises(ValueError, match="timestamps are required"):
        est.update(_scores([0.5]))
    est.update(_scores([0.5]), timestamps=10.0)
    with pytest.raises(ValueError, match="non-decreasing"):
        est.update(_scores([0.5]), timestamps=9.0)
    with pytest.raises(ValueError, match="shape"):
        est.update(_scores([0.5, 0.5]), timestamps=np.array([11.0, 12.0, 13.0]))


@pytest.mark.parametrize("bad", [dict(max_count=None, max_age_s=None), dict(max_count=0),
                                 dict(level=1.0), dict(drift_alpha=0.0), dict(model_error=-1.0)])
def test_bad_config_is_named(bad):
    with pytest.raises(ValueError):
        WindowConfig(**bad)


def test_trust_flag_follows_far_fraction_and_count():
    est = OnlineEstimator(WindowConfig(max_count=100, max_far_fraction=0.1, min_trusted_count=10))
    est.update(_scores([0.9] * 5))
    assert not est.estimate().trusted  # too few inputs
    est.update(_scores([0.9] * 15, far=np.r_[np.ones(2, bool), np.zeros(13, bool)]))
    assert est.estimate().trusted  # 2 / 20 = 0.10
    est.update(_scores([0.9], far=np.ones(1, bool)))
    e = est.estimate()
    assert not e.trusted and e.far_fraction == pytest.approx(3 / 21)


def test_drift_false_alarm_rate_matches_alpha():
    rng = np.random.default_rng(0)
    alarms = [drift_test(rng.uniform(size=200), alpha=0.05).alarm for _ in range(4000)]
    rate = np.mean(alarms)
    assert abs(rate - 0.05) < 3 * math.sqrt(0.05 * 0.95 / 4000)


def test_drift_test_detects_shift_and_scores_exactly():
    t = drift_test(np.array([0.9, 0.8, 0.95, 0.85] * 25), alpha=0.01)
    assert t.alarm and t.score == pytest.approx(0.875)
    assert t.p_value == pytest.approx(1 - NormalDist().cdf(0.375 / math.sqrt(1 / 1200)))
    with pytest.raises(ValueError, match="alpha"):
        drift_test(np.array([0.5]), alpha=1.5)


def test_recalibration_applies_to_window():
    est = OnlineEstimator(WindowConfig(max_count=100, fuse_label_free=False))
    est.update(_scores([0.8] * 50))
    y = np.r_[np.ones(30, bool), np.zeros(20, bool)]
    est.recalibrate(fit_recalibration(np.full(50, 0.8), y, "intercept"))
    e = est.estimate()
    assert e.recalibrated and e.accuracy == pytest.approx(0.6)


def test_recalibrated_estimate_is_fused_with_the_label_free_one_by_inverse_variance():
    est = OnlineEstimator(WindowConfig(max_count=100, model_error=0.04, fuse_label_free=True))
    est.update(_scores([0.8] * 50))
    y = np.r_[np.ones(30, bool), np.zeros(20, bool)]
    rec = fit_recalibration(np.full(50, 0.8), y, "intercept")
    est.recalibrate(rec)
    e = est.estimate()
    se = rec.std_error  # sqrt(0.24 / 50) = 0.0693 for the labels, 0.04 for the label-free 0.8
    w_lab, w_free = 1 / se**2, 1 / 0.04**2
    assert e.accuracy == pytest.approx((0.6 * w_lab + 0.8 * w_free) / (w_lab + w_free))
    fused_err = 1 / math.sqrt(w_lab + w_free)
    assert e.error_sd == pytest.approx(math.sqrt(50 * 0.6 * 0.4 / 50**2 + fused_err**2))
    # The labels win when the label-free estimate is known to be poor.
    far = OnlineEstimator(WindowConfig(max_count=100, model_error=0.5, fuse_label_free=True))
    far.update(_scores([0.8] * 50))
    far.recalibrate(rec)
    assert abs(far.estimate().accuracy - 0.6) < 0.01


def test_state_round_trips_through_json():
    est = OnlineEstimator(WindowConfig(max_count=None, max_age_s=60.0, min_trusted_count=1))
    est.update(_scores([0.2, 0.9, 0.7], drift=np.array([0.1, 0.5, 0.99]), far=np.array([0, 0, 1], bool)),
               timestamps=np.array([1.0, 2.0, 3.0]))
    est.recalibrate(fit_recalibration(np.array([0.9, 0.9, 0.2, 0.3]), np.array([1, 1, 0, 0]), "rogan_gladen"))
    back = OnlineEstimator.from_state(json.loads(json.dumps(est.to_state())))
    assert back.estimate() == est.estimate()
    assert est.estimate().accuracy == pytest.approx(2 / 3)  # Rogan-Gladen with TPR 1, FPR 0
    back.update(_scores([0.5]), timestamps=70.0)  # the time limit survived the round trip
    assert back.estimate().n == 1
    with pytest.raises(ValueError, match="version"):
        OnlineEstimator.from_state({"version": 99})
    state = est.to_state()
    del state["window"]
    with pytest.raises(ValueError, match="window"):
        OnlineEstimator.from_state(state)


def test_drift_tolerance_ignores_small_shifts_at_every_window_size_and_keeps_alpha_at_the_margin():
    """Known truth: Beta-distributed percentiles with a chosen mean and the uniform's variance."""
    rng = np.random.default_rng(11)

    def beta(mean, size):
        c = mean * (1 - mean) * 12 - 1  # a + b for variance 1/12
        return rng.beta(mean * c, (1 - mean) * c, size=size)

    # Slightly unlike the reference (mean 0.53): never alarms with a 0.05 margin, even at 5,000 inputs,
    # while the plain test (no margin) alarms at large windows.
    for n in (100, 1000, 5000):
        assert not any(drift_test(beta(0.53, n), alpha=0.001, tolerance=0.05).alarm for _ in range(200))
    assert all(drift_test(beta(0.53, 5000), alpha=0.01).alarm for _ in range(20))
    # At the margin (mean 0.55) the false-alarm rate is alpha.
    alarms = np.mean([drift_test(beta(0.55, 200), alpha=0.05, tolerance=0.05).alarm for _ in range(4000)])
    assert abs(alarms - 0.05) < 3 * math.sqrt(0.05 * 0.95 / 4000)
    # A real shift (mean 0.65) is detected from a few hundred inputs on.
    assert all(drift_test(beta(0.65, 500), alpha=0.01, tolerance=0.05).alarm for _ in range(50))
    with pytest.raises(ValueError, match="tolerance"):
        drift_test(beta(0.5, 10), alpha=0.01, tolerance=0.5)
    # The window applies its configured margin, and says nothing below min_trusted_count inputs.
    est = OnlineEstimator(WindowConfig(max_count=5000, drift_tolerance=0.05))
    est.update(_scores(np.full(5000, 0.9), drift=beta(0.53, 5000)))
    assert not est.estimate().drift_alarm
    small = OnlineEstimator(WindowConfig(max_count=20, drift_tolerance=0.05, min_trusted_count=50))
    small.update(_scores(np.full(20, 0.9), drift=np.full(20, 0.99)))
    e = small.estimate()
    assert not e.drift_alarm and e.drift_p_value < 1e-6  # the p-value is still reported
