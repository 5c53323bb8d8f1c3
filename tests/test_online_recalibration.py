"""Recalibration from labels: exact answers for each method."""
import json
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


# --- covariate recalibration ---------------------------------------------------------------------

from daic.oracles.recalibration import RecalibrationCovariates  # noqa: E402
from daic.oracles.scores import PerInputScores  # noqa: E402
from daic.oracles.window import OnlineEstimator, WindowConfig  # noqa: E402


def _stream(rng, n, class_share=None):
    """A shifted stream where the online P(correct) misses a class-specific failure: inputs
    predicted as class 3 have e^-2 times the odds of being right that p says, and shadow
    disagreement lowers the odds further; both are visible in the covariates, not in p.
    ``class_share``: predicted-class proportions (uniform by default)."""
    z = rng.normal(2.0, 1.0, size=n)
    pred = rng.choice(5, size=n, p=class_share)
    agree = rng.uniform(size=n) < 0.8
    conf = expit(z + rng.normal(0, 0.5, size=n))
    drift = rng.uniform(size=n)
    true_logit = z - 2.0 * (pred == 3) - 1.0 * (~agree)
    y = rng.uniform(size=n) < expit(true_logit)
    cov = RecalibrationCovariates(agree.astype(float), conf, drift, pred)
    return expit(z), y, cov, expit(true_logit)


def test_covariate_matches_labelled_accuracy_exactly_and_recovers_known_effects():
    rng = np.random.default_rng(3)
    p, y, cov, _ = _stream(rng, 20000)
    rec = fit_recalibration(p, y, "covariate", covariates=cov, n_classes=5)
    # Unpenalised intercept: the score equation makes the corrected mean equal the observed accuracy.
    assert rec.apply(p, cov).mean() == pytest.approx(y.mean(), abs=1e-6)
    assert rec.slope == pytest.approx(1.0, abs=0.1)
    assert rec.weights[0] == pytest.approx(1.0, abs=0.15)          # agreement
    offsets = np.array(rec.class_offsets)
    assert offsets[3] - np.delete(offsets, 3).mean() == pytest.approx(-2.0, abs=0.2)


def test_covariate_beats_intercept_when_the_stream_moves_on():
    # Labels come from the start of the stream; later, more inputs land in the failing class.
    # The intercept correction carries the start's average bias over; the covariate one knows
    # where the bias comes from.
    rng = np.random.default_rng(4)
    errs_cov, errs_int = [], []
    for _ in range(40):
        p, y, cov, _ = _stream(rng, 200)
        p2, _, rest_cov, true_p = _stream(rng, 2000, class_share=[0.1, 0.1, 0.1, 0.6, 0.1])
        target = true_p.mean()
        r_cov = fit_recalibration(p, y, "covariate", covariates=cov, n_classes=5)
        r_int = fit_recalibration(p, y, "intercept")
        errs_cov.append(abs(r_cov.window_accuracy(p2, rest_cov)[0] - target))
        errs_int.append(abs(r_int.window_accuracy(p2)[0] - target))
    assert np.mean(errs_cov) < 0.5 * np.mean(errs_int)


def test_covariate_needs_its_inputs_and_round_trips():
    rng = np.random.default_rng(5)
    p, y, cov, _ = _stream(rng, 300)
    with pytest.raises(ValueError, match="needs covariates"):
        fit_recalibration(p, y, "covariate")
    with pytest.raises(ValueError, match="prior_strength"):
        fit_recalibration(p, y, "covariate", covariates=cov, prior_strength=0.0)
    with pytest.raises(ValueError, match="confidence must lie"):
        RecalibrationCovariates(cov.agreement, np.full(300, np.nan), cov.drift, cov.predicted)
    rec = fit_recalibration(p, y, "covariate", covariates=cov, n_classes=5)
    with pytest.raises(ValueError, match="needs the inputs' covariates"):
        rec.apply(p)
    back = Recalibration.from_dict(json.loads(json.dumps(rec.to_dict())))
    assert back == rec
    with pytest.raises(ValueError, match="weights"):
        Recalibration.from_dict({**rec.to_dict(), "weights": [1.0]})


def test_estimator_applies_covariate_recalibration_to_its_window_columns():
    rng = np.random.default_rng(6)
    p, y, cov, _ = _stream(rng, 400)
    shadow = np.where(cov.agreement == 1.0, cov.predicted, (cov.predicted + 1) % 5)
    scores = PerInputScores(p, cov.drift, np.zeros(400, bool), predicted=cov.predicted,
                            shadow_predicted=shadow, confidence=cov.confidence)
    rec = fit_recalibration(p[:200], y[:200], "covariate",
                            covariates=RecalibrationCovariates.from_scores(scores.subset(np.arange(200))), n_classes=5)
    est = OnlineEstimator(WindowConfig(max_count=1000, fuse_label_free=False))
    est.recalibrate(rec)
    est.update(scores.subset(np.arange(200, 400)))
    later = RecalibrationCovariates.from_scores(scores.subset(np.arange(200, 400)))
    assert est.estimate().accuracy == pytest.approx(rec.apply(p[200:], later).mean())
    resumed = OnlineEstimator.from_state(json.loads(json.dumps(est.to_state())))
    assert resumed.estimate().accuracy == pytest.approx(est.estimate().accuracy)
    with pytest.raises(ValueError, match="needs scores with predicted"):
        est.update(PerInputScores(p[:3], cov.drift[:3], np.zeros(3, bool)))
    plain = OnlineEstimator(WindowConfig(max_count=1000))
    plain.update(PerInputScores(p[:3], cov.drift[:3], np.zeros(3, bool)))
    with pytest.raises(ValueError, match="window holds inputs without them"):
        plain.recalibrate(rec)


def test_covariate_rows_round_trip_through_json():
    cov = RecalibrationCovariates(np.array([1.0, 0.0, 1.0]), np.array([0.9, 0.4, 0.7]), np.array([0.5, 0.99, 0.1]),
                                  np.array([3, 7, 0]))
    back = RecalibrationCovariates.from_rows(json.loads(json.dumps(cov.as_rows().tolist())))
    for name in ("agreement", "confidence", "drift", "predicted"):
        np.testing.assert_array_equal(getattr(back, name), getattr(cov, name))
    assert back.predicted.dtype == np.int64
