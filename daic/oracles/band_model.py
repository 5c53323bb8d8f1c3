"""Band and trust of a window estimate from what the whole window looks like: conformalized
quantile regression of the estimate's absolute error.

:mod:`daic.oracles.error_model` sizes the band from two coordinates (drift score, estimate).
Windows that agree on those two can still differ in how reliable the estimate is: whether the
model and its shadow still agree, whether the predicted classes collapsed onto one, how
confident the model stays, how far the window model moved the per-input estimate. This model
conditions on all of them.

Fitted on the assessor's held-out synthetic windows (:mod:`daic.oracles.pipeline`: every
window's error comes from a combiner and window model that never saw its corruption types):

1. quantile regression (gradient-boosted trees with the pinball loss) of the absolute error
   at level ``q`` on the window's features (:data:`daic.oracles.window_model.WINDOW_FEATURES`,
   the window model's estimate and the window's own sampling SD);
2. conformalized (Romano, Patterson & Candès, 2019, "Conformalized quantile regression"):
   cross-conformal over the groups of corruption types the windows were built from (each
   group's windows scored by a regression fitted without them), the correction is the
   ``q``-th empirical quantile (finite-sample adjusted) of the scores ``|error| - q̂(x)``, so
   on windows exchangeable with the synthetic ones the interval ``estimate ± (q̂(x) + c)``
   covers the truth with probability >= q, and the grouping makes that "on corruption types
   the regression was not fitted on".

Two levels are kept: ``band_level`` (0.95: the band) and ``trust_level`` (0.9: a window is
trusted where the ``trust_level`` quantile of its error is at most the trusted error, the
definition the drift-score trust region uses).

``method="scale"`` (the assessor's default, issue 17) is normalised conformal prediction
(Papadopoulos et al. 2008; Lei et al. 2018, "Distribution-free predictive inference for
regression", section 5.2) instead of quantile regression: one regression of the estimate's
*model* error scale sigma(x) (median regression, gradient-boosted trees with the absolute loss,
of sqrt(max(error^2 - sampling variance, 0))) on the window's features, its estimate and the
size of the window model's correction |estimate - mean P(correct)|; the scores are
``|error| / sqrt(sigma(x)^2 + sampling variance)``, cross-fitted over the same groups of
corruption types; the band is ``q_band x sqrt(sigma(x)^2 + s^2)`` with the window's own
sampling SD ``s``. The window's size thus enters exactly (operational windows of 2,000 inputs
have a quarter of the sampling variance of the synthetic ones of 500), not through a tree
that never saw such sizes. Measured on the online benchmark (docs/benchmarks/online.md):
more windows trusted than the drift-score rule at >= 95 % coverage; the quantile method
trusted fewer.
"""
from __future__ import annotations

import math

import numpy as np

from daic.oracles.threads import single_thread


METHODS: tuple[str, ...] = ("cqr", "scale")
SCALE_FLOOR = 0.002  # the model-error scale is never taken below 0.2 points (scores stay finite)


def _scale_inputs(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(regression inputs, sampling SD) of band_features rows: the window features, the estimate
    and |estimate - mean P(correct)| (how far the window model moved the per-input mean)."""
    wf, est, ssd = x[:, :-2], x[:, -2], x[:, -1]
    return np.column_stack([wf, est, np.abs(est - wf[:, 0])]), ssd


def _conformal_quantile(scores: np.ndarray, level: float) -> float:
    """The ceil((n + 1) level) / n empirical quantile of the scores (split-conformal)."""
    n = len(scores)
    k = min(int(math.ceil((n + 1) * level)), n)
    return float(np.sort(scores)[k - 1])


class BandModel:
    """``half_width(features)`` -> (band half-width at ``band_level``, error quantile at
    ``trust_level``), in accuracy units, for one window's feature vector (see the module
    docstring for the features)."""

    def __init__(self, band_level: float = 0.95, trust_level: float = 0.9, seed: int = 0,
                 method: str = "cqr") -> None:
        for name, v in (("band_level", band_level), ("trust_level", trust_level)):
            if not 0.0 < v < 1.0:
                raise ValueError(f"{name} must lie in (0, 1), got {v!r}")
        if method not in METHODS:
            raise ValueError(f"unknown band method {method!r}; valid: {', '.join(METHODS)}")
        self.method = method
        self.band_level = band_level
        self.trust_level = trust_level
        self.seed = seed
        self._models: dict[float, object] = {}
        self.corrections: dict[float, float] = {}

    def _regressor(self, level: float):
        from sklearn.ensemble import HistGradientBoostingRegressor

        return HistGradientBoostingRegressor(loss="quantile", quantile=level, max_iter=150, learning_rate=0.05,
                                             max_leaf_nodes=15, min_samples_leaf=40, random_state=self.seed)

    def fit(self, features: np.ndarray, abs_error: np.ndarray, groups: np.ndarray) -> "BandModel":
        """``features`` (W, F), ``abs_error`` (W,) >= 0, ``groups`` (W,): the window's group of
        corruption types (windows of one group are scored by a fit without that group)."""
        x = np.asarray(features, dtype=np.float64)
        y = np.asarray(abs_error, dtype=np.float64)
        g = np.asarray(groups)
        if x.ndim != 2 or y.shape != (x.shape[0],) or g.shape != (x.shape[0],):
            raise ValueError(f"features (W, F), abs_error (W,) and groups (W,) must match, got {x.shape}, "
                             f"{y.shape}, {g.shape}")
        if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))) or np.any(y < 0):
            raise ValueError("features must be finite and abs_error finite and >= 0")
        uniq = np.unique(g)
        if len(uniq) < 2:
            raise ValueError("a band model needs windows from at least 2 groups for its conformal correction")
        if getattr(self, "method", "cqr") == "scale":
            return self._fit_scale(x, y, g, uniq)
        with single_thread():
            for level in (self.band_level, self.trust_level):
                scores = np.empty(len(y))
                for grp in uniq:
                    test = g == grp
                    scores[test] = y[test] - self._regressor(level).fit(x[~test], y[~test]).predict(x[test])
                self.corrections[level] = _conformal_quantile(scores, level)
                self._models[level] = self._regressor(level).fit(x, y)
        return self

    def _scale_regressor(self):
        from sklearn.ensemble import HistGradientBoostingRegressor

        return HistGradientBoostingRegressor(loss="absolute_error", max_iter=100, learning_rate=0.05,
                                             max_leaf_nodes=7, min_samples_leaf=50, random_state=self.seed)

    @staticmethod
    def _total(sigma: np.ndarray, ssd: np.ndarray) -> np.ndarray:
        return np.sqrt(np.maximum(sigma, SCALE_FLOOR) ** 2 + ssd**2)

    def _fit_scale(self, x, y, g, uniq) -> "BandModel":
        z, ssd = _scale_inputs(x)
        target = np.sqrt(np.maximum(y**2 - ssd**2, 0.0))
        scores = np.empty(len(y))
        with single_thread():
            for grp in uniq:
                test = g == grp
                sigma = self._scale_regressor().fit(z[~test], target[~test]).predict(z[test])
                scores[test] = y[test] / self._total(sigma, ssd[test])
            self._models["scale"] = self._scale_regressor().fit(z, target)
        for level in (self.band_level, self.trust_level):
            self.corrections[level] = _conformal_quantile(scores, level)
        return self

    @classmethod
    def average(cls, models: list["BandModel"]) -> "BandModel":
        """One model predicting the mean of fitted ``models``' half-widths and trust quantiles
        (one per cross-fit replicate, each conformalized on its own held-out groups)."""
        if not models or any(not m._models for m in models):
            raise ValueError("average needs at least one fitted BandModel")
        first = models[0]
        if any((m.band_level, m.trust_level) != (first.band_level, first.trust_level) for m in models):
            raise ValueError("average: the models have different levels")
        out = cls(first.band_level, first.trust_level, first.seed, getattr(first, "method", "cqr"))
        out._members = list(models)
        out._models = first._models
        return out

    def predict(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(band half-width, trust quantile) per row of ``features``, each >= 0."""
        members = getattr(self, "_members", None)
        if members:
            preds = [m.predict(features) for m in members]
            return np.mean([p[0] for p in preds], axis=0), np.mean([p[1] for p in preds], axis=0)
        if not self._models:
            from daic.oracles.base import NotFittedError

            raise NotFittedError("BandModel: call fit first")
        x = np.atleast_2d(np.asarray(features, dtype=np.float64))
        if getattr(self, "method", "cqr") == "scale":
            z, ssd = _scale_inputs(x)
            with single_thread():
                total = self._total(self._models["scale"].predict(z), ssd)
            return self.corrections[self.band_level] * total, self.corrections[self.trust_level] * total
        with single_thread():
            out = [np.maximum(self._models[lv].predict(x) + self.corrections[lv], 0.0)
                   for lv in (self.band_level, self.trust_level)]
        return out[0], out[1]


def band_features(window_features: np.ndarray, estimate: np.ndarray, sampling_sd: np.ndarray) -> np.ndarray:
    """The band model's inputs: the window model's features, its estimate and the window's
    sampling SD (sqrt(sum p (1 - p)) / n)."""
    wf = np.atleast_2d(np.asarray(window_features, dtype=np.float64))
    return np.column_stack([wf, np.atleast_1d(estimate), np.atleast_1d(sampling_sd)])
