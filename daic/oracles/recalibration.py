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

Every result is a small JSON-serialisable object; ``std_error`` (accuracy units) is how much
uncertainty the finite number of labels leaves, and replaces the estimator's model-error term.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import brentq
from scipy.special import expit, logit

METHODS: tuple[str, ...] = ("intercept", "platt", "rogan_gladen")
_CLIP = 1e-6


def _logit(p: np.ndarray) -> np.ndarray:
    return logit(np.clip(p, _CLIP, 1 - _CLIP))


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

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown recalibration method {self.method!r}; valid: {', '.join(METHODS)}")

    # -- applying -----------------------------------------------------------------------------
    def apply(self, p_correct: np.ndarray) -> np.ndarray:
        """Per-input corrected P(correct) (logit methods; rogan_gladen leaves them unchanged)."""
        p = np.asarray(p_correct, dtype=np.float64)
        if self.method == "rogan_gladen":
            return p
        return expit(self.slope * _logit(p) + self.intercept)

    def window_accuracy(self, p_correct: np.ndarray) -> tuple[float, float]:
        """(corrected window accuracy, its standard error from the finite labels)."""
        p = np.asarray(p_correct, dtype=np.float64)
        if p.size == 0:
            return math.nan, math.nan
        if self.method != "rogan_gladen":
            return float(self.apply(p).mean()), self.std_error
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


def fit_recalibration(
    p_correct: np.ndarray, correct: np.ndarray, method: str = "intercept", threshold: float = 0.5
) -> Recalibration:
    """Fit a correction from labelled operational inputs: their online P(correct) and whether
    the model was in fact correct on them."""
    if method not in METHODS:
        raise ValueError(f"unknown recalibration method {method!r}; valid: {', '.join(METHODS)}")
    p, y = _check_labeled(p_correct, correct)
    m = p.size
    yf = y.astype(np.float64)
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
