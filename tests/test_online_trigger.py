"""Trigger policy: its truth table, hysteresis and validation."""
import itertools

import pytest

from daic.oracles.trigger import TriggerPolicy, decide
from daic.oracles.window import WindowEstimate


def _est(acc, n=500, trusted=True, alarm=False):
    return WindowEstimate(accuracy=acc, lower=acc - 0.01, upper=acc + 0.01, drift_score=0.5,
                          drift_p_value=0.001 if alarm else 0.5, drift_alarm=alarm, trusted=trusted,
                          n=n, far_fraction=0.0)


POLICY = TriggerPolicy(threshold=0.03, mode="drop", reference_accuracy=0.99, min_evidence=200,
                       hysteresis=0.01, trigger_when_untrusted=True, trigger_on_drift_alarm=False)


@pytest.mark.parametrize(
    "below, trusted, alarm, expect",
    [
        # (estimate below 0.96, trusted, drift alarm) -> assess?
        (False, True, False, False),
        (False, True, True, False),    # drift alone does not fire with trigger_on_drift_alarm off
        (False, False, False, False),  # untrusted without drift evidence: do not spend labels
        (False, False, True, True),    # untrusted and drifting: only labels can tell
        (True, True, False, True),
        (True, True, True, True),
        (True, False, False, True),
        (True, False, True, True),
    ],
)
def test_truth_table_when_armed(below, trusted, alarm, expect):
    acc = 0.95 if below else 0.97
    d = decide(POLICY, _est(acc, trusted=trusted, alarm=alarm), armed=True)
    assert d.assess is expect
    assert d.armed is (not expect)


def test_all_combinations_without_evidence_never_fire():
    for acc, trusted, alarm, armed in itertools.product((0.5, 0.99), (True, False), (True, False), (True, False)):
        d = decide(POLICY, _est(acc, n=199, trusted=trusted, alarm=alarm), armed=armed)
        assert not d.assess and d.armed is armed and "insufficient" in d.reason


def test_threshold_is_strict_and_absolute_mode():
    assert not decide(POLICY, _est(0.96)).assess           # 0.99 - 0.03 exactly: not below
    assert decide(POLICY, _est(0.9599)).assess
    absolute = TriggerPolicy(threshold=0.9, mode="absolute", min_evidence=1)
    assert decide(absolute, _est(0.89)).assess and not decide(absolute, _est(0.9)).assess


def test_compare_uses_the_band():
    est = _est(0.955)  # band 0.945 .. 0.965 around a threshold of 0.96
    assert decide(POLICY, est).assess
    upper = TriggerPolicy(threshold=0.03, reference_accuracy=0.99, compare="upper")
    assert not decide(upper, est).assess and decide(upper, _est(0.945)).assess
    lower = TriggerPolicy(threshold=0.03, reference_accuracy=0.99, compare="lower")
    assert decide(lower, _est(0.965)).assess and not decide(lower, _est(0.975)).assess
    with pytest.raises(ValueError, match="compare"):
        TriggerPolicy(threshold=0.03, reference_accuracy=0.99, compare="median")


def test_drift_alarm_option():
    policy = TriggerPolicy(threshold=0.03, reference_accuracy=0.99, trigger_on_drift_alarm=True)
    assert decide(policy, _est(0.99, alarm=True)).assess


def test_hysteresis_rearms_only_above_threshold_plus_margin():
    d = decide(POLICY, _est(0.90), armed=True)
    assert d.assess and not d.armed
    # Still low, then barely above the threshold: stays disarmed and silent.
    for acc in (0.90, 0.96, 0.9699):
        d = decide(POLICY, _est(acc), armed=d.armed)
        assert not d.assess and not d.armed
    # Recovered past 0.96 + 0.01 but still drifting: not yet.
    d = decide(POLICY, _est(0.98, alarm=True), armed=False)
    assert not d.armed
    d = decide(POLICY, _est(0.97), armed=False)
    assert not d.assess and d.armed
    assert decide(POLICY, _est(0.90), armed=d.armed).assess


@pytest.mark.parametrize("kwargs, message", [
    (dict(mode="relative"), "mode"),
    (dict(mode="drop", reference_accuracy=None), "reference_accuracy"),
    (dict(threshold=1.5, reference_accuracy=0.9), "threshold"),
    (dict(min_evidence=0, reference_accuracy=0.9), "min_evidence"),
    (dict(hysteresis=-0.1, reference_accuracy=0.9), "hysteresis"),
])
def test_bad_policy_is_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TriggerPolicy(**kwargs)


def _untrusted(acc, error_sd):
    return WindowEstimate(accuracy=acc, lower=acc - 2 * error_sd, upper=acc + 2 * error_sd, drift_score=0.8,
                          drift_p_value=1e-9, drift_alarm=True, trusted=False, n=500, far_fraction=0.0,
                          error_sd=error_sd)


def test_untrusted_window_fires_only_when_a_drop_is_plausible():
    # Threshold 0.96. Estimate 0.99: with an error scale of 0.02 a drop below 0.96 is 1.5 sd
    # away (not plausible at 1 sd); with 0.05 it is 0.6 sd away (plausible).
    assert decide(POLICY, _untrusted(0.99, 0.02)).assess is False
    assert decide(POLICY, _untrusted(0.99, 0.05)).assess is True
    assert decide(POLICY, _untrusted(0.97, 0.011)).assess is True     # 0.97 - 0.011 < 0.96
    assert decide(POLICY, _untrusted(0.97, 0.009)).assess is False    # 0.97 - 0.009 > 0.96
    strict = TriggerPolicy(threshold=0.03, mode="drop", reference_accuracy=0.99, untrusted_margin_sd=2.0)
    assert decide(strict, _untrusted(0.99, 0.02)).assess is True      # 0.99 - 0.04 < 0.96
    always = TriggerPolicy(threshold=0.03, mode="drop", reference_accuracy=0.99, untrusted_margin_sd=None)
    assert decide(always, _untrusted(0.999, 0.001)).assess is True
    # An estimate without an error scale (older producers) keeps the plain rule.
    assert decide(POLICY, _untrusted(0.999, float("nan"))).assess is True
    # Trusted windows ignore the error scale: only the threshold counts.
    trusted = WindowEstimate(0.97, 0.9, 1.0, 0.5, 1e-9, True, True, 500, 0.0, error_sd=0.5)
    assert decide(POLICY, trusted).assess is False


@pytest.mark.parametrize("bad", [-1.0, float("inf"), "1", True])
def test_bad_untrusted_margin_is_named(bad):
    with pytest.raises(ValueError, match="untrusted_margin_sd"):
        TriggerPolicy(threshold=0.03, mode="drop", reference_accuracy=0.99, untrusted_margin_sd=bad)


def test_an_untrusted_window_rearms_without_an_alarm_but_not_with_one():
    """Arming starts nothing, so trust is not asked for: an untrusted clean window (a weak model's)
    re-arms; the same window with a drift alarm does not."""
    assert decide(POLICY, _est(0.98, trusted=False), armed=False).armed
    assert not decide(POLICY, _est(0.98, trusted=False, alarm=True), armed=False).armed
    assert not decide(POLICY, _est(0.965, trusted=False), armed=False).armed  # below 0.96 + 0.01


def test_change_alarm_fires_unless_disabled_and_blocks_rearming():
    est = WindowEstimate(0.985, 0.98, 0.99, 0.5, 0.5, False, True, 500, 0.0, change_statistic=1.4, change_alarm=True)
    d = decide(POLICY, est)
    assert d.assess and "change detected" in d.reason and "1.40" in d.reason
    from dataclasses import replace
    assert not decide(replace(POLICY, trigger_on_change=False), est).assess
    assert not decide(POLICY, est, armed=False).armed          # not recovered while the alarm is on
    assert decide(POLICY, replace(est, change_alarm=False), armed=False).armed
    assert not decide(POLICY, replace(est, n=199)).assess       # minimum evidence still applies


def test_operator_trigger_method_chooses_the_change_alarm():
    """The AssessmentCycle's trigger.method: 'sequential' (default) adds the sidecar's change alarm."""
    from datetime import datetime, timezone

    from daic.operators.estimates import parse_estimate
    from daic.operators.spec import TriggerMethod, TriggerSpec
    from daic.operators.trigger import check

    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    reading = parse_estimate({"accuracy": 0.985, "n": 1000, "reference_accuracy": 0.99, "change_alarm": True}, now)
    assert reading.change_alarm
    default = TriggerSpec.model_validate({"mode": "drop", "maxDrop": 0.03})
    assert default.method is TriggerMethod.sequential
    c = check(default, reading)
    assert c.breach and c.reason == "ChangeDetected"
    window = TriggerSpec.model_validate({"mode": "drop", "maxDrop": 0.03, "method": "window"})
    assert not check(window, reading).breach
    quiet = parse_estimate({"accuracy": 0.985, "n": 1000, "reference_accuracy": 0.99}, now)
    assert not quiet.change_alarm and not check(default, quiet).breach
    with pytest.raises(ValueError, match="method"):
        TriggerSpec.model_validate({"mode": "drop", "maxDrop": 0.03, "method": "cusum"})
