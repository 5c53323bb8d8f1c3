"""Sequential change detection (daic.oracles.change): Page's CUSUM against known truth.

Every stream here is synthetic with a known change point and a fixed seed; the Gaussian case
is checked against Siegmund's (1985) approximation of the average run length, the classic
check of a CUSUM implementation.
"""
import json
import math

import numpy as np
import pytest

from daic.oracles.change import ChangeConfig, Cusum, CusumDetector, excursion_maxima, threshold_for_rate
from daic.oracles.scores import PerInputScores
from daic.oracles.trigger import TriggerPolicy, decide
from daic.oracles.window import OnlineEstimator, WindowConfig


def _siegmund_arl(delta: float, h: float) -> float:
    """ARL of a CUSUM on N(mu, 1) increments minus k, delta = mu - k (Siegmund 1985, eq. 2.57)."""
    b = h + 1.166
    if delta == 0:
        return b * b
    return (math.exp(-2 * delta * b) + 2 * delta * b - 1) / (2 * delta * delta)


def _clean_errors(rng, n):
    """Clean-traffic-like expected errors: most near 0, a few large (mean about 0.013)."""
    return np.where(rng.uniform(size=n) < 0.01, rng.uniform(0.3, 1.0, n), rng.beta(1, 150, n))


def test_path_with_ceiling_equals_the_recursion():
    rng = np.random.default_rng(1)
    c = Cusum(k=0.1, h=1.0, cap=1.5)
    x = rng.uniform(0, 0.4, size=500)
    s, ref = 0.3, []
    for v in x:
        s = min(c.cap, max(0.0, s + v - c.k))
        ref.append(s)
    assert np.allclose(c.path(x, start=0.3), ref)
    # Without reaching the ceiling the vectorised identity is used alone.
    y = rng.uniform(0, 0.15, size=50)
    s, ref = 0.0, []
    for v in y:
        s = min(c.cap, max(0.0, s + v - c.k))
        ref.append(s)
    assert np.allclose(c.path(y), ref)


def test_excursion_maxima_of_a_small_walk():
    # S: 1, 3, 0, 0, 2, 1, 0 -> excursions with maxima 3 and 2
    assert excursion_maxima(np.array([1, 2, -5, -1, 2, -1, -3.0])).tolist() == [3.0, 2.0]


def test_gaussian_threshold_matches_siegmund():
    """For N(0,1) scores, k = 0.5 (drop 1) and the rate of Siegmund's ARL at h = 4 (about 1/338),
    the calibration must find h close to 4."""
    rng = np.random.default_rng(2)
    scores = rng.normal(size=400_000)
    scores -= scores.mean()
    rate = 1.0 / _siegmund_arl(-0.5, 4.0)
    cusum = CusumDetector.calibrate(scores, ChangeConfig(drop=0.9999, false_alarm_rate=rate, safety=1.0,
                                                         simulated_inputs=2_000_000, seed=3))
    assert cusum.k == pytest.approx(0.5, abs=1e-3)
    assert cusum.h == pytest.approx(4.0, abs=0.25)


def test_extrapolated_tail_matches_the_empirical_quantile():
    """The exponential tail fitted to the largest maxima agrees with the plain quantile where
    the simulation can still count (rate 1e-4 over 2M inputs: 200 excursions)."""
    rng = np.random.default_rng(4)
    e = _clean_errors(rng, 5000)
    k = e.mean() + 0.025
    maxima = np.concatenate([excursion_maxima(rng.choice(e, 500_000) - k) for _ in range(8)])
    empirical = threshold_for_rate(maxima, 4_000_000, 1e-4, tail=200)
    extrapolated = threshold_for_rate(maxima, 4_000_000, 1e-4, tail=1000)  # fitted further down
    assert extrapolated == pytest.approx(empirical, rel=0.1)


def test_false_alarm_rate_on_clean_streams_is_bounded():
    """Calibrated for 1e-4 per input (safety 1): alarm onsets on fresh clean streams stay near it."""
    rng = np.random.default_rng(5)
    e = _clean_errors(rng, 5000)
    cusum = CusumDetector.calibrate(e, ChangeConfig(false_alarm_rate=1e-4, safety=1.0, seed=6))
    det = CusumDetector(cusum)
    n = 3_000_000
    for _ in range(n // 100_000):
        det.update(rng.choice(e, 100_000))
    rate = det.alarms / n
    # Poisson counting error on ~300 expected alarms is ~6 %.
    assert 0.75e-4 < rate < 1.25e-4


def test_a_ten_point_drop_is_detected_within_two_batches_and_clean_streams_stay_quiet():
    rng = np.random.default_rng(7)
    reference = _clean_errors(rng, 5000)
    cusum = CusumDetector.calibrate(reference, ChangeConfig())  # 1e-5 per input, safety 10
    delays, early = [], 0
    for _ in range(40):
        det = CusumDetector(cusum)
        before = det.update(_clean_errors(rng, 2000))
        early += int(before.any())
        # After the change point: 10 more points of expected error on average.
        after = np.clip(_clean_errors(rng, 1000) + rng.uniform(0.0, 0.2, 1000), 0, 1)
        on = det.update(after)
        delays.append(int(np.argmax(on)) + 1 if on.any() else 10**9)
    assert early == 0
    assert max(delays) <= 200
    # A smaller rise (3 points) is slower or undetected, but never alarms before the change.
    det = CusumDetector(cusum)
    assert not det.update(_clean_errors(rng, 5000)).any()


def test_detector_state_round_trips_and_rejects_bad_state():
    det = CusumDetector(Cusum(k=0.05, h=2.0, cap=4.0, mean0=0.01, rate=1e-6))
    det.update(np.full(30, 0.2))
    state = json.loads(json.dumps(det.to_state()))
    back = CusumDetector.from_state(state)
    assert back.statistic == pytest.approx(det.statistic) and back.alarm == det.alarm
    assert back.inputs == 30 and back.alarms == det.alarms == 1
    # Latched: below h but above 0 the alarm holds; at 0 it clears.
    back.update(np.full(25, 0.05 - 0.1))  # S: 4 (cap) - 25 x 0.1 = 1.5 < h = 2
    assert 0 < back.statistic < 1 and back.alarm
    back.update(np.full(40, 0.0))
    assert back.statistic == 0 and not back.alarm
    with pytest.raises(ValueError, match="missing 'statistic'"):
        CusumDetector.from_state({"cusum": state["cusum"]})
    with pytest.raises(ValueError, match="cap must exceed h"):
        Cusum(k=0.0, h=2.0, cap=1.0)
    with pytest.raises(ValueError, match="drop"):
        ChangeConfig(drop=0.0)


def _scores(p):
    p = np.asarray(p, dtype=float)
    return PerInputScores(p, np.full(p.size, 0.5), np.zeros(p.size, bool))


def test_estimator_reports_the_change_alarm_and_keeps_it_in_its_state():
    cusum = Cusum(k=0.03, h=3.0, cap=6.0)
    est = OnlineEstimator(WindowConfig(max_count=1000, change=cusum))
    est.update(_scores(np.full(1000, 0.99)))
    e = est.estimate()
    assert not e.change_alarm and e.change_statistic == 0.0
    est.update(_scores(np.full(100, 0.85)))  # +0.12 per input over k: 100 x 0.12 = 12 > 3
    e = est.estimate()
    assert e.change_alarm and e.change_statistic == pytest.approx(2.0)  # capped at 2 h
    assert e.accuracy > 0.97  # the window average has barely moved
    back = OnlineEstimator.from_state(json.loads(json.dumps(est.to_state())))
    assert back.estimate().change_alarm and back.config.change == cusum
    # The alarm holds until clean traffic has paid the statistic back to 0: 6 / (0.03 - 0.01) = 300 inputs.
    back.update(_scores(np.full(200, 0.99)))
    e = back.estimate()
    assert e.change_alarm and e.change_statistic < 1.0
    back.update(_scores(np.full(101, 0.99)))
    assert not back.estimate().change_alarm
    # An estimator without a detector reports none.
    plain = OnlineEstimator(WindowConfig(max_count=10))
    plain.update(_scores([0.5] * 10))
    assert math.isnan(plain.estimate().change_statistic) and not plain.estimate().change_alarm


def test_trigger_fires_on_the_change_alarm_and_waits_for_it_to_clear():
    cusum = Cusum(k=0.03, h=3.0, cap=6.0)
    est = OnlineEstimator(WindowConfig(max_count=1000, change=cusum))
    est.update(_scores(np.full(900, 0.99)))
    est.update(_scores(np.full(100, 0.85)))
    e = est.estimate()
    policy = TriggerPolicy(threshold=0.03, mode="drop", reference_accuracy=0.99, min_evidence=200)
    d = decide(policy, e)
    assert d.assess and "change detected" in d.reason
    assert not decide(TriggerPolicy(threshold=0.03, mode="drop", reference_accuracy=0.99,
                                    trigger_on_change=False), e).assess
    # Disarmed: an estimate above threshold + hysteresis does not re-arm while the alarm is on.
    assert not decide(policy, e, armed=False).armed


def test_a_floor_on_the_clean_mean_shifts_k_and_h_together():
    rng = np.random.default_rng(8)
    e = _clean_errors(rng, 5000)
    plain = CusumDetector.calibrate(e, ChangeConfig(seed=1))
    floored = CusumDetector.calibrate(e, ChangeConfig(seed=1), at_least=e.mean() + 0.05)
    assert floored.mean0 == pytest.approx(e.mean() + 0.05) and floored.k == pytest.approx(plain.k + 0.05)
    assert floored.h == pytest.approx(plain.h, rel=0.05)  # the same scores, shifted: the same walk
    assert CusumDetector.calibrate(e, ChangeConfig(seed=1), at_least=0.0) == plain  # below the mean: no effect
    # Traffic 5 points worse than the calibration rows alarms with the plain detector, not the floored one.
    worse = np.clip(e + 0.05, 0, 1)
    det_plain, det_floor = CusumDetector(plain), CusumDetector(floored)
    for _ in range(20):
        x = rng.choice(worse, 1000)
        det_plain.update(x)
        det_floor.update(x)
    assert det_plain.alarms > 0 and det_floor.alarms == 0
