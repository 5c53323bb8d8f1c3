"""Recalibrating the oracle's p_correct from the labels gathered so far in an assessment.

Adaptive designs use this to decide where to sample next: under shift the oracle is typically
over-confident (its scores too close to 1), and a few dozen labels are enough to learn how much.
The map is Platt scaling (Platt, 1999) on the oracle's logit, f = sigmoid(a * logit(p) + b + b_c),
with an optional offset b_c per predicted class (label shift moves the error rate of some predicted
classes, cf. Lipton et al., ICML 2018). A ridge penalty pulls (a, b, b_c) toward the identity
(1, 0, 0), so with few labels the map stays close to the oracle.

Estimator validity never rests on this fit: the designs only use it through sampling probabilities
and control variates chosen *before* the next batch is drawn, so a bad fit costs precision, not
bias.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit, log_expit

from daic.sampling.pool import LOGIT_EPS, Pool
_MAX_CLASSES = 1000  # one offset per class; beyond this, fit without class offsets


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, LOGIT_EPS, 1 - LOGIT_EPS)
    return np.log(p) - np.log1p(-p)


@dataclass(frozen=True)
class Recalibration:
    """A fitted map from (oracle p_correct, predicted class) to a probability of correctness."""

    slope: float = 1.0
    intercept: float = 0.0
    class_offsets: tuple[float, ...] = ()

    def apply(self, p_correct: np.ndarray, predictions: np.ndarray) -> np.ndarray:
        return self._from_logit(_logit(p_correct), predictions)

    def apply_to_pool(self, pool: Pool) -> np.ndarray:
        """`apply` over a whole pool, reusing its cached logits."""
        return self._from_logit(pool.logit_p, pool.predictions)

    def _from_logit(self, logit: np.ndarray, predictions: np.ndarray) -> np.ndarray:
        if self.slope == 1.0 and self.intercept == 0.0 and not any(self.class_offsets):
            return expit(logit)
        z = self.slope * logit + self.intercept
        if self.class_offsets:
            offs = np.asarray(self.class_offsets)
            known = (predictions >= 0) & (predictions < offs.size)
            z = z + np.where(known, offs[np.clip(predictions, 0, offs.size - 1)], 0.0)
        return expit(z)


def fit_recalibration(
    p_correct: np.ndarray,
    predictions: np.ndarray,
    correct: np.ndarray,
    penalty: float = 1.0,
    class_penalty: float = 4.0,
    by_class: bool = True,
) -> Recalibration:
    """Penalised maximum-likelihood Platt map from labeled inputs (each input once).

    ``penalty`` is the ridge weight on (slope - 1, intercept), ``class_penalty`` on the per-class
    offsets; both are in units of log-likelihood, so their pull fades as labels accumulate.
    """
    x = _logit(np.asarray(p_correct, float))
    y = np.asarray(correct, bool)
    pred = np.asarray(predictions, np.int64)
    if not (x.shape == y.shape == pred.shape) or x.ndim != 1:
        raise ValueError("p_correct, predictions and correct must be 1-d of equal length")
    if penalty <= 0 or class_penalty <= 0:
        raise ValueError("penalties must be > 0")
    if x.size == 0:
        return Recalibration()
    if by_class and pred.min() < 0:
        raise ValueError("predictions must be non-negative class ids")
    if by_class and pred.max() >= _MAX_CLASSES:
        raise ValueError(f"by_class supports class ids below {_MAX_CLASSES}, got {pred.max()}")
    n_classes = int(pred.max() + 1) if by_class else 0
    design = np.column_stack([x, np.ones_like(x), np.eye(n_classes)[pred] if n_classes else np.zeros((x.size, 0))])
    ridge = np.concatenate([[penalty, penalty], np.full(n_classes, class_penalty)])
    prior = np.concatenate([[1.0, 0.0], np.zeros(n_classes)])
    sign = np.where(y, 1.0, -1.0)

    def objective(theta: np.ndarray) -> float:
        return float(-np.sum(log_expit(sign * (design @ theta))) + 0.5 * ridge @ (theta - prior) ** 2)

    # Newton's method with step halving: the objective is strictly convex (ridge), ~10 steps.
    theta = prior.copy()
    value = objective(theta)
    for _ in range(50):
        mu = expit(design @ theta)
        grad = design.T @ (mu - y) + ridge * (theta - prior)
        hess = (design * (mu * (1 - mu))[:, None]).T @ design + np.diag(ridge)
        step = np.linalg.solve(hess, grad)
        t = 1.0
        while True:
            cand = theta - t * step
            cand_value = objective(cand)
            if cand_value <= value or t < 1e-8:
                break
            t *= 0.5
        converged = value - cand_value < 1e-10 * (1 + abs(value))
        theta, value = cand, cand_value
        if converged:
            break
    res_x = theta
    a, b = float(res_x[0]), float(res_x[1])
    return Recalibration(slope=a, intercept=b, class_offsets=tuple(float(v) for v in res_x[2:]))
