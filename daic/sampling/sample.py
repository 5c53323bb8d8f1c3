"""What every sampling design produces and consumes: a `Sample`, an `Estimate`, the `Design` protocol.

Designs draw in batches so the same code serves a fixed budget and the sequential mode: a design's
``draw`` gets the draws made so far and their labels (adaptive designs use them to choose the next
inputs; the others ignore them) and returns the next draws. Draws are *nested*: the first ``n``
draws of a longer run are themselves a valid sample of size ``n`` (whenever ``n`` falls on a batch
boundary), which is what lets the sequential driver stop after any batch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from daic.sampling.pool import Pool


_FIELDS = ("batch", "selection_prob", "stratum", "control", "control_mean")


def _opt(a: np.ndarray | None, dtype) -> np.ndarray | None:
    return None if a is None else np.asarray(a, dtype=dtype)


@dataclass(frozen=True)
class Sample:
    """Draws in the order they were made.

    Attributes:
        indices: (n,) positions in the pool of the drawn inputs, in draw order. With-replacement
            designs may draw an input more than once; it is labeled once.
        batch: (n,) batch number (0, 1, ...) of each draw.
        selection_prob: (n,) for with-replacement designs, the probability that the draw picked
            this input (Hansen–Hurwitz weights are its inverse); None for other designs.
        stratum: (n,) stratum of each draw, for stratified designs; None otherwise.
        control: (n,) the working model's probability of correctness for each drawn input, as it
            stood when the draw was made (the recalibrated oracle). The active design subtracts it
            (control variate); both adaptive designs use it for their variance floor. None for
            designs without a working model.
        control_mean: (n,) mean of that prediction over the whole pool when the draw was made.
    """

    indices: np.ndarray
    batch: np.ndarray
    selection_prob: np.ndarray | None = None
    stratum: np.ndarray | None = None
    control: np.ndarray | None = None
    control_mean: np.ndarray | None = None

    def __post_init__(self) -> None:
        idx = np.asarray(self.indices, dtype=np.int64)
        n = idx.shape[0]
        object.__setattr__(self, "indices", idx)
        object.__setattr__(self, "batch", np.asarray(self.batch, dtype=np.int64))
        object.__setattr__(self, "selection_prob", _opt(self.selection_prob, np.float64))
        object.__setattr__(self, "stratum", _opt(self.stratum, np.int64))
        object.__setattr__(self, "control", _opt(self.control, np.float64))
        object.__setattr__(self, "control_mean", _opt(self.control_mean, np.float64))
        for name in _FIELDS:
            arr = getattr(self, name)
            if arr is not None and arr.shape != (n,):
                raise ValueError(f"Sample.{name} must have shape ({n},), got {arr.shape}")

    @classmethod
    def empty(cls) -> "Sample":
        return cls(indices=np.zeros(0, np.int64), batch=np.zeros(0, np.int64))

    @property
    def n_draws(self) -> int:
        return int(self.indices.shape[0])

    @property
    def n_batches(self) -> int:
        return int(self.batch.max()) + 1 if self.n_draws else 0

    @property
    def distinct(self) -> np.ndarray:
        """Pool positions labeled at least once (each costs one human label)."""
        return np.unique(self.indices)

    def head(self, n: int) -> "Sample":
        """The first ``n`` draws."""
        if not 0 <= n <= self.n_draws:
            raise ValueError(f"head n must be in [0, {self.n_draws}], got {n}")
        return Sample(
            indices=self.indices[:n],
            **{k: None if getattr(self, k) is None else getattr(self, k)[:n] for k in _FIELDS},
        )

    def subset(self, mask: np.ndarray) -> "Sample":
        """The draws where ``mask`` (bool, one per draw) is true, with their optional fields: a
        random subset of a design's draws, e.g. the held-out part of a sample, or its labeled part."""
        mask = np.asarray(mask)
        if mask.dtype != bool or mask.shape != (self.n_draws,):
            raise ValueError(f"subset mask must be boolean with shape ({self.n_draws},), got {mask.dtype} {mask.shape}")
        return Sample(indices=self.indices[mask],
                      **{k: None if getattr(self, k) is None else getattr(self, k)[mask] for k in _FIELDS})

    def concat(self, other: "Sample") -> "Sample":
        """These draws followed by ``other``'s (which must carry the same optional fields)."""
        if self.n_draws == 0:
            return other
        if other.n_draws == 0:
            return self

        def join(name: str) -> np.ndarray | None:
            a, b = getattr(self, name), getattr(other, name)
            if (a is None) != (b is None):
                raise ValueError(f"cannot concatenate samples: only one has {name}")
            return None if a is None else np.concatenate([a, b])

        return Sample(
            indices=np.concatenate([self.indices, other.indices]),
            **{k: join(k) for k in _FIELDS},
        )


@dataclass(frozen=True)
class Estimate:
    """An accuracy estimate with its confidence interval.

    ``half_width`` is half the interval's length (intervals may be asymmetric after clipping to
    [0, 1] or when they come from a score/exact method).
    """

    accuracy: float
    lower: float
    upper: float
    level: float
    n_labels: int
    n_draws: int
    n_failures_found: int
    method: str

    def __post_init__(self) -> None:
        # An accuracy lies in [0, 1]. Weighted estimators can leave it by rounding (stratum weights
        # summing to 1 + 1e-16 gave 1.0000000000000002 on an all-correct sample, which a consumer
        # checking the range refused) or by design (Horvitz-Thompson-type terms): clip here, once.
        for name in ("accuracy", "lower", "upper"):
            value = float(getattr(self, name))
            if value != value:  # NaN: an estimator bug, not a value to clip
                raise ValueError(f"estimate {name} is NaN ({self.method})")
            object.__setattr__(self, name, min(1.0, max(0.0, value)))

    @property
    def half_width(self) -> float:
        return 0.5 * (self.upper - self.lower)

    def covers(self, truth: float) -> bool:
        return self.lower <= truth <= self.upper


@runtime_checkable
class Design(Protocol):
    """A sampling design together with its estimator.

    ``draw`` returns only the new draws (batch numbers continuing ``history``'s); ``correct`` is the
    per-draw correctness (bool, aligned with ``history.indices``). ``estimate`` turns a sample and
    its per-draw correctness into an `Estimate` whose interval is valid at ``level``.
    ``max_draws`` is the most draws the design can make on a pool (the pool size for designs without
    replacement, None when unbounded).
    """

    name: str

    def draw(
        self, pool: Pool, history: Sample, correct: np.ndarray, n: int, rng: np.random.Generator
    ) -> Sample: ...

    def estimate(self, pool: Pool, sample: Sample, correct: np.ndarray, level: float) -> Estimate: ...

    def max_draws(self, pool: Pool) -> int | None: ...


def check_draw_args(design: Design, pool: Pool, history: Sample, correct: np.ndarray, n: int) -> np.ndarray:
    """Shared validation of ``draw`` arguments; returns ``correct`` as a bool array."""
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"number of draws n must be a positive integer, got {n!r}")
    correct = as_correct(correct, history.n_draws)
    limit = design.max_draws(pool)
    if limit is not None and history.n_draws + n > limit:
        raise ValueError(
            f"{design.name}: {history.n_draws} + {n} draws exceed the {limit} inputs in the pool "
            "(a design without replacement cannot draw more than the pool holds)"
        )
    return correct


def as_correct(correct: np.ndarray, n: int) -> np.ndarray:
    """Validate per-draw correctness: shape (n,), values boolean (or 0/1)."""
    arr = np.asarray(correct)
    if arr.shape != (n,):
        raise ValueError(f"correct must have shape ({n},) (one entry per draw), got {arr.shape}")
    if arr.dtype != bool:
        if not np.all(np.isin(arr, (0, 1))):
            raise ValueError("correct must be boolean (or 0/1), got other values")
        arr = arr.astype(bool)
    return arr


def check_level(level: float) -> float:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    return float(level)


def failures_found(sample: Sample, correct: np.ndarray) -> int:
    """Distinct inputs found mispredicted (a duplicate draw of the same input counts once)."""
    return int(np.unique(sample.indices[~correct]).size)
