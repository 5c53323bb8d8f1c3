"""The online estimator: a sliding window of per-input scores -> accuracy with a band.

The window holds the last ``max_count`` inputs and/or those younger than ``max_age_s`` seconds
(both limits apply when both are set). Its estimate is, in order of preference: the mean
label-recalibrated P(correct) once labels have corrected it (:mod:`daic.oracles.recalibration`);
else the window-level model's estimate (:mod:`daic.oracles.window_model`) when the assessor
provides one; else the mean P(correct). The band adds two sources of error in quadrature:

* sampling: the window's accuracy is a sum of Bernoulli outcomes with those probabilities, so
  its variance is sum p(1 - p) / n^2 (Poisson-binomial);
* model error: how far the label-free estimate is from the truth under shift even with
  infinitely many inputs (``model_error``, measured by the assessor on held-out shifts; with an
  ``error_model`` it depends on the window's drift score and estimate, :mod:`daic.oracles.error_model`),
  or the recalibration's own standard error once labels have corrected it.

It also runs the drift test (:mod:`daic.oracles.drift`) and sets ``trusted`` False when the
window's drift score exceeds ``max_drift_score`` (the assessor sets it where, on shifts it was
not fitted on, its estimate stopped being reliable), when too many inputs lie beyond the data
the estimator was fitted on, or when the window holds too few inputs: there the number is
reported but should not be relied on.

All state (the window's arrays, the recalibration) round-trips through a JSON-serialisable dict
so the sidecar can persist it and resume after a restart. The window model is not state: it is
refitted from the oracle reference and passed in again (``OnlineAssessor.estimator_from_state``).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from statistics import NormalDist

import numpy as np

from daic.oracles.change import Cusum, CusumDetector
from daic.oracles.drift import drift_test
from daic.oracles.error_model import ErrorModel
from daic.oracles.recalibration import Recalibration, RecalibrationCovariates
from daic.oracles.scores import PerInputScores

STATE_VERSION = 1


@dataclass(frozen=True)
class WindowConfig:
    """max_count / max_age_s: window limits (None = no limit of that kind; at least one set).
    level: two-sided coverage of the band. model_error: standard deviation (accuracy units) of
    the estimate's bias under shift. drift_alpha: false-alarm rate of the drift test on windows
    from the reference distribution (at the margin ``drift_tolerance``); windows of fewer than
    ``min_trusted_count`` inputs never alarm. max_far_fraction: above this share of inputs beyond the
    fitted support the estimate is untrusted. max_drift_score: above this window drift score
    the estimate is untrusted (1.0 disables the rule). trusted_model_error: with an
    ``error_model``, a label-free window is trusted where the error model's scale at its drift
    score and estimate is at most this, in place of the ``max_drift_score`` rule (the region
    then depends on where the estimate is, not on the drift score alone).
    min_trusted_count: below it, untrusted.
    error_model: the estimate's error scale by drift score and estimate, as the assessor
    measured it on shifts it was not fitted on (:mod:`daic.oracles.error_model`); when set it
    replaces ``model_error`` for label-free estimates. None: ``model_error`` everywhere.
    fuse_label_free: once labels have recalibrated the window, still weigh in the label-free
    estimate (``_fuse_label_free``). Off by default: with it, a window that holds exactly the
    labelled inputs no longer reports their observed accuracy.
    drift_tolerance: the drift test alarms only when the window's mean percentile is
    significantly above 0.5 + drift_tolerance (:func:`daic.oracles.drift.drift_test`).
    change: the calibrated sequential change detector run on every input's expected error
    (:mod:`daic.oracles.change`); None: none.
    trusted_error: with a band model (``OnlineEstimator(band_model=...)``), a label-free window
    is trusted where the band model's trust quantile of its error is at most this."""

    max_count: int | None = 1000
    max_age_s: float | None = None
    level: float = 0.95
    model_error: float = 0.02
    drift_alpha: float = 0.001
    max_far_fraction: float = 0.1
    max_drift_score: float = 1.0
    trusted_model_error: float | None = None
    min_trusted_count: int = 50
    error_model: ErrorModel | None = None
    fuse_label_free: bool = False
    drift_tolerance: float = 0.0
    change: Cusum | None = None
    trusted_error: float = 0.05

    def __post_init__(self) -> None:
        if isinstance(self.change, dict):  # from a JSON state
            object.__setattr__(self, "change", Cusum.from_dict(self.change))
        elif self.change is not None and not isinstance(self.change, Cusum):
            raise ValueError(f"change must be a Cusum, its dict or None, got {type(self.change).__name__}")
        if not 0.0 <= self.drift_tolerance < 0.5:
            raise ValueError(f"drift_tolerance must lie in [0, 0.5), got {self.drift_tolerance!r}")
        if isinstance(self.error_model, dict):  # from a JSON state
            object.__setattr__(self, "error_model", ErrorModel.from_dict(self.error_model))
        elif self.error_model is not None and not isinstance(self.error_model, ErrorModel):
            raise ValueError(f"error_model must be an ErrorModel, its dict or None, got {type(self.error_model).__name__}")
        if self.max_count is None and self.max_age_s is None:
            raise ValueError("set max_count, max_age_s or both: the window needs a limit")
        if self.max_count is not None and (isinstance(self.max_count, bool) or int(self.max_count) != self.max_count or self.max_count < 1):
            raise ValueError(f"max_count must be a positive integer, got {self.max_count!r}")
        if self.max_age_s is not None and not self.max_age_s > 0:
            raise ValueError(f"max_age_s must be positive, got {self.max_age_s!r}")
        if not 0.0 < self.level < 1.0:
            raise ValueError(f"level must lie in (0, 1), got {self.level!r}")
        if not self.model_error >= 0.0:
            raise ValueError(f"model_error must be >= 0, got {self.model_error!r}")
        if not 0.0 < self.drift_alpha < 1.0:
            raise ValueError(f"drift_alpha must lie in (0, 1), got {self.drift_alpha!r}")
        if not 0.0 <= self.max_far_fraction <= 1.0:
            raise ValueError(f"max_far_fraction must lie in [0, 1], got {self.max_far_fraction!r}")
        if not 0.0 <= self.max_drift_score <= 1.0:
            raise ValueError(f"max_drift_score must lie in [0, 1], got {self.max_drift_score!r}")
        if self.trusted_model_error is not None and not 0.0 <= self.trusted_model_error <= 1.0:
            raise ValueError(f"trusted_model_error must lie in [0, 1] or be None, got {self.trusted_model_error!r}")
        if not 0.0 < self.trusted_error <= 1.0:
            raise ValueError(f"trusted_error must lie in (0, 1], got {self.trusted_error!r}")
        if self.min_trusted_count < 1:
            raise ValueError(f"min_trusted_count must be >= 1, got {self.min_trusted_count!r}")


@dataclass(frozen=True)
class WindowEstimate:
    """accuracy with [lower, upper] at the configured level; drift_score is the mean reference
    percentile (0.5 = like the reference); far_fraction: share of inputs beyond the fitted
    support; n: inputs in the window. With n == 0 the numbers are NaN and trusted is False."""

    accuracy: float
    lower: float
    upper: float
    drift_score: float
    drift_p_value: float
    drift_alarm: bool
    trusted: bool
    n: int
    far_fraction: float
    recalibrated: bool = False
    error_sd: float = math.nan  # the standard deviation behind the band: sampling and model error
    change_statistic: float = math.nan  # the CUSUM statistic over its threshold (alarm above 1)
    change_alarm: bool = False          # the sequential change detector's alarm (daic.oracles.change)

    def to_dict(self) -> dict:
        """JSON-friendly: NaN becomes None."""
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}


_FLOAT_COLUMNS = ("timestamps", "p_correct", "drift", "confidence")
_INT_COLUMNS = ("predicted", "shadow_predicted")  # -1 = unknown
_COLUMNS = _FLOAT_COLUMNS + ("far",) + _INT_COLUMNS


@dataclass
class _Window:
    timestamps: np.ndarray = field(default_factory=lambda: np.zeros(0))
    p_correct: np.ndarray = field(default_factory=lambda: np.zeros(0))
    drift: np.ndarray = field(default_factory=lambda: np.zeros(0))
    confidence: np.ndarray = field(default_factory=lambda: np.zeros(0))  # NaN = unknown
    far: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    predicted: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    shadow_predicted: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def append(self, cols: dict) -> None:
        for name in _COLUMNS:
            setattr(self, name, np.concatenate([getattr(self, name), cols[name]]))

    def drop_before(self, start: int) -> None:
        for name in _COLUMNS:
            setattr(self, name, getattr(self, name)[start:])


class OnlineEstimator:
    """Sliding-window accuracy estimate from :class:`PerInputScores` (see the module docstring)."""

    def __init__(self, config: WindowConfig | None = None,
                 recalibration: Recalibration | None = None, window_model=None, band_model=None) -> None:
        self.config = config or WindowConfig()
        self.recalibration = recalibration
        self.window_model = window_model  # a daic.oracles.window_model.WindowModel, or None
        self.band_model = band_model      # a daic.oracles.band_model.BandModel, or None
        self.change = None if self.config.change is None else CusumDetector(self.config.change)
        self._w = _Window()

    def __len__(self) -> int:
        return int(self._w.p_correct.size)

    # -- updating -----------------------------------------------------------------------------
    def update(self, scores: PerInputScores, timestamps: np.ndarray | float | None = None) -> None:
        """Append a batch. ``timestamps`` (seconds, e.g. Unix time): one per input, one for the
        whole batch, or None (then the time limit cannot apply and must not be configured).
        Time must not go backwards relative to what the window already holds."""
        n = len(scores)
        if timestamps is None:
            if self.config.max_age_s is not None:
                raise ValueError("timestamps are required when the window has max_age_s")
            last = self._w.timestamps[-1] if len(self) else 0.0
            ts = np.full(n, last, dtype=np.float64)
        else:
            ts = np.broadcast_to(np.asarray(timestamps, dtype=np.float64), (n,)).copy() \
                if np.ndim(timestamps) == 0 else np.asarray(timestamps, dtype=np.float64)
            if ts.shape != (n,):
                raise ValueError(f"timestamps must be a scalar or have shape ({n},), got {ts.shape}")
            if not np.all(np.isfinite(ts)):
                raise ValueError("timestamps must be finite")
            if n and (np.any(np.diff(ts) < 0) or (len(self) and ts[0] < self._w.timestamps[-1])):
                raise ValueError("timestamps must be non-decreasing (no input older than the window's newest)")
        w = self._w
        known = scores.has_window_columns
        if self.recalibration is not None and self.recalibration.needs_covariates and not known:
            raise ValueError("this estimator's covariate recalibration needs scores with predicted, "
                             "shadow_predicted and confidence")
        w.append({
            "timestamps": ts,
            "p_correct": scores.p_correct,
            "drift": scores.drift,
            "far": scores.far,
            "confidence": scores.confidence if known else np.full(n, np.nan),
            "predicted": scores.predicted if known else np.full(n, -1, dtype=np.int64),
            "shadow_predicted": scores.shadow_predicted if known else np.full(n, -1, dtype=np.int64),
        })
        if self.change is not None:
            # The sequential test sees every input's raw expected error, in arrival order; labels
            # (recalibration) do not change it: it was calibrated on raw scores.
            self.change.update(1.0 - scores.p_correct)
        self._evict(now=w.timestamps[-1] if len(self) else None)

    def _evict(self, now: float | None) -> None:
        w, cfg = self._w, self.config
        start = 0
        if cfg.max_count is not None and len(self) > cfg.max_count:
            start = len(self) - int(cfg.max_count)
        if cfg.max_age_s is not None and now is not None:
            # Keep inputs with timestamp > now - max_age_s.
            start = max(start, int(np.searchsorted(w.timestamps, now - cfg.max_age_s, side="right")))
        if start:
            w.drop_before(start)

    def advance(self, now: float) -> None:
        """Drop inputs older than ``max_age_s`` at time ``now`` (for windows with no traffic)."""
        if len(self) and now < self._w.timestamps[-1]:
            raise ValueError("now must not be earlier than the newest input in the window")
        self._evict(now=now)

    def recalibrate(self, recalibration: Recalibration | None) -> None:
        """Apply a label-based correction to this and later windows (None removes it)."""
        if recalibration is not None and recalibration.needs_covariates and not self._columns_known():
            raise ValueError("covariate recalibration needs every input's predicted classes and "
                             "confidence, and the window holds inputs without them")
        self.recalibration = recalibration

    def _columns_known(self) -> bool:
        w = self._w
        return not (np.any(w.predicted < 0) or np.any(w.shadow_predicted < 0) or np.any(np.isnan(w.confidence)))

    def _covariates(self) -> RecalibrationCovariates | None:
        """The window's columns for a covariate recalibration (None when it needs none)."""
        if self.recalibration is None or not self.recalibration.needs_covariates:
            return None
        w = self._w
        return RecalibrationCovariates.from_columns(w.predicted, w.shadow_predicted, w.confidence, w.drift)

    # -- estimating ---------------------------------------------------------------------------
    def estimate(self, now: float | None = None) -> WindowEstimate:
        if now is not None:
            self.advance(now)
        cfg, w, n = self.config, self._w, len(self)
        drift = drift_test(w.drift, cfg.drift_alpha, cfg.drift_tolerance)
        if n < cfg.min_trusted_count and drift.alarm:
            # Too few inputs for the normal approximation's tail and for any decision.
            drift = replace(drift, alarm=False)
        change = {} if self.change is None else {"change_statistic": self.change.statistic,
                                                 "change_alarm": self.change.alarm}
        if n == 0:
            nan = math.nan
            return WindowEstimate(nan, nan, nan, nan, 1.0, False, False, 0, nan,
                                  self.recalibration is not None, **change)
        in_region = drift.score <= cfg.max_drift_score
        band = None
        if self.recalibration is None:
            p = w.p_correct
            acc, feats = self._window_model_estimate()
            if acc is None:
                acc = float(p.mean())
            model_err = cfg.model_error if cfg.error_model is None else cfg.error_model(drift.score, acc)
            if feats is not None and self.band_model is not None:
                from daic.oracles.band_model import band_features

                s_sd = math.sqrt(float((p * (1 - p)).sum())) / n
                half_b, trust_q = self.band_model.predict(band_features(feats[None], acc, s_sd))
                band = (float(half_b[0]), float(trust_q[0]), s_sd)
        else:
            cov = self._covariates()
            p = self.recalibration.apply(w.p_correct, cov)
            acc, model_err = self.recalibration.window_accuracy(w.p_correct, cov)
            if math.isnan(model_err):
                model_err = cfg.model_error
            elif cfg.fuse_label_free and model_err > 0:
                acc, model_err = self._fuse_label_free(acc, model_err, drift.score)
        sampling_var = float((p * (1 - p)).sum()) / n**2
        sd = math.sqrt(sampling_var + model_err**2)
        if self.recalibration is None and cfg.error_model is not None and cfg.trusted_model_error is not None:
            in_region = sd <= cfg.trusted_model_error
        z = NormalDist().inv_cdf(0.5 + cfg.level / 2)
        half = z * sd
        if band is not None:
            # Conformalized quantile band (daic.oracles.band_model); never narrower than this
            # window's own sampling error. error_sd keeps its meaning: the band's half / z.
            half = max(band[0], z * band[2])
            sd = half / z
            in_region = band[1] <= cfg.trusted_error
        far_fraction = float(w.far.mean())
        trusted = n >= cfg.min_trusted_count and far_fraction <= cfg.max_far_fraction and in_region
        return WindowEstimate(
            accuracy=acc,
            lower=max(0.0, acc - half),
            upper=min(1.0, acc + half),
            drift_score=drift.score,
            drift_p_value=drift.p_value,
            drift_alarm=drift.alarm,
            trusted=trusted,
            n=n,
            far_fraction=far_fraction,
            recalibrated=self.recalibration is not None,
            error_sd=sd,
            **change,
        )

    def _fuse_label_free(self, acc: float, err: float, drift_score: float) -> tuple[float, float]:
        """Inverse-variance weighting of the label-corrected estimate (error: the labels'
        standard error) and the label-free one (error: the assessor's measured error scale at
        this drift and estimate). Their errors have different sources - a finite sample of
        labels, and the label-free method's bias under this shift - so they are treated as
        independent, and the weighted mean has the smaller variance 1 / (1/a^2 + 1/b^2) (the
        fixed-effect combination of two unbiased estimates, Cochran 1954). Far from the reference
        the label-free error is large and the labels dominate; near it, the label-free
        estimate tightens the labels' noisy correction."""
        cfg = self.config
        free = self._window_model_estimate()[0]
        if free is None:
            free = float(self._w.p_correct.mean())
        free_err = cfg.model_error if cfg.error_model is None else cfg.error_model(drift_score, free)
        if not free_err > 0 or math.isnan(free_err):
            return acc, err
        w_lab, w_free = 1.0 / err**2, 1.0 / free_err**2
        return (w_lab * acc + w_free * free) / (w_lab + w_free), 1.0 / math.sqrt(w_lab + w_free)

    def _window_model_estimate(self):
        """(the window model's estimate, its feature vector), (None, None) without a model or with
        inputs whose predicted classes are unknown."""
        w = self._w
        if self.window_model is None or np.any(w.predicted < 0) or np.any(w.shadow_predicted < 0):
            return None, None
        from daic.oracles.window_model import WindowColumns

        cols = WindowColumns(
            p_correct=w.p_correct, drift=w.drift, far=w.far.astype(np.float64),
            agreement=(w.predicted == w.shadow_predicted).astype(np.float64),
            confidence=w.confidence, predicted=w.predicted, shadow_predicted=w.shadow_predicted,
        )
        feats = self.window_model.features(cols)
        return float(self.window_model.predict_features(feats[None])[0]), feats

    # -- state --------------------------------------------------------------------------------
    def to_state(self) -> dict:
        """JSON-serialisable state: config, recalibration and the window's contents."""
        w = self._w
        return {
            "version": STATE_VERSION,
            "config": {**asdict(self.config), "error_model": None if self.config.error_model is None
                       else self.config.error_model.to_dict(),
                       "change": None if self.config.change is None else self.config.change.to_dict()},
            "change": None if self.change is None else self.change.to_state(),
            "recalibration": None if self.recalibration is None else self.recalibration.to_dict(),
            "window": {
                **{k: [None if np.isnan(v) else v for v in getattr(w, k).tolist()] for k in _FLOAT_COLUMNS},
                "far": w.far.astype(bool).tolist(),
                **{k: getattr(w, k).astype(int).tolist() for k in _INT_COLUMNS},
            },
        }

    @classmethod
    def from_state(cls, state: dict, window_model=None, band_model=None) -> "OnlineEstimator":
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            raise ValueError(f"unsupported estimator state (version {state.get('version') if isinstance(state, dict) else None!r}, expected {STATE_VERSION})")
        try:
            config = WindowConfig(**state["config"])
            rec = state["recalibration"]
            est = cls(config, None if rec is None else Recalibration.from_dict(rec), window_model, band_model)
            if est.change is not None and state.get("change") is not None:  # older states: a fresh detector
                est.change = CusumDetector.from_state(state["change"])
            win = state["window"]
            arrays = {k: np.asarray([np.nan if v is None else v for v in win[k]], dtype=np.float64)
                      for k in ("timestamps", "p_correct", "drift")}
            arrays["far"] = np.asarray(win["far"], dtype=bool)
            n = arrays["p_correct"].size
            # Columns added in later releases may be absent from an older state: unknown.
            arrays["confidence"] = np.asarray([np.nan if v is None else v for v in win.get("confidence", [None] * n)],
                                              dtype=np.float64)
            for k in _INT_COLUMNS:
                arrays[k] = np.asarray(win.get(k, [-1] * n), dtype=np.int64)
        except KeyError as exc:
            raise ValueError(f"estimator state is missing {exc.args[0]!r}") from None
        except TypeError as exc:  # a config or recalibration field of the wrong kind or name
            raise ValueError(f"invalid estimator state: {exc}") from None
        n = arrays["p_correct"].size
        if any(a.shape != (n,) for a in arrays.values()):
            raise ValueError("estimator state window arrays differ in length")
        # Validate ranges through PerInputScores, then restore as is.
        PerInputScores(arrays["p_correct"], arrays["drift"], arrays["far"])
        if np.any(np.diff(arrays["timestamps"]) < 0):
            raise ValueError("estimator state timestamps must be non-decreasing")
        est._w = _Window(**arrays)
        if est.recalibration is not None and est.recalibration.needs_covariates and not est._columns_known():
            raise ValueError("estimator state has a covariate recalibration but inputs without predicted "
                             "classes or confidence")
        return est
