"""Combiner and OnlineAssessor on synthetic references with known structure."""
import numpy as np
import pytest

from daic.oracles.combiner import FEATURES, Combiner
from daic.oracles.pipeline import (
    AssessorConfig, OnlineAssessor, ShiftedReference, _trust_threshold, split_reference,
)
from daic.oracles.window_model import WindowSynthesis

SMALL = AssessorConfig(k=5, cv_folds=3, synthesis=WindowSynthesis(n_windows=90, min_size=50, max_size=100))
from daic.oracles.reference import OracleReference


def test_combiner_separates_separable_signals():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 3))
    y = x[:, 0] + 0.3 * rng.normal(size=2000) > 0  # only the first signal matters
    comb = Combiner("logistic", regularisation=1e-3).fit(x, y)
    p = comb.predict(np.array([[3.0, 0, 0], [-3.0, 0, 0], [0.0, 5, -5]]))
    assert p[0] > 0.99 and p[1] < 0.01
    assert 0.35 < p[2] < 0.65  # on the boundary the other signals carry no information
    with pytest.raises(ValueError, match="both correct and incorrect"):
        Combiner().fit(x, np.ones(2000, bool))
    with pytest.raises(ValueError, match="method"):
        Combiner("forest")


def _synthetic(n, rng, shift=0.0, noise=0.0):
    """Two classes; embeddings around +-e1 (moved by ``shift`` along e2); the model's
    confidence falls and errors rise as ``noise`` grows."""
    labels = rng.integers(0, 2, size=n)
    centre = np.where(labels[:, None] == 1, [1.0, 0, 0, 0], [-1.0, 0, 0, 0])
    emb = centre + rng.normal(scale=0.3, size=(n, 4)) + [0, shift, 0, 0]
    flip = rng.uniform(size=n) < 0.02 + noise
    pred = np.where(flip, 1 - labels, labels)
    conf = np.where(flip, rng.uniform(0.5, 0.8, n), rng.uniform(0.8, 1.0, n))
    probs = np.where(pred[:, None] == 1, np.column_stack([1 - conf, conf]), np.column_stack([conf, 1 - conf]))
    # The shadow agrees on correct inputs, mostly disagrees on errors.
    shadow_pred = np.where(flip & (rng.uniform(size=n) < 0.8), labels, pred)
    shadow = np.where(shadow_pred[:, None] == 1, [[0.1, 0.9]], [[0.9, 0.1]])
    return OracleReference(probs, emb, labels, shadow)


def test_assessor_end_to_end_on_synthetic_shift():
    rng = np.random.default_rng(1)
    ref = _synthetic(4000, rng)
    shifted_parts = [_synthetic(300, rng, shift=s, noise=nz) for s, nz in ((0.5, 0.1), (1.0, 0.3), (2.0, 0.5))]
    shifted = ShiftedReference(
        OracleReference(*(np.concatenate([getattr(r, f) for r in shifted_parts])
                          for f in ("probs", "embeddings", "labels", "shadow_probs"))),
        np.repeat(["a/1", "b/1", "c/1"], 300),
    )
    assessor = OnlineAssessor(SMALL).fit(ref, shifted)
    assert assessor.model_error > 0 and set(assessor.held_out_errors) == {"a/1", "b/1", "c/1"}
    # the widths it scores (the sidecar refuses outputs of other widths before they reach it)
    assert (assessor.n_classes, assessor.embedding_dim) == (ref.probs.shape[1], ref.embeddings.shape[1])
    clean = _synthetic(2000, rng)
    s = assessor.score(clean.probs, clean.embeddings, clean.shadow_probs)
    # No shift: drift percentiles uniform (mean 1/2), few inputs beyond the fitted support.
    assert abs(s.drift.mean() - 0.5) < 0.03
    assert s.far.mean() < 0.03
    assert abs(s.p_correct.mean() - clean.accuracy) < 0.03
    assert set(s.components) >= {"max_softmax", "shadow", "knn_distance", "mahalanobis"}
    far = _synthetic(500, rng, shift=6.0, noise=0.4)
    sf = assessor.score(far.probs, far.embeddings, far.shadow_probs)
    assert sf.drift.mean() > 0.95 and sf.far.mean() > 0.5
    assert sf.p_correct.mean() < s.p_correct.mean() - 0.2
    cfg = assessor.window_config(max_count=123)
    assert cfg.max_count == 123 and cfg.model_error == assessor.model_error
    assert cfg.max_drift_score == assessor.max_drift_score
    # The estimator wired to the window model: clean windows estimated near the truth and
    # trusted; the far window estimated much lower and flagged untrusted (beyond the support).
    est = assessor.new_estimator(max_count=5000)
    est.update(s)
    e = est.estimate()
    assert abs(e.accuracy - clean.accuracy) < 0.03 and e.trusted and not e.drift_alarm
    est_far = assessor.new_estimator(max_count=5000)
    est_far.update(sf)
    ef = est_far.estimate()
    assert ef.accuracy < e.accuracy - 0.2 and ef.drift_alarm and not ef.trusted
    resumed = assessor.estimator_from_state(est_far.to_state())
    assert resumed.estimate() == ef


def test_split_and_shifted_reference_contract():
    bank, cal = split_reference(7)
    np.testing.assert_array_equal(bank, [0, 2, 4, 6])
    np.testing.assert_array_equal(cal, [1, 3, 5])
    rng = np.random.default_rng(2)
    ref = _synthetic(10, rng)
    shifted = ShiftedReference(ref, np.array(["x/1"] * 5 + ["y/2"] * 5))
    back = ShiftedReference.from_arrays(shifted.to_arrays())
    np.testing.assert_array_equal(back.conditions, shifted.conditions)
    assert len(shifted.without_types(["x"]).reference) == 5
    with pytest.raises(ValueError, match="conditions"):
        ShiftedReference(ref, np.array(["x/1"] * 3))
    with pytest.raises(ValueError, match="conditions"):
        ShiftedReference.from_arrays(ref.to_arrays())


def test_assessor_refuses_before_fit_and_without_errors():
    from daic.oracles.base import NotFittedError

    with pytest.raises(NotFittedError):
        OnlineAssessor().score(np.array([[0.5, 0.5]]), np.zeros((1, 4)), np.array([[0.5, 0.5]]))
    with pytest.raises(NotFittedError):
        OnlineAssessor().n_classes
    rng = np.random.default_rng(3)
    ref = _synthetic(200, rng)
    perfect = OracleReference(np.eye(2)[ref.labels] * 0.98 + 0.01, ref.embeddings, ref.labels, ref.shadow_probs)
    with pytest.raises(ValueError, match="no errors"):
        OnlineAssessor(AssessorConfig(k=5)).fit(perfect)
    assert FEATURES[0] == "logit_max_softmax"


def test_trust_threshold_exact():
    drift = np.array([0.5, 0.6, 0.7, 0.8, 0.9])
    errors = np.array([0.01, -0.02, 0.03, 0.2, 0.3])
    # quantile 1.0 (the worst case) within 0.05: windows up to drift 0.7.
    assert _trust_threshold(drift, errors, 0.05, 1.0) == 0.7
    assert _trust_threshold(drift, errors, 0.5, 1.0) == 1.0       # everything within tolerance
    assert _trust_threshold(drift, errors, 0.001, 1.0) == 0.5     # nothing: the smallest drift
    # Ties are decided together: the 0.7 group contains a large error.
    assert _trust_threshold(np.array([0.5, 0.7, 0.7]), np.array([0.0, 0.0, 0.4]), 0.05, 1.0) == 0.5


def test_tiny_shifted_references_fall_back_without_cross_fitting():
    rng = np.random.default_rng(4)
    ref = _synthetic(200, rng)
    one_type = ShiftedReference(_synthetic(40, rng, shift=1.0, noise=0.3), np.array(["fog/1"] * 40))
    a = OnlineAssessor(SMALL).fit(ref, one_type)
    assert a.window_model is None and "fewer than 2" in a.cv_skipped
    assert a.model_error == SMALL.default_model_error and a.max_drift_score == SMALL.default_max_drift_score
    # Two types, but one of them has no errors at all: a fold's combiner cannot be fitted.
    clean_part = _synthetic(20, rng)
    perfect = OracleReference(np.eye(2)[clean_part.labels] * 0.98 + 0.01, clean_part.embeddings,
                              clean_part.labels, clean_part.shadow_probs)
    noisy = _synthetic(20, rng, shift=1.0, noise=0.5)
    both = OracleReference(*(np.concatenate([getattr(perfect, f), getattr(noisy, f)])
                             for f in ("probs", "embeddings", "labels", "shadow_probs")))
    small_cal = OracleReference(np.eye(2)[ref.labels[:40]] * 0.98 + 0.01, ref.embeddings[:40],
                                ref.labels[:40], ref.shadow_probs[:40])
    b = OnlineAssessor(SMALL).fit(small_cal, ShiftedReference(both, np.array(["a/1"] * 20 + ["b/1"] * 20)))
    assert b.window_model is None and "cross-fitting impossible" in b.cv_skipped
    s = b.score(noisy.probs, noisy.embeddings, noisy.shadow_probs)
    assert b.new_estimator(max_count=100).estimate().n == 0 and len(s) == 20


def _confidently_wrong(n, rng, error_rate):
    """A stream whose errors are as confident as its correct predictions (unlike the reference's)
    but where the shadow still disagrees on most errors."""
    labels = rng.integers(0, 2, size=n)
    emb = np.where(labels[:, None] == 1, [1.0, 0, 0, 0], [-1.0, 0, 0, 0]) + rng.normal(scale=0.3, size=(n, 4))
    flip = rng.uniform(size=n) < error_rate
    pred = np.where(flip, 1 - labels, labels)
    conf = rng.uniform(0.8, 1.0, n)
    probs = np.where(pred[:, None] == 1, np.column_stack([1 - conf, conf]), np.column_stack([conf, 1 - conf]))
    shadow_pred = np.where(flip & (rng.uniform(size=n) < 0.8), labels, pred)
    shadow = np.where(shadow_pred[:, None] == 1, [[0.1, 0.9]], [[0.9, 0.1]])
    return OracleReference(probs, emb, labels, shadow)


def test_refit_with_labels_learns_the_stream_and_leaves_the_original_alone():
    rng = np.random.default_rng(5)
    ref = _synthetic(4000, rng)
    assessor = OnlineAssessor(SMALL).fit(ref)
    labelled, unlabelled = _confidently_wrong(200, rng, 0.3), _confidently_wrong(4000, rng, 0.3)
    truth = unlabelled.accuracy

    def estimate(a):
        est = a.new_estimator(max_count=len(unlabelled))
        est.update(a.score(unlabelled.probs, unlabelled.embeddings, unlabelled.shadow_probs))
        return est.estimate().accuracy

    before = estimate(assessor)
    refit = assessor.refit_with_labels(labelled.probs, labelled.embeddings, labelled.shadow_probs, labelled.labels)
    after = estimate(refit)
    # The reference taught "confident = correct": far too optimistic on this stream. The refit
    # combiner weighs the shadow's disagreement instead and lands within 4 points (200 labels
    # alone leave about 3.2 points of standard error at 70 % accuracy).
    assert before - truth > 0.1
    assert abs(after - truth) < 0.04
    assert refit.labels_used == 200 and assessor.labels_used == 0
    assert refit.window_model is None and 0 < refit.model_error < 0.05
    assert estimate(assessor) == before  # the original is untouched
    with pytest.raises(ValueError, match="labels must be integers of shape"):
        assessor.refit_with_labels(labelled.probs, labelled.embeddings, labelled.shadow_probs, labelled.labels[:5])
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        assessor.refit_with_labels(labelled.probs, labelled.embeddings, labelled.shadow_probs, labelled.labels + 2)
    with pytest.raises(ValueError, match="label_share"):
        AssessorConfig(label_share=1.0)


def test_compositions_are_dropped_with_any_of_their_types():
    rng = np.random.default_rng(2)
    part = _synthetic(8, rng)
    conditions = np.array(["a/1", "a/2", "b/1", "c/1", "a+b/1", "b+c/2", "c+a/1", "c/3"])
    shifted = ShiftedReference(part, conditions)
    assert shifted.components[4] == ("a", "b")
    assert list(shifted.without_types(["a"]).conditions) == ["b/1", "c/1", "b+c/2", "c/3"]
    assert list(shifted.without_types(["b", "c"]).conditions) == ["a/1", "a/2"]


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_replicates_must_be_a_positive_integer(bad):
    with pytest.raises(ValueError, match="replicates must be a positive integer"):
        AssessorConfig(replicates=bad)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_calibration_replicates_must_be_a_positive_integer(bad):
    with pytest.raises(ValueError, match="calibration_replicates must be a positive integer"):
        AssessorConfig(calibration_replicates=bad)


def _naive_trust_threshold(drift, errors, tolerance, quantile):
    """The definition, one sort per prefix: the reference the fast implementation must equal."""
    order = np.argsort(drift)
    d, e = drift[order], np.abs(errors[order])
    best = None
    for i in range(len(d)):
        if i + 1 < len(d) and d[i + 1] == d[i]:
            continue
        if np.quantile(e[: i + 1], quantile) <= tolerance:
            best = i
    if best is None:
        return float(d[0])
    return 1.0 if best == len(d) - 1 else float(d[best])


@pytest.mark.parametrize("seed", range(40))
def test_trust_threshold_equals_its_definition(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 400))
    drift = np.round(rng.random(n), int(rng.integers(1, 4)))  # 1-3 decimals: many ties
    errors = rng.normal(0.0, 0.1 * rng.random(), n)
    q = float(rng.choice([0.5, 0.9, 0.95, 1.0, rng.random()]))
    tol = float(0.1 * rng.random())
    assert _trust_threshold(drift, errors, tol, q) == _naive_trust_threshold(drift, errors, tol, q)


def _three_type_shift(rng):
    parts = [_synthetic(300, rng, shift=s, noise=nz) for s, nz in ((0.5, 0.1), (1.0, 0.3), (2.0, 0.5))]
    return ShiftedReference(
        OracleReference(*(np.concatenate([getattr(r, f) for r in parts])
                          for f in ("probs", "embeddings", "labels", "shadow_probs"))),
        np.repeat(["a/1", "b/1", "c/1"], 300),
    )


def test_uncalibrated_replicates_join_the_average_and_leave_the_calibration_alone():
    """Replicates past ``calibration_replicates`` add their window model to the average (the
    same models a fully calibrated fit makes: their cross-fits use their own seeds), while the
    band, trust region and model error come from the calibrated replicates alone."""
    from dataclasses import replace

    rng = np.random.default_rng(5)
    ref, shifted = _synthetic(3000, rng), _three_type_shift(rng)
    three_of_one = OnlineAssessor(replace(SMALL, replicates=3, calibration_replicates=1)).fit(ref, shifted)
    three_of_three = OnlineAssessor(replace(SMALL, replicates=3, calibration_replicates=3)).fit(ref, shifted)
    one = OnlineAssessor(replace(SMALL, replicates=1)).fit(ref, shifted)
    assert len(three_of_one.window_model._models) == len(three_of_three.window_model._models) == 3
    assert len(three_of_one.band_model._members) == 1
    assert len(three_of_three.band_model._members) == 3
    probe = _synthetic(500, np.random.default_rng(6), shift=1.0, noise=0.3)
    estimates = []
    for a in (three_of_one, three_of_three, one):
        est = a.new_estimator(max_count=len(probe))
        est.update(a.score(probe.probs, probe.embeddings, probe.shadow_probs))
        estimates.append(est.estimate())
    assert estimates[0].accuracy == estimates[1].accuracy  # the same three window models
    assert estimates[0].accuracy != estimates[2].accuracy  # ... which one replicate alone is not
    # calibration: exactly the single calibrated replicate's
    assert three_of_one.max_drift_score == one.max_drift_score
    assert three_of_one.model_error == one.model_error
    assert len(three_of_one.window_errors["error"]) == len(one.window_errors["error"])
    from daic.oracles.window_model import WINDOW_FEATURES

    features = np.random.default_rng(7).random((50, len(WINDOW_FEATURES) + 2))
    for got, want in zip(three_of_one.band_model.predict(features), one.band_model.predict(features)):
        np.testing.assert_array_equal(got, want)
