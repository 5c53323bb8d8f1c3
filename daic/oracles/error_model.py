"""How wrong the label-free window estimate is likely to be, as a function of where the window is.

The window estimate's error is not one number. On synthetic windows of shifts the assessor was
not fitted on (:mod:`daic.oracles.pipeline`, cross-fitted), it is about 1 point for windows
near the reference and grows to 10-20 points for windows far from it; at a given distance it
is larger for windows whose estimate is low (many errors, several ways to get their count
wrong) than for windows estimated near the reference accuracy. A single model-error constant
is too wide near the reference and far too narrow far from it, which makes the band cover
the truth on too few windows and makes "untrusted" mean "anything can happen".

:class:`ErrorModel` keeps the root-mean-square error of those held-out windows on a grid over
(window drift score, window estimate): each grid value is the RMS error of the nearest
synthetic windows in that plane (k-nearest-neighbour regression of the squared error on the
standardised coordinates), made non-decreasing in the drift score (moving farther from the
reference must not make the estimate look more reliable). The estimator interpolates it
bilinearly. It is plain numbers so that it serialises with the estimator's configuration.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ErrorModel:
    """``sd[i][j]``: RMS error (accuracy units) at drift score ``drift[i]`` and estimate
    ``estimate[j]``; both axes strictly increasing within [0, 1]."""

    drift: tuple[float, ...]
    estimate: tuple[float, ...]
    sd: tuple[tuple[float, ...], ...]

    def __post_init__(self) -> None:
        try:
            d = tuple(float(v) for v in self.drift)
            e = tuple(float(v) for v in self.estimate)
            sd = tuple(tuple(float(v) for v in row) for row in self.sd)
        except (TypeError, ValueError):
            raise ValueError("error model: drift, estimate and sd must be numbers") from None
        for name, axis in (("drift", d), ("estimate", e)):
            a = np.asarray(axis)
            if a.size < 2 or np.any(np.diff(a) <= 0) or a[0] < 0 or a[-1] > 1:
                raise ValueError(f"error model: {name} must hold >= 2 strictly increasing values in [0, 1]")
        grid = np.asarray(sd, dtype=np.float64)
        if grid.shape != (len(d), len(e)):
            raise ValueError(f"error model: sd must have shape ({len(d)}, {len(e)}), got {grid.shape}")
        if not np.all(np.isfinite(grid)) or np.any(grid < 0):
            raise ValueError("error model: sd must be finite and >= 0")
        object.__setattr__(self, "drift", d)
        object.__setattr__(self, "estimate", e)
        object.__setattr__(self, "sd", sd)

    @classmethod
    def fit(cls, drift: np.ndarray, estimate: np.ndarray, error: np.ndarray, grid_step: float = 0.05,
            neighbours: int | None = None, sampling_var: np.ndarray | None = None) -> "ErrorModel":
        """From held-out windows: their drift scores, estimates and errors (estimate - truth).
        ``neighbours`` defaults to 4 % of the windows (at least 20). With ``sampling_var`` (each
        window's sampling variance of its accuracy), the model is of the error net of it: the
        mean squared error minus the mean sampling variance among the neighbours, floored at 0
        (a method-of-moments variance component)."""
        from sklearn.neighbors import KNeighborsRegressor

        d = np.asarray(drift, dtype=np.float64)
        p = np.asarray(estimate, dtype=np.float64)
        err = np.asarray(error, dtype=np.float64)
        if not (d.ndim == 1 and d.shape == p.shape == err.shape):
            raise ValueError(f"drift, estimate and error must be 1-d of one length, got {d.shape}, {p.shape}, {err.shape}")
        if d.size < 2:
            raise ValueError(f"an error model needs at least 2 held-out windows, got {d.size}")
        if not (np.all(np.isfinite(d)) and np.all(np.isfinite(p)) and np.all(np.isfinite(err))):
            raise ValueError("drift, estimate and error must be finite")
        if not 0.0 < grid_step <= 0.5:
            raise ValueError(f"grid_step must lie in (0, 0.5], got {grid_step!r}")
        k = neighbours if neighbours is not None else max(20, int(0.04 * d.size))
        k = min(int(k), d.size)
        if k < 1:
            raise ValueError(f"neighbours must be >= 1, got {neighbours!r}")
        x = np.column_stack([d, p])
        scale = x.std(axis=0)
        scale[scale == 0] = 1.0
        target = err**2
        if sampling_var is not None:
            v = np.asarray(sampling_var, dtype=np.float64)
            if v.shape != err.shape or not np.all(np.isfinite(v)) or np.any(v < 0):
                raise ValueError("sampling_var must be finite, >= 0 and shaped like error")
            target = target - v
        knn = KNeighborsRegressor(n_neighbors=k).fit(x / scale, target)
        axis = np.linspace(0.0, 1.0, int(round(1.0 / grid_step)) + 1)
        dd, pp = np.meshgrid(axis, axis, indexing="ij")
        grid = np.sqrt(np.maximum(knn.predict(np.column_stack([dd.ravel(), pp.ravel()]) / scale), 0.0)).reshape(dd.shape)
        grid = np.maximum.accumulate(grid, axis=0)  # never more reliable farther from the reference
        return cls(tuple(axis), tuple(axis), tuple(map(tuple, grid)))

    def __call__(self, drift: float, estimate: float) -> float:
        """The RMS error at one window's drift score and estimate (bilinear, flat outside)."""
        if math.isnan(drift) or math.isnan(estimate):
            return math.nan
        d, e, g = np.asarray(self.drift), np.asarray(self.estimate), np.asarray(self.sd)
        i = int(np.clip(np.searchsorted(d, drift) - 1, 0, len(d) - 2))
        j = int(np.clip(np.searchsorted(e, estimate) - 1, 0, len(e) - 2))
        u = float(np.clip((drift - d[i]) / (d[i + 1] - d[i]), 0.0, 1.0))
        v = float(np.clip((estimate - e[j]) / (e[j + 1] - e[j]), 0.0, 1.0))
        return float((1 - u) * (1 - v) * g[i, j] + u * (1 - v) * g[i + 1, j]
                     + (1 - u) * v * g[i, j + 1] + u * v * g[i + 1, j + 1])

    def to_dict(self) -> dict:
        return {"drift": list(self.drift), "estimate": list(self.estimate), "sd": [list(r) for r in self.sd]}

    @classmethod
    def from_dict(cls, data) -> "ErrorModel":
        if not isinstance(data, dict) or set(data) != {"drift", "estimate", "sd"}:
            raise ValueError("error model must be a dict with exactly drift, estimate and sd")
        return cls(data["drift"], data["estimate"], data["sd"])
