"""When to spend labels: the trigger policy, a pure function of one window's estimate.

Offline assessment costs human labels, so the online side decides when it is worth it. The
policy fires ("assess now") when, with enough evidence in the window,

* the estimated accuracy is below the threshold (absolute, or a drop from the reference
  accuracy); ``compare`` picks which number of the window is compared: the point estimate
  (default), the band's upper bound (fire only on a confident drop: fewer false triggers, later
  detection) or its lower bound (fire as soon as a drop is plausible), or
* optionally, the estimate is untrusted while the drift test alarms: the inputs have moved
  where the label-free estimate means little, so only labels can tell. With
  ``untrusted_margin_sd`` set, such a window fires only if a drop below the threshold is
  plausible: estimate - untrusted_margin_sd x error_sd < threshold, where ``error_sd`` is the
  window's own error scale (sampling plus the model error the assessor measured on held-out
  shifts *at that drift score*, :class:`daic.oracles.window.WindowConfig` ``error_profile``).
  A window that has barely left the trust region and whose estimate is far above the threshold
  then does not cost a labelling round; one far from the reference, where the error scale is
  large, still fires. Without it (None), every untrusted window with a drift alarm fires, or
* optionally, on any drift alarm, or
* (``trigger_on_change``, on by default) when the sequential change detector alarms: Page's
  CUSUM on every input's expected error (:mod:`daic.oracles.change`), calibrated to at most
  one false alarm per 100,000 clean inputs; it reacts within a batch or two of a drop, where
  the window average needs a good part of its window.

Hysteresis keeps one drop from firing at every window: after firing, the policy is disarmed
until the estimate climbs back above threshold + hysteresis without drift or change alarm (e.g.
after a retrained model is deployed). Trust is not asked for: arming starts nothing (firing keeps
its own rules), while a disarmed policy never fires again, so a model whose clean windows the
error model leaves untrusted (a weak one) would otherwise be unwatched for good after one cycle. The armed flag is the only state; the caller keeps it and passes it back in.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from daic.oracles.window import WindowEstimate

MODES: tuple[str, ...] = ("absolute", "drop")
COMPARE: tuple[str, ...] = ("estimate", "upper", "lower")


@dataclass(frozen=True)
class TriggerPolicy:
    """mode "absolute": fire below ``threshold`` (an accuracy in [0, 1]); mode "drop": fire
    below ``reference_accuracy - threshold``. ``min_evidence``: inputs a window needs before
    any decision. ``hysteresis``: margin above the threshold to re-arm. ``compare``: which
    number of the window is compared with the threshold (see the module docstring).
    ``untrusted_margin_sd``: how many error standard deviations below the estimate a drop
    must be plausible for an untrusted window with a drift alarm to fire (None: always fire).
    ``trigger_on_change``: fire on the sequential change detector's alarm."""

    threshold: float = 0.03
    mode: str = "drop"
    reference_accuracy: float | None = None
    min_evidence: int = 200
    hysteresis: float = 0.01
    trigger_when_untrusted: bool = True
    trigger_on_drift_alarm: bool = False
    compare: str = "estimate"
    untrusted_margin_sd: float | None = 1.0
    trigger_on_change: bool = True

    def __post_init__(self) -> None:
        if self.untrusted_margin_sd is not None and not (
                isinstance(self.untrusted_margin_sd, (int, float)) and not isinstance(self.untrusted_margin_sd, bool)
                and 0.0 <= self.untrusted_margin_sd < math.inf):
            raise ValueError(f"untrusted_margin_sd must be a number >= 0 or None, got {self.untrusted_margin_sd!r}")
        if self.compare not in COMPARE:
            raise ValueError(f"unknown compare {self.compare!r}; valid: {', '.join(COMPARE)}")
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; valid: {', '.join(MODES)}")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must lie in [0, 1], got {self.threshold!r}")
        if self.mode == "drop":
            if self.reference_accuracy is None:
                raise ValueError("mode 'drop' needs reference_accuracy")
            if not 0.0 <= self.reference_accuracy <= 1.0:
                raise ValueError(f"reference_accuracy must lie in [0, 1], got {self.reference_accuracy!r}")
        if isinstance(self.min_evidence, bool) or int(self.min_evidence) != self.min_evidence or self.min_evidence < 1:
            raise ValueError(f"min_evidence must be a positive integer, got {self.min_evidence!r}")
        if not 0.0 <= self.hysteresis <= 1.0:
            raise ValueError(f"hysteresis must lie in [0, 1], got {self.hysteresis!r}")

    @property
    def accuracy_threshold(self) -> float:
        """The accuracy below which the policy fires."""
        if self.mode == "absolute":
            return self.threshold
        return self.reference_accuracy - self.threshold


@dataclass(frozen=True)
class TriggerDecision:
    """assess: start an assessment now. armed: the state to pass to the next call. reason: why."""

    assess: bool
    armed: bool
    reason: str


def decide(policy: TriggerPolicy, estimate: WindowEstimate, armed: bool = True) -> TriggerDecision:
    """Decide for one window (see the module docstring for the rules)."""
    if estimate.n < policy.min_evidence or math.isnan(estimate.accuracy):
        return TriggerDecision(False, armed, f"insufficient evidence ({estimate.n} < {policy.min_evidence} inputs)")
    limit = policy.accuracy_threshold
    value = {"estimate": estimate.accuracy, "upper": estimate.upper, "lower": estimate.lower}[policy.compare]
    if math.isnan(value):
        value = estimate.accuracy  # a reading without a band falls back to the point estimate
    below = value < limit
    untrusted_shift = policy.trigger_when_untrusted and not estimate.trusted and estimate.drift_alarm
    plausible = True
    if untrusted_shift and policy.untrusted_margin_sd is not None and not math.isnan(estimate.error_sd):
        plausible = estimate.accuracy - policy.untrusted_margin_sd * estimate.error_sd < limit
    drift = policy.trigger_on_drift_alarm and estimate.drift_alarm
    change = policy.trigger_on_change and estimate.change_alarm
    if not armed:
        recovered = (estimate.accuracy >= limit + policy.hysteresis
                     and not estimate.drift_alarm and not change)
        if recovered:
            return TriggerDecision(False, True, f"re-armed: estimate {estimate.accuracy:.4f} >= {limit + policy.hysteresis:.4f}")
        return TriggerDecision(False, False, "disarmed until the estimate recovers")
    if below:
        return TriggerDecision(True, False, f"{policy.compare} {value:.4f} < threshold {limit:.4f}")
    if untrusted_shift and plausible:
        return TriggerDecision(True, False, "drift alarm with an untrusted estimate")
    if change:
        stat = "" if math.isnan(estimate.change_statistic) else f" (CUSUM at {estimate.change_statistic:.2f} x its threshold)"
        return TriggerDecision(True, False, f"change detected{stat}")
    if drift:
        return TriggerDecision(True, False, f"drift alarm (p = {estimate.drift_p_value:.2g})")
    return TriggerDecision(False, True, f"estimate {estimate.accuracy:.4f} >= threshold {limit:.4f}")
