"""Is the accuracy drop confirmed? A pure rule on the offline interval.

The online estimate (pseudo-oracles) raised the alarm; labels now say whether it was right. A drop
is *confirmed* only when the whole confidence interval lies below the threshold: then, at the
interval's level, the operational accuracy is below what is acceptable, and retraining is worth
its cost. When the point estimate is below the threshold but the interval still reaches above it,
the labels cannot tell: the outcome is *inconclusive* (more labels would settle it) and the cycle
does not retrain. The threshold is the operator's (absolute) when given, else the champion's
reference accuracy minus the tolerated drop.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Outcome = Literal["confirmed", "inconclusive", "no-drop"]


@dataclass(frozen=True)
class DropRule:
    """``threshold`` > 0 wins; otherwise ``reference_accuracy - max_drop``."""

    threshold: float = 0.0
    max_drop: float = 0.02

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold < 1.0:
            raise ValueError(f"threshold must be in [0, 1) (0 = derive it from the reference), got {self.threshold!r}")
        if not 0.0 <= self.max_drop < 1.0:
            raise ValueError(f"max_drop must be in [0, 1), got {self.max_drop!r}")

    def effective_threshold(self, reference_accuracy: float | None) -> float:
        if self.threshold > 0:
            return self.threshold
        if reference_accuracy is None or not 0.0 < reference_accuracy <= 1.0:
            raise ValueError("no threshold: give threshold > 0, or a reference accuracy in (0, 1] "
                             f"(got {reference_accuracy!r}) from which max_drop is subtracted")
        return reference_accuracy - self.max_drop


@dataclass(frozen=True)
class DropDecision:
    outcome: Outcome
    threshold: float
    reason: str

    @property
    def confirmed(self) -> bool:
        return self.outcome == "confirmed"


def decide_drop(accuracy: float, lower: float, upper: float, threshold: float) -> DropDecision:
    """Confirmed iff upper < threshold; inconclusive iff accuracy < threshold <= upper."""
    if not 0.0 <= lower <= accuracy <= upper <= 1.0:
        raise ValueError(f"need 0 <= lower <= accuracy <= upper <= 1, got {lower!r}, {accuracy!r}, {upper!r}")
    interval = f"estimate {accuracy:.4f} [{lower:.4f}, {upper:.4f}]"
    if upper < threshold:
        return DropDecision("confirmed", threshold, f"{interval} lies wholly below the threshold {threshold:.4f}")
    if accuracy < threshold:
        return DropDecision("inconclusive", threshold,
                            f"{interval} is below the threshold {threshold:.4f} but the interval reaches above it")
    return DropDecision("no-drop", threshold, f"{interval} is not below the threshold {threshold:.4f}")
