"""The operator's view of the trigger policy: one online estimate -> a typed verdict.

The policy itself (absolute threshold or allowed drop, minimum evidence, hysteresis, drift and
untrusted-estimate alarms) is issue 4's pure ``daic.oracles.trigger.decide``; this module only
maps the AssessmentCycle spec and the sidecar's reading onto it and names the outcome so the
reconcile function can count consecutive breaches and emit events with stable reasons. Arming
state is kept by reconcile.py in ``status.armed`` (the same flag ``decide`` takes and returns).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from daic.operators.observations import EstimateReading
from daic.operators.spec import TriggerMethod, TriggerMode, TriggerSpec
from daic.oracles.trigger import TriggerPolicy, decide
from daic.oracles.window import WindowEstimate


@dataclass(frozen=True)
class TriggerCheck:
    threshold: float | None  # the effective accuracy threshold (None: no reference known yet)
    eligible: bool           # the reading rests on at least minWindow predictions and has a threshold
    breach: bool             # an armed policy would fire on this reading
    recovered: bool          # a disarmed policy would re-arm on this reading
    reason: str              # EstimateBelowThreshold | UntrustedEstimate | ChangeDetected | DriftAlarm | Healthy | ...
    message: str


def reference_accuracy(trigger: TriggerSpec, reading: EstimateReading | None) -> float | None:
    """``trigger.referenceAccuracy`` when set, else what the sidecar reports for its model."""
    if trigger.reference_accuracy is not None:
        return trigger.reference_accuracy
    return reading.reference_accuracy if reading is not None else None


def policy(trigger: TriggerSpec, reading: EstimateReading | None) -> TriggerPolicy | None:
    """The issue-4 policy for this spec; None in drop mode while no reference accuracy is known."""
    if trigger.mode is TriggerMode.absolute:
        return TriggerPolicy(threshold=float(trigger.threshold), mode="absolute",
                             min_evidence=trigger.min_window, hysteresis=trigger.hysteresis,
                             trigger_when_untrusted=trigger.when_untrusted,
                             trigger_on_drift_alarm=trigger.drift_alarm,
                             trigger_on_change=trigger.method is TriggerMethod.sequential)
    reference = reference_accuracy(trigger, reading)
    if reference is None:
        return None
    return TriggerPolicy(threshold=float(trigger.max_drop), mode="drop", reference_accuracy=reference,
                         min_evidence=trigger.min_window, hysteresis=trigger.hysteresis,
                         trigger_when_untrusted=trigger.when_untrusted,
                         trigger_on_drift_alarm=trigger.drift_alarm,
                         trigger_on_change=trigger.method is TriggerMethod.sequential)


def effective_threshold(trigger: TriggerSpec, reading: EstimateReading | None) -> float | None:
    pol = policy(trigger, reading)
    return None if pol is None else max(0.0, pol.accuracy_threshold)


def _window(reading: EstimateReading) -> WindowEstimate:
    nan = math.nan
    return WindowEstimate(accuracy=reading.accuracy,
                          lower=reading.lower if reading.lower is not None else nan,
                          upper=reading.upper if reading.upper is not None else nan,
                          drift_score=nan, drift_p_value=nan, drift_alarm=reading.drift_alarm,
                          trusted=reading.trusted, n=reading.n, far_fraction=nan,
                          error_sd=reading.error_sd if reading.error_sd is not None else nan,
                          change_alarm=reading.change_alarm)


def check(trigger: TriggerSpec, reading: EstimateReading) -> TriggerCheck:
    pol = policy(trigger, reading)
    if pol is None:
        return TriggerCheck(None, False, False, False, "NoReference",
                            "trigger.mode is 'drop' but neither trigger.referenceAccuracy nor the "
                            "estimate's reference_accuracy is known")
    threshold = max(0.0, pol.accuracy_threshold)
    if reading.n < trigger.min_window:
        return TriggerCheck(threshold, False, False, False, "InsufficientWindow",
                            f"estimate rests on {reading.n} predictions < minWindow {trigger.min_window}")
    window = _window(reading)
    armed = decide(pol, window, armed=True)
    rearm = decide(pol, window, armed=False)
    if not armed.assess:
        reason = "Healthy"
    elif reading.accuracy < pol.accuracy_threshold:
        reason = "EstimateBelowThreshold"
    elif trigger.when_untrusted and not reading.trusted and reading.drift_alarm:
        reason = "UntrustedEstimate"
    elif pol.trigger_on_change and reading.change_alarm:
        reason = "ChangeDetected"
    else:
        reason = "DriftAlarm"
    return TriggerCheck(threshold, True, armed.assess, rearm.armed, reason, armed.reason)
