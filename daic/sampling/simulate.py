"""Simulated operational pools with known truth — for tests and benchmarks only.

The real pool comes from the pseudo-oracle sidecar and has no truth attached; to measure bias,
coverage and label savings we need pools whose accuracy is known. This module draws them from a
small generative model that reproduces what a real oracle does under shift:

* the oracle's logit ``l_i ~ N(mu, spread^2)`` (most inputs very confident, a tail of uncertain
  ones, as softmax confidence on MNIST-style data is);
* the true probability of correctness ``q_i = sigmoid(l_i / temperature + offset + delta_class)``:
  ``temperature > 1`` makes the oracle over-confident (its scores are more extreme than the truth),
  ``offset`` moves the true accuracy away from what the oracle claims (covariate shift), and
  per-class ``delta`` models label shift (some predicted classes absorb the new confusions);
* ``correct_i ~ Bernoulli(q_i)`` once per pool; the pool's accuracy (the estimand) is the mean of
  ``correct`` over the pool, a fixed number.

``mu`` and ``offset`` are solved numerically so a scenario hits the accuracy it names, both the
oracle's claimed one and the true one. Nothing here is used by the product code path.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import brentq
from scipy.special import expit

from daic.sampling.pool import Pool

N_CLASSES = 10


@dataclass(frozen=True)
class ScenarioSpec:
    """How a simulated pool relates oracle scores to truth.

    Attributes:
        name: scenario name.
        accuracy: target true accuracy of the model on the pool (in expectation).
        oracle_accuracy: target mean of the oracle's p_correct (equal to ``accuracy`` when the
            oracle is calibrated; higher when it is over-confident).
        spread: standard deviation of the oracle logit (how informative the oracle is).
        temperature: >= 1; truth logit = oracle logit / temperature (+ offsets). 1 = calibrated shape.
        class_weights: relative frequency of each predicted class (label shift); uniform if None.
        class_delta: per-predicted-class shift of the truth logit (label shift); zeros if None.
        informative: if False the oracle score is drawn independently of the truth (a useless
            oracle, for stress tests).
    """

    name: str
    accuracy: float
    oracle_accuracy: float
    spread: float = 2.5
    temperature: float = 1.0
    class_weights: tuple[float, ...] | None = None
    class_delta: tuple[float, ...] | None = None
    informative: bool = True

    def __post_init__(self) -> None:
        for fname in ("accuracy", "oracle_accuracy"):
            v = getattr(self, fname)
            if not 0.0 < v < 1.0:
                raise ValueError(f"{fname} must be in (0, 1), got {v!r}")
        if self.spread <= 0:
            raise ValueError(f"spread must be > 0, got {self.spread!r}")
        if self.temperature < 1.0:
            raise ValueError(f"temperature must be >= 1, got {self.temperature!r}")
        for fname in ("class_weights", "class_delta"):
            v = getattr(self, fname)
            if v is not None and len(v) != N_CLASSES:
                raise ValueError(f"{fname} must have {N_CLASSES} entries, got {len(v)}")
        if self.class_weights is not None and (min(self.class_weights) < 0 or sum(self.class_weights) <= 0):
            raise ValueError("class_weights must be non-negative with a positive sum")


SCENARIOS: dict[str, ScenarioSpec] = {
    # In-distribution: 99% accurate, the oracle is calibrated and ranks errors well (AUROC ~0.97,
    # the softmax-confidence figure for MNIST in Hendrycks & Gimpel, ICLR 2017).
    "clean": ScenarioSpec("clean", accuracy=0.99, oracle_accuracy=0.99, spread=3.5),
    # Covariate shift: accuracy falls to 85% while the oracle still claims ~95% (AUROC ~0.87).
    "drifted": ScenarioSpec("drifted", accuracy=0.85, oracle_accuracy=0.95, spread=3.0, temperature=1.5),
    # Severe shift: 60% accurate, the oracle claims ~85% and ranks errors poorly (AUROC ~0.78).
    "severe": ScenarioSpec("severe", accuracy=0.60, oracle_accuracy=0.85, spread=2.5, temperature=2.0),
    # Label shift: three predicted classes become frequent and absorb most new errors (AUROC ~0.9).
    "label-shift": ScenarioSpec(
        "label-shift",
        accuracy=0.92,
        oracle_accuracy=0.96,
        spread=3.0,
        temperature=1.2,
        class_weights=(3, 3, 3, 1, 1, 1, 1, 1, 1, 1),
        class_delta=(-1.5, -1.5, -1.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5),
    ),
}

# Extra stress scenario (not one of the four the issue names): the oracle carries no information.
STRESS_SCENARIOS: dict[str, ScenarioSpec] = {
    "uninformative": ScenarioSpec(
        "uninformative", accuracy=0.90, oracle_accuracy=0.90, spread=1.5, informative=False
    ),
}


@dataclass(frozen=True)
class SimulatedPool:
    """A pool plus the truth a real one lacks.

    Attributes:
        pool: the operational pool (ids, oracle p_correct, predictions).
        correct: (N,) bool, whether the model is right on each input.
        labels: (N,) int64 true class (equal to the prediction where correct).
        q_true: (N,) the probability of correctness each input was drawn with.
        spec: the scenario.
    """

    pool: Pool
    correct: np.ndarray
    labels: np.ndarray
    q_true: np.ndarray
    spec: ScenarioSpec = field(repr=False)
    _order: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_order", np.argsort(self.pool.ids, kind="stable"))

    @property
    def accuracy(self) -> float:
        """The estimand: the model's accuracy on this pool."""
        return float(self.correct.mean())

    def labeler(self, ids: np.ndarray) -> np.ndarray:
        """A simulated human: the true class of each requested id."""
        ids = np.asarray(ids).astype(str)
        pos = np.searchsorted(self.pool.ids, ids, sorter=self._order)
        pos = self._order[np.clip(pos, 0, self.pool.size - 1)]
        if not np.array_equal(self.pool.ids[pos], ids):
            missing = ids[self.pool.ids[pos] != ids][0]
            raise KeyError(f"id {missing!r} is not in the pool")
        return self.labels[pos]


def _solve_mu(target: float, spread: float, z: np.ndarray) -> float:
    """Location of the oracle logit so that its mean sigmoid equals ``target`` (quadrature nodes z)."""
    return brentq(lambda mu: float(expit(mu + spread * z).mean()) - target, -30.0, 30.0)


def simulate_pool(spec: ScenarioSpec | str, n: int = 20_000, seed: int = 0) -> SimulatedPool:
    """Draw one pool of ``n`` operational inputs for a scenario (by name or spec), reproducibly."""
    if isinstance(spec, str):
        known = {**SCENARIOS, **STRESS_SCENARIOS}
        if spec not in known:
            raise ValueError(f"unknown scenario {spec!r}; known: {sorted(known)}")
        spec = known[spec]
    if n < 2:
        raise ValueError(f"n must be >= 2, got {n}")
    rng = np.random.default_rng(seed)
    weights = np.ones(N_CLASSES) if spec.class_weights is None else np.asarray(spec.class_weights, float)
    delta = np.zeros(N_CLASSES) if spec.class_delta is None else np.asarray(spec.class_delta, float)
    predictions = rng.choice(N_CLASSES, size=n, p=weights / weights.sum())
    z = rng.standard_normal(n)
    mu = _solve_mu(spec.oracle_accuracy, spec.spread, z)
    oracle_logit = mu + spec.spread * z
    p_correct = expit(oracle_logit)
    if spec.informative:
        base = oracle_logit / spec.temperature + delta[predictions]
    else:
        base = mu + spec.spread * rng.standard_normal(n)  # truth independent of the oracle
    offset = brentq(lambda c: float(expit(base + c).mean()) - spec.accuracy, -40.0, 40.0)
    q_true = expit(base + offset)
    correct = rng.random(n) < q_true
    wrong_shift = rng.integers(1, N_CLASSES, size=n)  # a different class where the model is wrong
    labels = np.where(correct, predictions, (predictions + wrong_shift) % N_CLASSES).astype(np.int64)
    ids = np.array([f"sim-{seed}-{i:07d}" for i in range(n)])
    pool = Pool(ids=ids, p_correct=p_correct, predictions=predictions.astype(np.int64))
    return SimulatedPool(pool=pool, correct=correct, labels=labels, q_true=q_true, spec=spec)


def challenger_correctness(correct: np.ndarray, p_correct: np.ndarray, gains: int, losses: int,
                           adversarial: bool, rng: np.random.Generator) -> np.ndarray:
    """A second model's correctness on the same pool, with a known difference: the first model's
    with ``gains`` of its errors made right and ``losses`` of its right answers made wrong (so the
    difference is (gains - losses) / N). At random, or ``adversarial``ly: the gains where the
    oracle is least sure (what score-driven designs oversample), the losses where it is surest
    (what they rarely draw), the hardest case for an estimate of the difference."""
    correct = np.asarray(correct, bool)
    wrong, right = np.flatnonzero(~correct), np.flatnonzero(correct)
    if gains > wrong.size or losses > right.size:
        raise ValueError(f"cannot make {gains} gains and {losses} losses from {wrong.size} errors and "
                         f"{right.size} right answers")
    if adversarial:
        fix = wrong[np.argsort(p_correct[wrong], kind="stable")][:gains]
        brk = right[np.argsort(-p_correct[right], kind="stable")][:losses]
    else:
        fix, brk = rng.choice(wrong, gains, replace=False), rng.choice(right, losses, replace=False)
    out = correct.copy()
    out[fix], out[brk] = True, False
    return out
