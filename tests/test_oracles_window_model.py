"""Window-level features, synthetic windows and the window model, on hand-made pools."""
import numpy as np
import pytest

from daic.oracles.scores import PerInputScores
from daic.oracles.window import OnlineEstimator, WindowConfig
from daic.oracles.window_model import (
    WINDOW_FEATURES, WindowColumns, WindowModel, WindowSynthesis, synthesize_windows, window_features,
)

UNIFORM = np.full(4, 0.25)


def _cols(p, pred, spred, drift=0.5, far=0.0, conf=0.9):
    n = len(p)
    return WindowColumns(np.asarray(p, float), np.full(n, drift), np.full(n, far),
                         (np.asarray(pred) == np.asarray(spred)).astype(float), np.full(n, conf),
                         np.asarray(pred), np.asarray(spred))


def test_window_features_exact():
    cols = _cols([1.0, 0.5, 0.0, 0.5], pred=[0, 0, 0, 1], spred=[0, 0, 1, 1], drift=0.7, conf=0.8)
    f = dict(zip(WINDOW_FEATURES, window_features(cols, UNIFORM, UNIFORM)))
    assert f["mean_p_correct"] == 0.5 and f["drift_score"] == 0.7 and f["mean_confidence"] == 0.8
    assert f["agreement"] == 0.75
    # predicted histogram (.75, .25, 0, 0) vs uniform: TV = .5 * (.5 + 0 + .25 + .25) = .5
    assert f["tv_predicted"] == pytest.approx(0.5)
    assert f["tv_shadow_predicted"] == pytest.approx(0.5 * (0.25 + 0.25 + 0.25 + 0.25))
    assert f["tv_model_shadow"] == pytest.approx(0.25)
    assert f["max_class_share"] == 0.75


def _pool(n, acc, collapse, rng):
    """n inputs, accuracy ``acc``; with ``collapse`` every prediction is class 0 and p_correct
    stays at 0.9 (a confidently collapsed model), else predictions are the labels (errors moved
    to the next class) and p_correct is the truth-blind constant 0.9 as well."""
    labels = rng.integers(0, 4, size=n)
    ok = rng.uniform(size=n) < acc
    if collapse:
        pred = np.zeros(n, int)
        ok = labels == 0
    else:
        pred = np.where(ok, labels, (labels + 1) % 4)
    return _cols(np.full(n, 0.9), pred, pred), labels, ok


def test_window_model_learns_collapse_that_per_input_scores_miss():
    rng = np.random.default_rng(0)
    clean = _pool(400, 0.9, False, rng)
    conditions = {"collapse/1": _pool(400, 0.0, True, rng), "mild/1": _pool(400, 0.9, False, rng)}
    synth = WindowSynthesis(n_windows=300, min_size=100, max_size=200, label_shift_share=0.0)
    x, acc, shifted = synthesize_windows(clean, conditions, 300, synth, UNIFORM, UNIFORM, rng)
    assert x.shape == (300, len(WINDOW_FEATURES)) and np.all((shifted >= 0) & (shifted <= 1))
    model = WindowModel(UNIFORM, UNIFORM).fit(x, acc)
    collapsed, _, ok = _pool(300, 0.0, True, rng)
    healthy, _, ok2 = _pool(300, 0.9, False, rng)
    # Mean P(correct) is 0.9 for both; the window model separates them.
    assert abs(model.predict(collapsed) - ok.mean()) < 0.08
    assert abs(model.predict(healthy) - ok2.mean()) < 0.05
    # Through the estimator: the window model replaces the mean P(correct).
    est = OnlineEstimator(WindowConfig(max_count=1000), window_model=model)
    est.update(PerInputScores(collapsed.p_correct, collapsed.drift, collapsed.far.astype(bool),
                              predicted=collapsed.predicted, shadow_predicted=collapsed.shadow_predicted,
                              confidence=collapsed.confidence))
    assert est.estimate().accuracy == pytest.approx(model.predict(collapsed))
    # Inputs without predicted classes: the estimator falls back to mean P(correct).
    est.update(PerInputScores(np.full(10, 0.9), np.full(10, 0.5), np.zeros(10, bool)))
    assert est.estimate().accuracy == pytest.approx(0.9)


def test_synthesis_config_validated():
    with pytest.raises(ValueError, match="n_windows"):
        WindowSynthesis(n_windows=1)
    with pytest.raises(ValueError, match="min_size"):
        WindowSynthesis(min_size=10, max_size=5)
    with pytest.raises(ValueError, match="features must have shape"):
        WindowModel(UNIFORM, UNIFORM).fit(np.zeros((5, 3)), np.zeros(5))


def test_average_of_window_models_predicts_the_mean_residual():
    rng = np.random.default_rng(3)
    clean = _pool(300, 0.9, False, rng)
    conditions = {"collapse/1": _pool(300, 0.0, True, rng), "mild/1": _pool(300, 0.8, False, rng)}
    synth = WindowSynthesis(n_windows=200, min_size=50, max_size=150, label_shift_share=0.0)
    models = []
    for seed in (0, 1):
        x, acc, _ = synthesize_windows(clean, conditions, 200, synth, UNIFORM, UNIFORM, np.random.default_rng(seed))
        models.append(WindowModel(UNIFORM, UNIFORM, seed).fit(x, acc))
    both = WindowModel.average(models)
    probe = np.vstack([models[0].features(_pool(100, 0.0, True, rng)[0]),
                       models[0].features(_pool(100, 0.8, False, rng)[0])])
    # Residuals average, so the averaged estimate is the mean of the members' (none is clipped here).
    expected = (models[0].predict_features(probe) + models[1].predict_features(probe)) / 2
    np.testing.assert_allclose(both.predict_features(probe), expected, atol=1e-12)
    assert not np.allclose(models[0].predict_features(probe), models[1].predict_features(probe))
    with pytest.raises(ValueError, match="at least one fitted"):
        WindowModel.average([])
    with pytest.raises(ValueError, match="at least one fitted"):
        WindowModel.average([WindowModel(UNIFORM, UNIFORM)])
    with pytest.raises(ValueError, match="different reference histograms"):
        WindowModel.average([models[0], WindowModel(np.array([0.7, 0.1, 0.1, 0.1]), UNIFORM).fit(x, acc)])
