"""Abstain where even the filter cannot help (issue 21, item 4): the per-input decision (pure; numpy only).

An input is *abstained* when the served model's P(correct) -- the pseudo-oracles' combined score of
the model that answered, behind the input filter when one serves (the wrapped assessor,
:mod:`daic.filters.assessor`) -- is below ``bound``. The answer still carries the class
probabilities (a client that ignores the tag loses nothing); the tag says "do not trust this one",
and the sidecar queues the input for labeling (:mod:`daic.sampling.abstain`).

Tags the model server adds to the Seldon response's ``meta.tags`` (:func:`abstain_tags`):

==========================  =====================================================================
``daic.abstain``            per input 0/1 (1: abstained); all 0 when no decision could be made
``daic.abstain.p_correct``  per input P(correct) the decision used, or null (no decision)
``daic.abstain.bound``      the bound in force
``daic.abstain.assessor``   which assessor scored (``<model>/<version>`` or
                            ``<model>-filter/<filter version>/<gate>``), or null
``daic.abstain.status``     ``decided``, or why no input was abstained (no assessor loaded yet, the
                            sidecar did not answer in time ...): never a silent "all answered"
==========================  =====================================================================
"""
from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np

TAG_ABSTAIN = "daic.abstain"
TAG_P_CORRECT = "daic.abstain.p_correct"
TAG_BOUND = "daic.abstain.bound"
TAG_ASSESSOR = "daic.abstain.assessor"
TAG_STATUS = "daic.abstain.status"
DECIDED = "decided"
#: Decimal places of P(correct) in the tag (the sidecar's float32 carries ~7 digits).
_DECIMALS = 4


def check_bound(bound: Any, field: str = "bound") -> float:
    """``bound`` as a float in (0, 1); ValueError naming ``field`` otherwise (0 would never abstain,
    1 would abstain on everything: both are "off", which is said with no bound at all)."""
    if isinstance(bound, bool) or not isinstance(bound, (int, float)) or not math.isfinite(bound) \
            or not 0.0 < float(bound) < 1.0:
        raise ValueError(f"{field} must be a number in (0, 1), got {bound!r}")
    return float(bound)


def abstain_mask(p_correct: Any, bound: float) -> np.ndarray:
    """Boolean (N,): which inputs to abstain on, ``p_correct < bound``. ``p_correct`` must be
    finite and in [0, 1] (ValueError naming the first bad position): an unscored input is not
    decided here, the caller says "no decision" instead (:func:`abstain_tags` without scores)."""
    bound = check_bound(bound)
    p = np.asarray(p_correct, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"p_correct must be 1-d (one per input), got shape {p.shape}")
    bad = ~np.isfinite(p) | (p < 0) | (p > 1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"p_correct must be finite and in [0, 1], got {p[i]!r} at position {i}")
    return p < bound


def abstain_tags(n: int, bound: float, p_correct: Optional[Any] = None, assessor: Optional[str] = None,
                 reason: Optional[str] = None) -> dict[str, Any]:
    """The ``meta.tags`` entries for ``n`` inputs: decided on ``p_correct`` when given, else none
    abstained and ``reason`` in the status tag (a decision needs scores; no scores needs a reason)."""
    bound = check_bound(bound)
    if p_correct is None:
        if not reason:
            raise ValueError("abstain_tags without p_correct needs the reason no decision was made")
        return {TAG_ABSTAIN: [0] * n, TAG_P_CORRECT: None, TAG_BOUND: bound, TAG_ASSESSOR: assessor,
                TAG_STATUS: reason}
    p = np.asarray(p_correct, dtype=np.float64)
    if p.shape != (n,):
        raise ValueError(f"p_correct must have one value per input ({n}), got shape {p.shape}")
    mask = abstain_mask(p, bound)
    return {TAG_ABSTAIN: mask.astype(int).tolist(), TAG_P_CORRECT: np.round(p, _DECIMALS).tolist(),
            TAG_BOUND: bound, TAG_ASSESSOR: assessor, TAG_STATUS: DECIDED}


def abstained_of(tags: Any, n: int) -> np.ndarray:
    """Boolean (n,) read back from a response's ``meta.tags`` (the sidecar's side): all False when
    the tag is absent or malformed (a response is data; a broken tag abstains nothing)."""
    value = tags.get(TAG_ABSTAIN) if isinstance(tags, dict) else None
    if not isinstance(value, list) or len(value) != n or not all(v in (0, 1) and not isinstance(v, float)
                                                                 for v in value):
        return np.zeros(n, bool)
    return np.asarray(value, dtype=bool)


def selective(correct: Any, answered: Any) -> tuple[float, float]:
    """(coverage, selective accuracy): the share of inputs answered and the accuracy on them
    (NaN when none is answered)."""
    correct, answered = np.asarray(correct, bool), np.asarray(answered, bool)
    if correct.shape != answered.shape or correct.ndim != 1 or correct.size == 0:
        raise ValueError(f"correct and answered must be non-empty 1-d arrays of one shape, got "
                         f"{correct.shape} and {answered.shape}")
    coverage = float(answered.mean())
    return coverage, float(correct[answered].mean()) if answered.any() else float("nan")
