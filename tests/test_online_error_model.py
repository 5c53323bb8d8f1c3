"""ErrorModel: exact interpolation, recovery of a known error scale, validation, and its use in
the estimator's band."""
import json
import math
from statistics import NormalDist

import numpy as np
import pytest

from daic.oracles.error_model import ErrorModel
from daic.oracles.scores import PerInputScores
from daic.oracles.window import OnlineEstimator, WindowConfig


def _linear(a=0.01, b=0.1, c=-0.05):
    axis = tuple(np.linspace(0, 1, 5))
    return ErrorModel(axis, axis, tuple(tuple(a + b * d + c * e + 0.05 for e in axis) for d in axis))


def test_bilinear_interpolation_is_exact_on_a_linear_grid_and_flat_outside():
    m = _linear()
    for d, e in [(0.0, 0.0), (0.3, 0.7), (0.62, 0.11), (1.0, 1.0)]:
        assert m(d, e) == pytest.approx(0.06 + 0.1 * d - 0.05 * e)
    assert math.isnan(m(float("nan"), 0.5))


def test_fit_recovers_a_known_error_scale():
    rng = np.random.default_rng(0)
    n = 40000
    drift = rng.uniform(0.5, 1.0, n)
    est = rng.uniform(0.3, 1.0, n)
    sd = 0.01 + 0.2 * (drift - 0.5) * (1.2 - est)
    err = rng.normal(0.0, sd)
    m = ErrorModel.fit(drift, est, err)
    for d, e in [(0.55, 0.95), (0.75, 0.7), (0.9, 0.5), (0.95, 0.9)]:
        truth = 0.01 + 0.2 * (d - 0.5) * (1.2 - e)
        assert m(d, e) == pytest.approx(truth, rel=0.2)
    grid = np.asarray(m.sd)
    assert np.all(np.diff(grid, axis=0) >= 0)  # never smaller farther from the reference


@pytest.mark.parametrize("kwargs, message", [
    (dict(drift=(0.0,), estimate=(0.0, 1.0), sd=((0.1, 0.1),)), "drift must hold"),
    (dict(drift=(0.0, 1.0), estimate=(1.0, 0.0), sd=((0.1, 0.1), (0.1, 0.1))), "estimate must hold"),
    (dict(drift=(0.0, 1.0), estimate=(0.0, 1.0), sd=((0.1,), (0.1,))), "sd must have shape"),
    (dict(drift=(0.0, 1.0), estimate=(0.0, 1.0), sd=((0.1, -0.1), (0.1, 0.1))), "finite and >= 0"),
])
def test_bad_error_model_is_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ErrorModel(**kwargs)


def test_bad_fit_inputs_are_named():
    with pytest.raises(ValueError, match="one length"):
        ErrorModel.fit(np.zeros(3), np.zeros(2), np.zeros(3))
    with pytest.raises(ValueError, match="finite"):
        ErrorModel.fit(np.zeros(3), np.array([0.1, np.nan, 0.2]), np.zeros(3))
    with pytest.raises(ValueError, match="error model must be a dict"):
        ErrorModel.from_dict({"drift": [0, 1]})


def test_estimator_band_uses_the_error_model_and_state_round_trips():
    m = _linear()
    est = OnlineEstimator(WindowConfig(max_count=100, model_error=0.5, error_model=m, min_trusted_count=1))
    p = np.full(100, 0.8)
    drift = np.full(100, 0.7)
    est.update(PerInputScores(p, drift, np.zeros(100, bool)))
    e = est.estimate()
    model_err = m(e.drift_score, 0.8)
    sd = math.sqrt(100 * 0.8 * 0.2 / 100**2 + model_err**2)
    assert e.error_sd == pytest.approx(sd)
    assert e.upper - e.accuracy == pytest.approx(NormalDist().inv_cdf(0.975) * sd)
    back = OnlineEstimator.from_state(json.loads(json.dumps(est.to_state())))
    assert back.config.error_model == m
    assert back.estimate() == e
    with pytest.raises(ValueError, match="error_model must be"):
        WindowConfig(error_model=[1, 2])
    state = est.to_state()
    state["config"]["error_model"] = {"drift": [0, 1], "estimate": [0, 1], "sd": [[0.1]]}
    with pytest.raises(ValueError, match="sd must have shape"):
        OnlineEstimator.from_state(state)
