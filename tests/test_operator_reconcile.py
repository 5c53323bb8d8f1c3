"""The pure reconcile function, exhaustively: every phase x observation, decisions and refusals,
restarts in every phase (actions lost, status lost), duplicate and out-of-order observations.

No I/O here: the function's inputs are built directly, and crash scenarios play against
``fakes.world.World``, a simulated KFP/deployment/store (the real adapters have their own tests).
"""
from __future__ import annotations

import copy
import random

import pytest

from daic.operators.actions import CancelRun, EmitEvent, PatchDeployment, StartRun, WriteRecord
from daic.operators.kube import status_patch
from daic.operators.observations import (
    ActionOutcome,
    Approval,
    DeploymentReading,
    EstimateError,
    Observations,
    RunPhase,
)
from daic.operators.reconcile import CycleIdentity, reconcile, reconcile_resource, record_key, run_name
from daic.operators.status import IN_FLIGHT, CycleStatus, Decision, Phase, Stage
from fakes.crd_schema import crd_schema, validate
from daic.components.testing.fake_kube import merge_patch
from fakes.world import GOOD_RESULT, IDENT, World, at, deep_merge, make_spec, reading, run_obs, step

SCHEMA = crd_schema()
DAY = 86_400


def kinds(actions) -> list[str]:
    return [type(a).__name__ for a in actions]


def of(actions, cls) -> list:
    return [a for a in actions if isinstance(a, cls)]


def reasons(actions) -> list[str]:
    return [a.reason for a in of(actions, EmitEvent)]


# -- reaching every phase the way the operator would ---------------------------------------------


def _walk(spec, steps):
    """Apply (t, observation-factory) steps from a fresh status; factories see the current status."""
    status = CycleStatus()
    for t, make in steps:
        status = step(spec, status, t, make(status)).status
    return status


def _run(status):
    return status.current.run_name if status.current else "no-run"


ASSESS = [(1, lambda s: Observations(estimate=reading(0.97, 1))),
          (2, lambda s: Observations(estimate=reading(0.80, 2)))]
IMPROVE = ASSESS + [(3, lambda s: Observations(runs=(run_obs(_run(s), RunPhase.running, 3, "train"),)))]
SUCCEED = IMPROVE + [(4, lambda s: Observations(runs=(run_obs(_run(s), RunPhase.succeeded, 4, None, GOOD_RESULT),)))]
CANARY_OK = SUCCEED + [(5, lambda s: Observations(deployment=DeploymentReading("v1", "v2", 10, at(5))))]
PROMOTE = CANARY_OK + [(70, lambda s: Observations())]
COOLDOWN = PROMOTE + [(71, lambda s: Observations(deployment=DeploymentReading("v2", None, 0, at(71))))]
FAILED = IMPROVE + [(4, lambda s: Observations(runs=(run_obs(_run(s), RunPhase.failed, 4, error="OOM"),)))]
DEGRADED = [(1, lambda s: Observations()), (700, lambda s: Observations())]
MONITOR = ASSESS[:1]


def state(name):
    """(spec, status, time of the last step) for each named starting point."""
    manual = make_spec(promotion={"mode": "manual"})
    auto = make_spec()
    table = {
        "Monitoring": (auto, MONITOR),
        "Degraded": (auto, DEGRADED),
        "Assessing": (auto, ASSESS),
        "Improving": (auto, IMPROVE),
        "AwaitingApproval": (manual, SUCCEED),
        "Promoting/canary": (auto, SUCCEED),
        "Promoting/canary-serving": (auto, CANARY_OK),
        "Promoting/promote": (auto, PROMOTE),
        "Cooldown": (auto, COOLDOWN),
        "Failed": (auto, FAILED),
    }
    spec, steps = table[name]
    return spec, _walk(spec, steps), steps[-1][0]


def test_each_starting_point_is_the_phase_it_names():
    expected = {"Monitoring": (Phase.monitoring, None), "Degraded": (Phase.degraded, None),
                "Assessing": (Phase.assessing, Stage.submitted), "Improving": (Phase.improving, Stage.training),
                "AwaitingApproval": (Phase.awaiting_approval, Stage.approval),
                "Promoting/canary": (Phase.promoting, Stage.canary),
                "Promoting/canary-serving": (Phase.promoting, Stage.canary),
                "Promoting/promote": (Phase.promoting, Stage.promote),
                "Cooldown": (Phase.cooldown, None), "Failed": (Phase.failed, None)}
    for name, (phase, stage) in expected.items():
        _, status, _ = state(name)
        assert (status.phase, status.stage) == (phase, stage), name


# -- observations, relative to the time T of the starting point ----------------------------------

OBSERVATIONS = {
    "nothing": lambda s, T: (Observations(), T + 1),
    "healthy": lambda s, T: (Observations(estimate=reading(0.97, T + 1)), T + 1),
    "breach": lambda s, T: (Observations(estimate=reading(0.80, T + 1)), T + 1),
    "estimate-error": lambda s, T: (Observations(estimate=EstimateError("connection refused", at(T + 1))), T + 1),
    "run-training": lambda s, T: (Observations(runs=(run_obs(_run(s), RunPhase.running, T + 1, "train"),)), T + 1),
    "run-succeeded": lambda s, T: (Observations(runs=(run_obs(_run(s), RunPhase.succeeded, T + 1, None,
                                                              GOOD_RESULT),)), T + 1),
    "run-failed": lambda s, T: (Observations(runs=(run_obs(_run(s), RunPhase.failed, T + 1, error="OOM"),)), T + 1),
    "run-missing": lambda s, T: (Observations(runs=(run_obs(_run(s), RunPhase.not_found, T + 1),)), T + 1),
    "deployment-canary": lambda s, T: (Observations(deployment=DeploymentReading("v1", "v2", 10, at(T + 1))), T + 1),
    "deployment-promoted": lambda s, T: (Observations(deployment=DeploymentReading("v2", None, 0, at(T + 1))), T + 1),
    "approve": lambda s, T: (Observations(approval=Approval(s.current.cycle if s.current else 1, True, at(T + 1))),
                             T + 1),
    "reject": lambda s, T: (Observations(approval=Approval(s.current.cycle if s.current else 1, False, at(T + 1))),
                            T + 1),
    "ten-days-later": lambda s, T: (Observations(), T + 10 * DAY),
}

# (starting point, observation) -> (phase after, stage after, actions that must appear, that must not)
EXPECTED = {
    ("Monitoring", "nothing"): (Phase.monitoring, None, [], [StartRun]),
    ("Monitoring", "healthy"): (Phase.monitoring, None, [], [StartRun]),
    ("Monitoring", "breach"): (Phase.assessing, Stage.submitted, [StartRun, WriteRecord], []),
    ("Monitoring", "estimate-error"): (Phase.monitoring, None, [], [StartRun]),
    ("Monitoring", "run-succeeded"): (Phase.monitoring, None, [], [StartRun, PatchDeployment]),
    ("Monitoring", "deployment-promoted"): (Phase.monitoring, None, [], [PatchDeployment]),
    ("Monitoring", "approve"): (Phase.monitoring, None, [], [PatchDeployment]),
    ("Monitoring", "ten-days-later"): (Phase.degraded, None, [EmitEvent], [StartRun]),
    ("Degraded", "nothing"): (Phase.degraded, None, [], [StartRun]),
    ("Degraded", "healthy"): (Phase.monitoring, None, [EmitEvent], [StartRun]),
    ("Degraded", "breach"): (Phase.assessing, Stage.submitted, [StartRun], []),
    ("Degraded", "estimate-error"): (Phase.degraded, None, [], [StartRun]),
    ("Degraded", "run-failed"): (Phase.degraded, None, [], [StartRun]),
    ("Assessing", "nothing"): (Phase.assessing, Stage.submitted, [], [StartRun]),
    ("Assessing", "healthy"): (Phase.assessing, Stage.submitted, [], [StartRun]),
    ("Assessing", "breach"): (Phase.assessing, Stage.submitted, [], [StartRun]),
    ("Assessing", "estimate-error"): (Phase.assessing, Stage.submitted, [], [StartRun]),
    ("Assessing", "run-training"): (Phase.improving, Stage.training, [EmitEvent], [StartRun]),
    ("Assessing", "run-succeeded"): (Phase.promoting, Stage.canary, [PatchDeployment], [StartRun]),
    ("Assessing", "run-failed"): (Phase.failed, None, [EmitEvent, WriteRecord], [StartRun]),
    ("Assessing", "run-missing"): (Phase.assessing, Stage.submitted, [StartRun], []),
    ("Assessing", "deployment-canary"): (Phase.assessing, Stage.submitted, [], [PatchDeployment]),
    ("Assessing", "approve"): (Phase.assessing, Stage.submitted, [], [PatchDeployment]),
    ("Assessing", "ten-days-later"): (Phase.failed, None, [CancelRun], [StartRun]),
    ("Improving", "nothing"): (Phase.improving, Stage.training, [], [StartRun]),
    ("Improving", "breach"): (Phase.improving, Stage.training, [], [StartRun]),
    ("Improving", "run-training"): (Phase.improving, Stage.training, [], [StartRun, EmitEvent]),
    ("Improving", "run-succeeded"): (Phase.promoting, Stage.canary, [PatchDeployment], []),
    ("Improving", "run-failed"): (Phase.failed, None, [WriteRecord], []),
    ("Improving", "run-missing"): (Phase.improving, Stage.training, [StartRun], []),
    ("Improving", "ten-days-later"): (Phase.failed, None, [CancelRun], []),
    ("AwaitingApproval", "nothing"): (Phase.awaiting_approval, Stage.approval, [], [PatchDeployment]),
    ("AwaitingApproval", "breach"): (Phase.awaiting_approval, Stage.approval, [], [PatchDeployment, StartRun]),
    ("AwaitingApproval", "run-failed"): (Phase.awaiting_approval, Stage.approval, [], [PatchDeployment]),
    ("AwaitingApproval", "approve"): (Phase.promoting, Stage.canary, [PatchDeployment], []),
    ("AwaitingApproval", "reject"): (Phase.cooldown, None, [WriteRecord], [PatchDeployment]),
    ("AwaitingApproval", "ten-days-later"): (Phase.cooldown, None, [WriteRecord], [PatchDeployment]),
    ("Promoting/canary", "nothing"): (Phase.promoting, Stage.canary, [PatchDeployment], []),
    ("Promoting/canary", "deployment-canary"): (Phase.promoting, Stage.canary, [EmitEvent], [PatchDeployment]),
    ("Promoting/canary", "deployment-promoted"): (Phase.promoting, Stage.canary, [PatchDeployment], []),
    ("Promoting/canary", "run-failed"): (Phase.promoting, Stage.canary, [PatchDeployment], []),
    ("Promoting/canary-serving", "nothing"): (Phase.promoting, Stage.canary, [], [PatchDeployment]),
    # promotion.timeoutSeconds (default 3600) is long past: the champion alone is restored, the cycle fails
    ("Promoting/canary-serving", "ten-days-later"): (Phase.failed, None, [PatchDeployment, WriteRecord], []),
    ("Promoting/promote", "nothing"): (Phase.promoting, Stage.promote, [PatchDeployment], []),
    ("Promoting/promote", "deployment-promoted"): (Phase.cooldown, None, [WriteRecord, EmitEvent], []),
    ("Promoting/promote", "deployment-canary"): (Phase.promoting, Stage.promote, [PatchDeployment], []),
    ("Cooldown", "nothing"): (Phase.cooldown, None, [], [StartRun]),
    ("Cooldown", "breach"): (Phase.cooldown, None, [], [StartRun]),
    ("Cooldown", "healthy"): (Phase.cooldown, None, [EmitEvent], [StartRun]),
    ("Cooldown", "run-succeeded"): (Phase.cooldown, None, [], [StartRun, PatchDeployment]),
    ("Cooldown", "ten-days-later"): (Phase.degraded, None, [EmitEvent], [StartRun]),
    ("Failed", "nothing"): (Phase.failed, None, [], [StartRun]),
    ("Failed", "breach"): (Phase.failed, None, [], [StartRun]),
    ("Failed", "ten-days-later"): (Phase.degraded, None, [EmitEvent], [StartRun]),
}


@pytest.mark.parametrize("start,observation", sorted(EXPECTED))
def test_phase_by_observation(start, observation):
    spec, status, T = state(start)
    before = status.model_copy(deep=True)
    obs, now = OBSERVATIONS[observation](status, T)
    out = step(spec, status, now, obs)
    phase, stage, must, must_not = EXPECTED[(start, observation)]
    assert (out.status.phase, out.status.stage) == (phase, stage), (out.status.reason, out.status.message)
    for cls in must:
        assert of(out.actions, cls), f"{cls.__name__} missing from {kinds(out.actions)}"
    for cls in must_not:
        assert not of(out.actions, cls), f"unexpected {cls.__name__} in {kinds(out.actions)}"
    assert status == before, "reconcile must not mutate its input"


ALL_STARTS = ["Monitoring", "Degraded", "Assessing", "Improving", "AwaitingApproval", "Promoting/canary",
              "Promoting/canary-serving", "Promoting/promote", "Cooldown", "Failed"]


@pytest.mark.parametrize("start", ALL_STARTS)
@pytest.mark.parametrize("observation", sorted(OBSERVATIONS))
def test_invariants_hold_for_every_phase_and_observation(start, observation):
    """Whatever comes in: one cycle at most in flight, runs named after the cycle in flight, every
    phase or stage change announced by an Event, a status the CRD schema accepts, determinism."""
    spec, status, T = state(start)
    obs, now = OBSERVATIONS[observation](status, T)
    out = step(spec, status, now, obs)
    again = step(spec, status, now, obs)
    assert out == again, "reconcile must be deterministic"
    st = out.status
    assert (st.current is not None) == (st.phase in IN_FLIGHT), (st.phase, st.current)
    for start_run in of(out.actions, StartRun):
        assert st.current is not None and start_run.run_name == st.current.run_name
        assert start_run.run_name == run_name(IDENT, st.current.cycle)
    assert len({h.cycle for h in st.history}) == len(st.history)
    assert st.cycle_count == max([h.cycle for h in st.history] + [st.current.cycle if st.current else 0])
    if (st.phase, st.stage) != (status.phase, status.stage):
        assert of(out.actions, EmitEvent), "a transition without an Event"
    stored = merge_patch({}, status_patch(st, None))
    problems = validate({"apiVersion": "daic.dev/v1alpha1", "kind": "AssessmentCycle",
                         "metadata": {"name": "demo"}, "spec": copy.deepcopy(_raw_spec(spec)), **stored}, SCHEMA)
    assert not problems, problems


def _raw_spec(spec):
    return spec.model_dump(mode="json", by_alias=True, exclude_none=True)


# -- the trigger ---------------------------------------------------------------------------------


def test_consecutive_breaches_are_needed_and_a_healthy_reading_resets_the_count():
    spec = make_spec(trigger={"consecutive": 2})
    s = step(spec, CycleStatus(), 1, Observations(estimate=reading(0.8, 1))).status
    assert s.phase is Phase.monitoring and s.breach_count == 1
    s = step(spec, s, 2, Observations(estimate=reading(0.95, 2))).status
    assert s.breach_count == 0
    s = step(spec, s, 3, Observations(estimate=reading(0.8, 3))).status
    out = step(spec, s, 4, Observations(estimate=reading(0.8, 4)))
    assert out.status.phase is Phase.assessing and len(of(out.actions, StartRun)) == 1


def test_a_small_window_never_triggers():
    spec = make_spec(trigger={"minWindow": 1000})
    out = step(spec, CycleStatus(), 1, Observations(estimate=reading(0.1, 1, n=999)))
    assert out.status.phase is Phase.monitoring and not of(out.actions, StartRun)
    assert out.status.reason == "InsufficientWindow"
    assert step(spec, out.status, 2, Observations(estimate=reading(0.1, 2, n=1000))).status.phase is Phase.assessing


def test_drift_alarm_triggers_only_when_enabled():
    alarm = dict(drift_alarm=True, trusted=True)
    off = step(make_spec(), CycleStatus(), 1, Observations(estimate=reading(0.97, 1, **alarm)))
    assert off.status.phase is Phase.monitoring
    on = step(make_spec(trigger={"driftAlarm": True}), CycleStatus(), 1, Observations(estimate=reading(0.97, 1, **alarm)))
    assert on.status.phase is Phase.assessing and on.status.current.trigger_reason == "DriftAlarm"


def test_an_untrusted_estimate_under_drift_triggers_unless_disabled():
    obs = Observations(estimate=reading(0.97, 1, drift_alarm=True, trusted=False))
    assert step(make_spec(), CycleStatus(), 1, obs).status.current.trigger_reason == "UntrustedEstimate"
    assert step(make_spec(trigger={"whenUntrusted": False}), CycleStatus(), 1, obs).status.phase is Phase.monitoring


def test_an_untrusted_estimate_fires_only_when_its_error_scale_makes_a_drop_plausible():
    # threshold 0.9 (make_spec's absolute default): 0.97 - 1 x 0.02 stays above it, 0.97 - 0.1 does not
    confident = Observations(estimate=reading(0.97, 1, drift_alarm=True, trusted=False, error_sd=0.02))
    assert step(make_spec(), CycleStatus(), 1, confident).status.phase is Phase.monitoring
    vague = Observations(estimate=reading(0.97, 1, drift_alarm=True, trusted=False, error_sd=0.10))
    assert step(make_spec(), CycleStatus(), 1, vague).status.current.trigger_reason == "UntrustedEstimate"


def test_drop_mode_uses_the_reference_the_sidecar_reports_and_degrades_without_one():
    spec = make_spec(trigger={"mode": "drop", "maxDrop": 0.05, "threshold": None})
    fine = step(spec, CycleStatus(), 1, Observations(estimate=reading(0.95, 1, reference_accuracy=0.99)))
    assert fine.status.phase is Phase.monitoring and fine.status.effective_threshold == pytest.approx(0.94)
    fired = step(spec, fine.status, 2, Observations(estimate=reading(0.93, 2, reference_accuracy=0.99)))
    assert fired.status.phase is Phase.assessing
    blind = step(spec, CycleStatus(), 1, Observations(estimate=reading(0.5, 1)))
    assert (blind.status.phase, blind.status.reason) == (Phase.degraded, "NoReference")


def test_suspend_stops_new_cycles_but_keeps_reading():
    out = step(make_spec(suspend=True), CycleStatus(), 1, Observations(estimate=reading(0.5, 1)))
    assert out.status.phase is Phase.monitoring and out.status.reason == "Suspended"
    assert out.status.estimate.accuracy == 0.5 and not of(out.actions, StartRun)


def test_hysteresis_after_a_refused_cycle_then_rearm_and_fire_again():
    spec = make_spec(cooldownSeconds=0)
    refused = dict(GOOD_RESULT, drop_confirmed=False)
    s = _walk(spec, ASSESS + [(3, lambda s: Observations(runs=(run_obs(_run(s), RunPhase.succeeded, 3, None,
                                                                               refused),)))])
    assert s.phase is Phase.monitoring, "cooldown 0: straight back to monitoring"
    assert s.history[-1].decision is Decision.drop_not_confirmed and not s.armed
    for t in range(4, 10):  # a lasting drop: no new cycle while disarmed
        out = step(spec, s, t, Observations(estimate=reading(0.80, t)))
        s = out.status
        assert not of(out.actions, StartRun) and s.cycle_count == 1
    assert s.reason == "Disarmed"
    s = step(spec, s, 10, Observations(estimate=reading(0.91, 10))).status   # above 0.9, below 0.92
    assert not s.armed
    out = step(spec, s, 11, Observations(estimate=reading(0.93, 11)))
    assert out.status.armed and "Rearmed" in reasons(out.actions)
    out = step(spec, out.status, 12, Observations(estimate=reading(0.80, 12)))
    assert out.status.phase is Phase.assessing and out.status.cycle_count == 2
    assert of(out.actions, StartRun)[0].run_name == run_name(IDENT, 2)


# -- the decision at the end of a run ----------------------------------------------------------------


@pytest.mark.parametrize("change,decision", [
    ({"drop_confirmed": False}, Decision.drop_not_confirmed),
    ({"challenger_version": None, "challenger_accuracy": None}, Decision.no_challenger),
    ({"challenger_accuracy": 0.82}, Decision.challenger_not_better),
    ({"challenger_accuracy": 0.825}, Decision.challenger_not_better),   # gain 0.005 < minImprovement 0.01
    ({"promote": False, "promotion_reason": "worse on clean data"}, Decision.challenger_not_better),
])
def test_refusals_are_recorded_with_their_reason(change, decision):
    spec = make_spec(promotion={"minImprovement": 0.01})
    result = {**GOOD_RESULT, **change}
    s = _walk(spec, ASSESS)
    out = step(spec, s, 3, Observations(runs=(run_obs(_run(s), RunPhase.succeeded, 3, None, result),)))
    st = out.status
    assert st.phase is Phase.cooldown and st.current is None
    last = st.history[-1]
    assert last.decision is decision and last.labels_used == 180
    assert (last.offline_accuracy, last.offline_lower, last.offline_upper) == (0.82, 0.77, 0.87)
    assert not of(out.actions, PatchDeployment)
    record = of(out.actions, WriteRecord)[-1]
    assert record.object_key == record_key(last.run_name) and record.record["summary"]["decision"] == decision.value


@pytest.mark.parametrize("result,reason", [
    (None, "MissingRunResult"),
    ({"drop_confirmed": True}, "InvalidRunResult"),
    ({**GOOD_RESULT, "offline_accuracy": 1.7}, "InvalidRunResult"),
    ({**GOOD_RESULT, "challenger_accuracy": None}, "InvalidRunResult"),
    ({**GOOD_RESULT, "champion_version": None}, "UnknownChampion"),
])
def test_a_bad_run_result_fails_the_cycle_with_a_reason(result, reason):
    spec = make_spec()
    s = _walk(spec, [(1, lambda s: Observations(estimate=reading(0.8, 1, model_version=None)))])
    out = step(spec, s, 2, Observations(runs=(run_obs(_run(s), RunPhase.succeeded, 2, None, result),)))
    assert (out.status.phase, out.status.reason) == (Phase.failed, reason), out.status.message
    assert out.status.history[-1].decision is Decision.failed


def test_canary_rolls_back_when_the_canary_estimate_is_below_threshold():
    spec = make_spec()
    s = _walk(spec, CANARY_OK)
    small = step(spec, s, 6, Observations(canary_estimate=reading(0.5, 6, n=20)))
    assert small.status.stage is Stage.canary, "a canary estimate on too few predictions is not acted on"
    out = step(spec, s, 6, Observations(canary_estimate=reading(0.85, 6)))
    assert out.status.stage is Stage.rollback and "CanaryRollback" in reasons(out.actions)
    out = step(spec, out.status, 7)
    assert of(out.actions, PatchDeployment)[0].canary_version is None
    assert of(out.actions, PatchDeployment)[0].champion_version == "v1"
    out = step(spec, out.status, 8, Observations(deployment=DeploymentReading("v1", None, 0, at(8))))
    assert out.status.phase is Phase.cooldown and out.status.history[-1].decision is Decision.rolled_back


def test_canary_share_zero_promotes_directly():
    spec = make_spec(promotion={"canaryShare": 0})
    s = _walk(spec, SUCCEED)
    assert s.stage is Stage.promote
    out = step(spec, s, 5)
    assert of(out.actions, PatchDeployment) == [PatchDeployment("mnist", "default", "default", "v2", None, 0)]


def test_an_approval_for_another_cycle_is_ignored():
    spec = make_spec(promotion={"mode": "manual"})
    s = _walk(spec, SUCCEED)
    out = step(spec, s, 5, Observations(approval=Approval(cycle=7, approved=True, observed_at=at(5))))
    assert out.status.phase is Phase.awaiting_approval and not of(out.actions, PatchDeployment)


# -- failures, limits, records -----------------------------------------------------------------------


def test_repeated_failures_stop_retrying_until_the_spec_changes():
    spec = make_spec(maxConsecutiveFailures=2, cooldownSeconds=5)
    s, t = CycleStatus(), 0
    for _ in range(2):
        t += 10
        s = step(spec, s, t, Observations(estimate=reading(0.8, t))).status
        assert s.phase is Phase.assessing, "armed again after a failure: the drop was not dealt with"
        t += 1
        s = step(spec, s, t, Observations(runs=(run_obs(_run(s), RunPhase.failed, t, error="boom"),))).status
        assert s.phase is Phase.failed
    t += 10
    out = step(spec, s, t, Observations(estimate=reading(0.8, t)))
    assert (out.status.phase, out.status.reason) == (Phase.failed, "TooManyFailures")
    assert not of(out.actions, StartRun) and out.status.consecutive_failures == 2
    bumped = CycleIdentity(IDENT.name, IDENT.uid, IDENT.namespace, generation=2)
    out = step(spec, out.status, t + 1, Observations(estimate=reading(0.8, t + 1)), ident=bumped)
    assert out.status.phase is Phase.assessing and out.status.cycle_count == 3


def test_history_is_bounded_and_records_stay_queued_until_written():
    spec = make_spec(maxHistory=2, cooldownSeconds=0)
    world = World(estimate_at=lambda t: None, result=dict(GOOD_RESULT, drop_confirmed=False))
    s, t = CycleStatus(), 0
    for cycle in range(1, 4):
        t += 1
        s = step(spec, s, t, Observations(estimate=reading(0.95, t))).status   # re-arm
        t += 1
        s = step(spec, s, t, Observations(estimate=reading(0.80, t))).status
        t += 1
        s = step(spec, s, t, Observations(runs=(run_obs(_run(s), RunPhase.succeeded, t, None, world.result),))).status
        assert s.cycle_count == cycle
    assert [h.cycle for h in s.history] == [2, 3]
    assert len(s.outbox) == 2, "never acknowledged: the last maxHistory records stay queued"
    failed = step(spec, s, t + 1, Observations(outcomes=(ActionOutcome(f"record:{s.outbox[0].key}", False,
                                                                       at(t + 1), "store down"),)))
    assert len(failed.status.outbox) == 2 and "ActionFailed" in reasons(failed.actions)
    acked = step(spec, s, t + 1, Observations(outcomes=tuple(ActionOutcome(f"record:{p.key}", True, at(t + 1))
                                                              for p in s.outbox)))
    assert acked.status.outbox == [] and not of(acked.actions, WriteRecord)


def test_run_names_are_deterministic_and_distinct():
    assert run_name(IDENT, 3) == run_name(IDENT, 3) == "demo-c3-0f1e2d3c"
    other = CycleIdentity("demo", "99999999-0000", "default")
    assert run_name(other, 3) != run_name(IDENT, 3)
    assert len({run_name(IDENT, n) for n in range(1, 50)}) == 49
    with pytest.raises(ValueError, match="start at 1"):
        run_name(IDENT, 0)


def test_run_params_carry_the_spec_and_survive_a_spec_change_mid_cycle():
    spec = make_spec(labeling={"budget": 77, "sampler": "stratified"}, pipeline={"parameters": {"epochs": 3}})
    s = _walk(spec, ASSESS)
    params = s.current.params
    assert params["budget"] == 77 and params["sampler"] == "stratified" and params["epochs"] == 3
    assert params["labels_prefix"] == f"labels/{s.current.run_name}/" and params["threshold"] == 0.9
    changed = make_spec(labeling={"budget": 5})
    out = step(changed, s, 3, Observations(runs=(run_obs(_run(s), RunPhase.not_found, 3),)))
    assert of(out.actions, StartRun)[0].params == params, "a resubmission uses the cycle's own parameters"


# -- invalid specs --------------------------------------------------------------------------------


def test_an_invalid_spec_degrades_an_idle_cycle_and_recovers():
    raw = deep_merge(_raw_spec(make_spec()), {"pipeline": {"parameters": {"budget": 3}}})
    out = reconcile_resource(raw, None, Observations(), at(1), IDENT)
    assert (out.status.phase, out.status.reason) == (Phase.degraded, "InvalidSpec")
    assert "spec.pipeline.parameters" in out.status.message and "budget" in out.status.message
    assert reasons(out.actions) == ["InvalidSpec"]
    cond = {c.type: c for c in out.status.conditions}
    assert cond["SpecValid"].status == "False"
    again = reconcile_resource(raw, out.status.to_wire(), Observations(), at(2), IDENT)
    assert not again.actions, "the same problem is not announced twice"
    fixed = reconcile_resource(_raw_spec(make_spec()), again.status.to_wire(),
                               Observations(estimate=reading(0.97, 3)), at(3), IDENT)
    assert fixed.status.phase is Phase.monitoring
    assert {c.type: c.status for c in fixed.status.conditions}["SpecValid"] == "True"


def test_an_invalid_spec_does_not_abandon_a_cycle_in_flight():
    spec, s, _ = state("Improving")
    raw = deep_merge(_raw_spec(spec), {"trigger": {"threshold": 3}})
    out = reconcile_resource(raw, s.to_wire(), Observations(), at(10), IDENT)
    assert out.status.phase is Phase.improving and out.status.current == s.current
    resumed = reconcile_resource(_raw_spec(spec), out.status.to_wire(),
                                 Observations(runs=(run_obs(_run(s), RunPhase.succeeded, 11, None, GOOD_RESULT),)),
                                 at(11), IDENT)
    assert resumed.status.phase is Phase.promoting


# -- duplicates and stale observations ----------------------------------------------------------------


def test_the_same_breaching_reading_twice_counts_once():
    spec = make_spec(trigger={"consecutive": 2})
    obs = Observations(estimate=reading(0.8, 1))
    s1 = step(spec, CycleStatus(), 1, obs).status
    s2 = step(spec, s1, 2, obs).status
    assert s1.breach_count == s2.breach_count == 1 and s2.phase is Phase.monitoring


def test_an_older_reading_after_a_newer_one_is_ignored():
    spec = make_spec()
    s = step(spec, CycleStatus(), 5, Observations(estimate=reading(0.97, 5))).status
    out = step(spec, s, 6, Observations(estimate=reading(0.50, 3)))   # older window, arriving late
    assert out.status.phase is Phase.monitoring and out.status.estimate.accuracy == 0.97


def test_an_estimate_standing_still_on_unscored_inputs_degrades_naming_why():
    """The sidecar records the newest inputs unscored (e.g. a model server's self-agreement over
    other views): the window, and so the timestamp, stand still. The reason is in the status at
    once, the phase turns Degraded once the estimate is stale, and a fresh scored window clears it."""
    spec = make_spec()
    why = "a response's self-agreement is over views 'rotate:10', the assessor's reference over 'stretch:0'"
    s = step(spec, CycleStatus(), 5, Observations(estimate=reading(0.97, 5))).status
    for t in (60, 300, 606):  # the same window again and again, now with a reason
        s = step(spec, s, t, Observations(estimate=reading(0.97, 5, unscored_reason=why))).status
    assert s.estimate.observed_at == at(5) and "v1's newest inputs unscored" in s.estimate_error
    assert s.phase is Phase.degraded and why in s.message
    available = next(c for c in s.conditions if c.type == "EstimateAvailable")
    assert available.status == "False" and why in available.message
    s = step(spec, s, 620, Observations(estimate=reading(0.97, 610))).status  # scored again
    assert s.estimate_error is None and s.phase is Phase.monitoring


def test_a_stale_run_state_never_moves_a_cycle_back_or_twice():
    spec, s, _ = state("Improving")
    name = _run(s)
    done = step(spec, s, 10, Observations(runs=(run_obs(name, RunPhase.succeeded, 10, None, GOOD_RESULT),))).status
    assert done.phase is Phase.promoting
    late = step(spec, done, 11, Observations(runs=(run_obs(name, RunPhase.running, 9, "sample"),)))
    assert late.status.phase is Phase.promoting and not of(late.actions, StartRun)
    old = step(spec, s, 10, Observations(runs=(run_obs(name, RunPhase.running, 2, "sample"),)))
    assert old.status.stage is Stage.training, "a run state older than the last one seen is dropped"
    same_time = step(spec, s, 10, Observations(runs=(run_obs(name, RunPhase.failed, 3, error="x"),)))
    assert same_time.status.phase is Phase.improving, "not newer than the state already seen at t=3"
    replay = step(spec, s, 10, Observations(runs=(run_obs(name, RunPhase.failed, 4, error="x"),)))
    assert replay.status.phase is Phase.failed
    twice = step(spec, replay.status, 11, Observations(runs=(run_obs(name, RunPhase.failed, 4, error="x"),)))
    assert len(twice.status.history) == 1 and twice.status.consecutive_failures == 1


def test_a_finished_cycle_is_never_recorded_twice():
    spec, s, _ = state("Promoting/promote")
    obs = Observations(deployment=DeploymentReading("v2", None, 0, at(80)))
    s1 = step(spec, s, 80, obs).status
    s2 = step(spec, s1, 81, obs).status
    assert [h.cycle for h in s2.history] == [1] and s2.phase is Phase.cooldown


# -- restarts: crashes between persisting the status and executing the actions ---------------------


def _scenario(spec, world, crash_at=None, lose="actions", passes=40):
    """Reconcile passes against the world; at pass ``crash_at`` the process dies either after
    writing the status (its actions are lost) or before (its status is lost, actions ran)."""
    status, outcomes = CycleStatus(), ()
    for i in range(passes):
        t = 10 * (i + 1)
        obs = world.observe(status, t, outcomes)
        out = reconcile(spec, status, obs, at(t), IDENT)
        if i == crash_at and lose == "actions":
            status, outcomes = out.status, ()          # persisted, then killed: nothing executed
        elif i == crash_at and lose == "status":
            world.execute(out.actions, t)              # executed, then killed before persisting
            outcomes = ()
        else:
            status = out.status
            outcomes = world.execute(out.actions, t)
        world.advance()
    return status


def _drifted(t):
    return reading(0.97 if t < 30 else 0.80, t)


@pytest.mark.parametrize("lose", ["actions", "status"])
@pytest.mark.parametrize("crash_at", list(range(0, 16)))
def test_a_crash_at_any_pass_finishes_the_same_single_cycle(crash_at, lose):
    spec = make_spec(promotion={"canarySeconds": 20})
    world = World(estimate_at=_drifted)
    status = _scenario(spec, world, crash_at, lose)
    expected = run_name(IDENT, 1)
    assert set(world.runs) == {expected}, "exactly one run, under the cycle's name"
    assert [h.run_name for h in status.history] == [expected]
    assert status.history[0].decision is Decision.promoted
    assert status.cycle_count == 1 and world.deployment == ("v2", None, 0)
    assert world.records[record_key(expected)]["state"] == "finished"
    assert status.outbox == []


def test_the_crash_scenarios_cover_every_phase_the_cycle_passes_through():
    seen = set()
    spec = make_spec(promotion={"canarySeconds": 20})
    world = World(estimate_at=_drifted)
    status, outcomes = CycleStatus(), ()
    for i in range(16):
        t = 10 * (i + 1)
        out = reconcile(spec, status, world.observe(status, t, outcomes), at(t), IDENT)
        status, outcomes = out.status, world.execute(out.actions, t)
        seen.add((status.phase, status.stage))
        world.advance()
    assert {(Phase.monitoring, None), (Phase.assessing, Stage.submitted), (Phase.assessing, Stage.sampling),
            (Phase.improving, Stage.training), (Phase.promoting, Stage.canary), (Phase.promoting, Stage.promote),
            (Phase.cooldown, None)} <= seen


@pytest.mark.parametrize("seed", range(8))
def test_random_drops_duplicates_and_reordering_of_observations_keep_one_cycle(seed):
    """Property-style: observations are randomly dropped, delivered twice, or delivered late (an
    older one after a newer one); the cycle still ends once, promoted, with a single run."""
    rng = random.Random(seed)
    spec = make_spec(promotion={"canarySeconds": 20})
    world = World(estimate_at=_drifted)
    status, outcomes, previous = CycleStatus(), (), None
    for i in range(80):
        t = 10 * (i + 1)
        obs = world.observe(status, t, outcomes)
        roll = rng.random()
        if roll < 0.2:
            obs = Observations(outcomes=obs.outcomes)            # dropped
        elif roll < 0.35 and previous is not None:
            obs = previous                                       # a replay of older observations
        previous = obs
        out = reconcile(spec, status, obs, at(t), IDENT)
        status = out.status
        outcomes = world.execute(out.actions, t)
        world.advance()
        if status.history and status.phase is Phase.cooldown and not status.outbox:
            break
    assert set(world.runs) == {run_name(IDENT, 1)}
    assert [h.decision for h in status.history] == [Decision.promoted]
