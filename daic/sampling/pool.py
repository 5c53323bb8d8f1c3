"""The pool of logged operational inputs that offline assessment samples from.

A pool is what the pseudo-oracle sidecar logged for one window of operation: an id per input, the
model's predicted class, and the oracle's per-input probability that the prediction is correct.
Labels are *not* part of a pool: they are what sampling pays for. Validation happens here, once,
so the designs and estimators can trust the arrays they receive.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

LOGIT_EPS = 1e-6


@dataclass(frozen=True)
class Pool:
    """Operational inputs available for labeling.

    Attributes:
        ids: (N,) unique input ids: strings (request ids), or integer keys (a large pool read by
            `daic.sampling.scan` holds 64-bit keys of its ids, 8 B a row, not the strings).
        p_correct: (N,) the oracle's probability that the model's prediction is correct, in [0, 1].
            It drives stratification and sampling probabilities; it need not be calibrated (the
            estimators stay unbiased whatever it is, a good one only makes them more precise).
        predictions: (N,) the model's predicted class per input (int64); a human label equal to
            the prediction means the model was right.
        aux: optional (N,) extra score (e.g. a drift or novelty score); carried along, finite.
    """

    ids: np.ndarray
    p_correct: np.ndarray
    predictions: np.ndarray
    aux: np.ndarray | None = field(default=None)

    def __post_init__(self) -> None:
        ids = np.asarray(self.ids)
        ids = ids.view() if ids.dtype.kind in "iu" else ids.astype(str)  # a view: read-only below, not the caller's
        p = np.array(self.p_correct, dtype=np.float64)
        pred = np.array(self.predictions)
        if ids.ndim != 1 or ids.size == 0:
            raise ValueError(f"ids must be a non-empty 1-d array, got shape {ids.shape}")
        n = ids.size
        if p.shape != (n,):
            raise ValueError(f"p_correct must have shape ({n},) like ids, got {p.shape}")
        if not np.all(np.isfinite(p)):
            bad = int(np.flatnonzero(~np.isfinite(p))[0])
            raise ValueError(f"p_correct must be finite, got {p[bad]!r} at position {bad}")
        if np.any((p < 0) | (p > 1)):
            bad = int(np.flatnonzero((p < 0) | (p > 1))[0])
            raise ValueError(f"p_correct must lie in [0, 1], got {p[bad]!r} at position {bad}")
        if pred.shape != (n,):
            raise ValueError(f"predictions must have shape ({n},) like ids, got {pred.shape}")
        if not np.issubdtype(pred.dtype, np.integer):
            raise ValueError(f"predictions must be integer class ids, got dtype {pred.dtype}")
        if not _unique(ids):
            raise ValueError("ids must be unique")
        aux = self.aux
        if aux is not None:
            aux = np.array(aux, dtype=np.float64)
            if aux.shape != (n,):
                raise ValueError(f"aux must have shape ({n},) like ids, got {aux.shape}")
            if not np.all(np.isfinite(aux)):
                raise ValueError("aux must be finite")
            aux.setflags(write=False)
        for arr in (ids, p):
            arr.setflags(write=False)
        object.__setattr__(self, "ids", ids)
        object.__setattr__(self, "p_correct", p)
        pred = pred.astype(np.int64)
        pred.setflags(write=False)
        object.__setattr__(self, "predictions", pred)
        object.__setattr__(self, "aux", aux)

    @property
    def size(self) -> int:
        return int(self.ids.size)

    @cached_property
    def order_by_p(self) -> np.ndarray:
        """Positions sorted by p_correct, ascending (computed once; stratification uses it)."""
        order = np.argsort(self.p_correct, kind="stable")
        order.setflags(write=False)
        return order

    @cached_property
    def logit_p(self) -> np.ndarray:
        """The oracle's logit, p clipped to [1e-6, 1 - 1e-6] (recalibration works on this scale)."""
        p = np.clip(self.p_correct, LOGIT_EPS, 1 - LOGIT_EPS)
        out = np.log(p) - np.log1p(-p)
        out.setflags(write=False)
        return out

    @property
    def oracle_accuracy(self) -> float:
        """What the oracle alone claims the accuracy is (biased under shift; for reference only)."""
        return float(self.p_correct.mean())


def _unique(ids: np.ndarray) -> bool:
    """True when no id repeats; integer keys in increasing order (as a scan gives them) are
    checked in one pass instead of a sort."""
    if ids.dtype.kind in "iu" and ids.size > 1 and bool(np.all(ids[1:] > ids[:-1])):
        return True
    return np.unique(ids).size == ids.size


@dataclass(frozen=True)
class SampledPool:
    """The drawn inputs of a pool, and the pool's size and oracle mean: all that the steps after
    sampling need of a pool (``Design.estimate`` reads only ``size``; the draws carry their own
    selection probabilities and strata), so the pool's N ids never travel past the sampling step.

    Attributes:
        ids: (k,) the distinct drawn inputs' ids (strings); a sample's ``indices`` point into them.
        p_correct, predictions: (k,) the oracle's P(correct) and the model's class for each.
        size: N, the number of inputs in the pool the sample was drawn from.
        oracle_accuracy: the pool's mean p_correct (what the oracle alone claims).
    """

    ids: np.ndarray
    p_correct: np.ndarray
    predictions: np.ndarray
    size: int
    oracle_accuracy: float

    def __post_init__(self) -> None:
        ids = np.asarray(self.ids).astype(str)
        k = ids.shape[0] if ids.ndim == 1 else -1
        p = np.asarray(self.p_correct, dtype=np.float64)
        pred = np.asarray(self.predictions)
        if k < 0 or p.shape != (k,) or pred.shape != (k,):
            raise ValueError(f"ids, p_correct and predictions must be 1-d of one length, got "
                             f"{ids.shape}, {p.shape}, {pred.shape}")
        if not isinstance(self.size, (int, np.integer)) or self.size < max(k, 1):
            raise ValueError(f"size must be the pool size (>= the {k} drawn inputs), got {self.size!r}")
        if np.unique(ids).size != k:
            raise ValueError("ids must be unique")
        object.__setattr__(self, "ids", ids)
        object.__setattr__(self, "p_correct", p)
        object.__setattr__(self, "predictions", pred.astype(np.int64))
        object.__setattr__(self, "size", int(self.size))
        object.__setattr__(self, "oracle_accuracy", float(self.oracle_accuracy))
