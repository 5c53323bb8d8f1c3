"""Offline corrects online: recalibrate the label-free estimate with labels from a cycle.

After a cycle, humans have labelled some operational inputs. Their per-input P(correct) (as
the sidecar computed it) and their true correctness show how biased the online estimate is on
*this* stream; the fitted correction is applied to every later window until the next one.

Methods:

* ``"intercept"``: shift every P(correct) in logit space by one constant b, chosen by maximum
  likelihood, so the corrected mean on the labelled inputs equals their observed accuracy
  (the calibration-in-the-large correction of clinical prediction models, e.g. Steyerberg,
  2009). One parameter: stable with a few hundred labels and few errors.
* ``"platt"``: logistic regression of correctness on logit P(correct), slope and intercept
  (Platt, 1999). Also fixes over- or under-confidence, needs more labels to be stable.
* ``"rogan_gladen"``: treat "P(correct) < threshold" as an alarm and measure its true- and
  false-positive rates on the labels; a window's error rate is then
  (alarm rate - FPR) / (TPR - FPR), so accuracy = (TPR - alarm rate) / (TPR - FPR)
  (Rogan & Gladen, 1978, prevalence from an imperfect test).
* ``"covariate"``: logistic recalibration on the per-input columns the window already keeps
  (:class:`RecalibrationCovariates`: logit P(correct), model/shadow agreement, logit
  max-softmax, drift percentile, one indicator per predicted class), with a Gaussian prior
  centred on "no change" (weight 1 on logit P(correct), 0 elsewhere) so that a few hundred
  labels move only what they can support (maximum a posteriori, ``prior_strength`` is the
  prior's precision). The intercept is not penalised, so the corrected probabilities average
  exactly to the observed accuracy of the labelled inputs: the estimate on new inputs is their
  mean corrected P(correct) plus the labelled residual mean, which is zero - the
  prediction-powered (difference) estimator of Angelopoulos et al. (2023, "Prediction-powered
  inference") with a prediction fitted to this stream. Its error is the labelled residuals'
  noise, sd(y - p') / sqrt(m): the better p' separates this stream's errors (a shift can make
  one predicted class, or confident inputs, fail far more than the combiner expects), the
  smaller it is than the labels' own sd(y) / sqrt(m).

Every result is a small JSON-serialisable object; ``std_error`` (accuracy units) is how much
uncertainty the finite number of labels leaves, and replaces the estimator's model-error term.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import brentq
from scipy.special import expit, logit

METHODS: tuple[str, ...] = ("intercept", "platt", "rogan_gladen", "covariate")
# Columns of the covariate design before the per-class indicators.
COVARIATES: tuple[str, ...] = ("logit_p_correct", "agreement", "logit_confidence", "drift")
_CLIP = 1e-6


def _logit(p: np.ndarray) -> np.ndarray:
    return logit(np.clip(p, _CLIP, 1 - _CLIP))


@dataclass(frozen=True)
class RecalibrationCovariates:
    """Per-input columns, besides P(correct), that the "covariate" method uses; all (N,).
    ``agreement``: model and shadow predict the same class; ``confidence``: max-softmax;
    ``drift``: reference percentile of the latent distance; ``predicted``: class index >= 0."""

    agreement: np.ndarray
    confidence: np.ndarray
    drift: np.ndarray
    predicted: np.ndarray

    def __post_init__(self) -> None:
        n = np.asarray(self.predicted).shape
        for name in ("agreement", "confidence", "drift"):
            a = np.asarray(getattr(self, name), dtype=np.float64)
            if a.shape != n:
                raise ValueError(f"covariate {name} must have shape {n}, got {a.shape}")
            if not np.all(np.isfinite(a)) or np.any((a < 0) | (a > 1)):
                raise ValueError(f"covariate {name} must lie in [0, 1] (NaN means unknown: not usable)")
            object.__setattr__(self, name, a)
        pred = np.asarray(self.predicted)
        if pred.ndim != 1 or (pred.size and (not np.issubdtype(pred.dtype, np.integer) or pred.min() < 0)):
            raise ValueError("covariate predicted must be a 1-d array of class indices >= 0")
        object.__setattr__(self, "predicted", pred.astype(np.int64))

    def __len__(self) -> int:
        return int(self.predicted.size)

    @classmethod
    def from_scores(cls, scores) -> "RecalibrationCovariates":
        """From :class:`daic.oracles.scores.PerInputScores` that carry the window columns."""
        if not scores.has_window_columns:
            raise ValueError("covariate recalibration needs scores with predicted, shadow_predicted and confidence")
        return cls.from_columns(scores.predicted, scores.shadow_predicted, scores.confidence, scores.drift)

    @classmethod
    def from_columns(cls, predicted: np.ndarray, shadow_predicted: np.ndarray, confidence: np.ndarray,
                     drift: np.ndarray) -> "RecalibrationCovariates":
        """From the per-input columns the scores and the estimator's window keep."""
        return cls((predicted == shadow_predicted).astype(np.float64), confidence, drift, predicted)

    def as_rows(self) -> np.ndarray:
        """(N, 4) float rows [agreement, confidence, drift, predicted], e.g. to keep per input in a
        JSON checkpoint; :meth:`from_rows` reads them back."""
        return np.column_stack([self.agreement, self.confidence, self.drift, self.predicted.astype(np.float64)])

    @classmethod
    def from_rows(cls, rows) -> "RecalibrationCovariates":
        rows = np.asarray(rows, dtype=np.float64).reshape(-1, 4)
        return cls(rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3].astype(np.int64))

    def design(self, p_correct: np.ndarray, n_classes: int) -> np.ndarray:
        """(N, len(COVARIATES) + n_classes) matrix; a class index >= n_classes gets no indicator."""
        p = np.asarray(p_correct, dtype=np.float64)
        if p.shape != self.predicted.shape:
            raise ValueError(f"p_correct has shape {p.shape}, covariates {self.predicted.shape}")
        onehot = np.zeros((p.size, n_classes))
        known = self.predicted < n_classes
        onehot[np.flatnonzero(known), self.predicted[known]] = 1.0
        return np.column_stack([_logit(p), self.agreement, _logit(self.confidence), self.drift - 0.5, onehot])


@dataclass(frozen=True)
class Recalibration:
    """A fitted correction. For logit methods: p' = sigmoid(slope * logit(p) + intercept).
    For rogan_gladen: tpr, fpr of the alarm ``p < threshold`` and the label counts behind them."""

    method: str
    n_labels: int
    std_error: float
    slope: float = 1.0
    intercept: float = 0.0
    threshold: float = 0.5
    tpr: float = math.nan
    fpr: float = math.nan
    n_incorrect: int = 0
    n_correct: int = 0
    # covariate: weights of COVARIATES[1:] (logit P(correct) uses ``slope``), then one per class.
    weights: tuple[float, ...] = ()
    class_offsets: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown recalibration method {self.method!r}; valid: {', '.join(METHODS)}")
        object.__setattr__(self, "weights", tuple(float(v) for v in self.weights))
        object.__setattr__(self, "class_offsets", tuple(float(v) for v in self.class_offsets))
        if self.method == "covariate":
            if len(self.weights) != len(COVARIATES) - 1:
                raise ValueError(f"covariate recalibration needs {len(COVARIATES) - 1} weights, got {len(self.weights)}")
            if not self.class_offsets:
                raise ValueError("covariate recalibration needs class_offsets (one per class)")

    # -- applying -----------------------------------------------------------------------------
    @property
    def needs_covariates(self) -> bool:
        return self.method == "covariate"

    def apply(self, p_correct: np.ndarray, covariates: RecalibrationCovariates | None = None) -> np.ndarray:
        """Per-input corrected P(correct) (logit methods; rogan_gladen leaves them unchanged).
        The covariate method needs ``covariates`` for the same inputs."""
        p = np.asarray(p_correct, dtype=np.float64)
        if self.method == "rogan_gladen":
            return p
        if self.method == "covariate":
            if covariates is None:
                raise ValueError("covariate recalibration needs the inputs' covariates "
                                 "(agreement, confidence, drift, predicted class)")
            beta = np.r_[self.slope, self.weights, self.class_offsets]
            return expit(covariates.design(p, len(self.class_offsets)) @ beta + self.intercept)
        return expit(self.slope * _logit(p) + self.intercept)

    def window_accuracy(self, p_correct: np.ndarray,
                        covariates: RecalibrationCovariates | None = None) -> tuple[float, float]:
        """(corrected window accuracy, its standard error from the finite labels)."""
        p = np.asarray(p_correct, dtype=np.float64)
        if p.size == 0:
            return math.nan, math.nan
        if self.method != "rogan_gladen":
            return float(self.apply(p, covariates).mean()), self.std_error
        alarm_rate = float((p < self.threshold).mean())
        gap = self.tpr - self.fpr
        acc = (self.tpr - alarm_rate) / gap
        # Delta method over the two estimated rates (the window's own rate is exact for it).
        d_tpr = (alarm_rate - self.fpr) / gap**2
        d_fpr = (self.tpr - alarm_rate) / gap**2
        var = d_tpr**2 * self.tpr * (1 - self.tpr) / max(self.n_incorrect, 1)
        var += d_fpr**2 * self.fpr * (1 - self.fpr) / max(self.n_correct, 1)
        return float(np.clip(acc, 0.0, 1.0)), math.sqrt(var)

    # -- state --------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> "Recalibration":
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown recalibration fields: {', '.join(sorted(unknown))}")
        clean = {k: (math.nan if v is None and k in ("std_error", "tpr", "fpr") else v)
                 for k, v in data.items()}
        for k in ("weights", "class_offsets"):
            if k in clean:
                if not isinstance(clean[k], (list, tuple)):
                    raise ValueError(f"recalibration field {k} must be a list of numbers, got {clean[k]!r}")
                clean[k] = tuple(clean[k])
        return cls(**clean)


def _check_labeled(p_correct, correct) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(p_correct, dtype=np.float64)
    y = np.asarray(correct)
    if p.ndim != 1 or p.size == 0:
        raise ValueError(f"p_correct must be a non-empty 1-d array, got shape {p.shape}")
    if y.shape != p.shape:
        raise ValueError(f"correct must have shape {p.shape}, got {y.shape}")
    if y.dtype != bool:
        if not np.all(np.isin(y, (0, 1))):
            raise ValueError("correct must be boolean (or 0/1)")
        y = y.astype(bool)
    if np.any((p < 0) | (p > 1)) or not np.all(np.isfinite(p)):
        raise ValueError("p_correct must lie in [0, 1]")
    return p, y


def _fit_covariate(p: np.ndarray, y: np.ndarray, cov: RecalibrationCovariates, n_classes: int,
                   prior_strength: float) -> Recalibration:
    """MAP logistic regression with the prior N(identity, 1 / (2 prior_strength)) on every
    weight but the intercept (see the module docstring)."""
    from scipy.optimize import minimize

    x = cov.design(p, n_classes)
    yf = y.astype(np.float64)
    prior = np.zeros(x.shape[1])
    prior[0] = 1.0

    def loss(w):
        z = w[0] + x @ w[1:]
        d = w[1:] - prior
        return float(np.sum(np.logaddexp(0.0, z) - yf * z) + prior_strength * d @ d)

    def grad(w):
        r = expit(w[0] + x @ w[1:]) - yf
        return np.r_[r.sum(), x.T @ r + 2.0 * prior_strength * (w[1:] - prior)]

    if y.all() or not y.any():
        # No finite intercept exists; keep the prior's weights and move the intercept as far as
        # the clip allows, as the intercept method does.
        b = (1 if y.all() else -1) * 2 * float(-_logit(np.array([_CLIP]))[0])
        w = np.r_[b, prior]
    else:
        w0 = np.r_[0.0, prior]
        res = minimize(loss, w0, jac=grad, method="L-BFGS-B", options={"maxiter": 500})
        w = res.x
    k = len(COVARIATES)
    return Recalibration("covariate", p.size, math.nan, slope=float(w[1]), intercept=float(w[0]),
                         weights=tuple(w[2:k + 1]), class_offsets=tuple(w[k + 1:]))


def fit_recalibration(
    p_correct: np.ndarray, correct: np.ndarray, method: str = "intercept", threshold: float = 0.5,
    covariates: RecalibrationCovariates | None = None, n_classes: int | None = None,
    prior_strength: float = 1.0,
) -> Recalibration:
    """Fit a correction from labelled operational inputs: their online P(correct) and whether
    the model was in fact correct on them. The "covariate" method also needs their
    ``covariates`` and the number of classes (default: the largest predicted class + 1)."""
    if method not in METHODS:
        raise ValueError(f"unknown recalibration method {method!r}; valid: {', '.join(METHODS)}")
    p, y = _check_labeled(p_correct, correct)
    m = p.size
    yf = y.astype(np.float64)
    if method == "covariate":
        if covariates is None:
            raise ValueError("method 'covariate' needs covariates (RecalibrationCovariates of the labelled inputs)")
        if len(covariates) != m:
            raise ValueError(f"covariates have {len(covariates)} rows, p_correct {m}")
        if not prior_strength > 0:
            raise ValueError(f"prior_strength must be > 0, got {prior_strength!r}")
        if n_classes is None:
            n_classes = int(covariates.predicted.max()) + 1
        if isinstance(n_classes, bool) or int(n_classes) != n_classes or n_classes < 1:
            raise ValueError(f"n_classes must be a positive integer, got {n_classes!r}")
        rec = _fit_covariate(p, y, covariates, int(n_classes), prior_strength)
        resid = yf - rec.apply(p, covariates)
        return Recalibration(**{**asdict(rec), "std_error": float(np.sqrt(np.mean(resid**2) / m))})
    if method == "rogan_gladen":
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must lie in (0, 1), got {threshold!r}")
        alarm = p < threshold
        n_inc, n_cor = int((~y).sum()), int(y.sum())
        if n_inc == 0 or n_cor == 0:
            raise ValueError(
                "rogan_gladen needs both correct and incorrect labelled inputs "
                f"(got {n_cor} correct, {n_inc} incorrect)"
            )
        tpr = float(alarm[~y].mean())
        fpr = float(alarm[y].mean())
        if tpr <= fpr:
            raise ValueError(
                f"the alarm p < {threshold} does not separate errors (TPR {tpr:.3f} <= FPR {fpr:.3f}); "
                "use method='intercept'"
            )
        return Recalibration(method, m, math.nan, threshold=threshold, tpr=tpr, fpr=fpr,
                             n_incorrect=n_inc, n_correct=n_cor)
    z = _logit(p)
    target = yf.mean()
    if method == "intercept":
        if target in (0.0, 1.0):
            # The likelihood has no finite optimum; move as far as the clip allows.
            b = (1 if target == 1.0 else -1) * 2 * float(-_logit(np.array([_CLIP]))[0])
        else:
            b = brentq(lambda c: expit(z + c).mean() - target, -50.0, 50.0, xtol=1e-12)
        rec = Recalibration("intercept", m, math.nan, slope=1.0, intercept=float(b))
    else:
        from sklearn.linear_model import LogisticRegression

        if target in (0.0, 1.0):
            raise ValueError("platt needs both correct and incorrect labelled inputs; use 'intercept'")
        lr = LogisticRegression(C=1e4).fit(z[:, None], y)
        rec = Recalibration("platt", m, math.nan, slope=float(lr.coef_[0, 0]),
                            intercept=float(lr.intercept_[0]))
    # Labels left: the corrected mean equals the truth on the labelled inputs only up to the
    # noise of m Bernoulli draws around their corrected probabilities.
    resid = yf - rec.apply(p)
    se = float(np.sqrt(np.mean(resid**2) / m))
    return Recalibration(**{**asdict(rec), "std_error": se})
