"""Every wait of the operator is bounded: the pure reconcile function driven through simulated time
against ``fakes.world.World`` with faults switched on (a deployment that never takes a patch, a
pipeline service that does not answer, submissions that never become runs, runs that never end).

No I/O and no real time: each pass is ``reconcile(spec, status, observations, now)`` at a simulated
``now``, so "30 days" is a loop, and the bounds checked are the spec's own numbers.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

import pytest

from daic.operators.actions import CancelRun, EmitEvent, PatchDeployment, StartRun
from daic.operators.observations import Observations
from daic.operators.reconcile import reconcile
from daic.operators.spec import InvalidSpec, parse_spec
from daic.operators.status import CycleStatus, Decision, Phase, Stage
from fakes.world import BASE_SPEC, IDENT, World, at, deep_merge, make_spec, reading

HOUR, DAY = 3600, 86_400


def breaching(t):
    return reading(0.80, t)


def condition(status: CycleStatus, kind: str):
    return next((c for c in status.conditions if c.type == kind), None)


@dataclass
class Trace:
    status: CycleStatus
    actions: list = field(default_factory=list)          # (t, action)
    statuses: list = field(default_factory=list)         # (t, status)

    def count(self, cls) -> int:
        return sum(isinstance(a, cls) for _, a in self.actions)

    def events(self, reason: str) -> list:
        return [(t, a) for t, a in self.actions if isinstance(a, EmitEvent) and a.reason == reason]


def play(spec, world: World, times, status: CycleStatus | None = None, trace: Trace | None = None) -> Trace:
    """One reconcile pass at each simulated time in ``times`` (seconds from T0), the world
    executing the actions and moving on between passes."""
    trace = trace or Trace(status or CycleStatus())
    outcomes: tuple = ()
    for t in times:
        out = reconcile(spec, trace.status, world.observe(trace.status, t, outcomes), at(t), IDENT)
        trace.status = out.status
        trace.actions += [(t, a) for a in out.actions]
        trace.statuses.append((t, out.status))
        outcomes = world.execute(out.actions, t)
        world.advance()
    return trace


def every(step: float, until: float, start: float = 1):
    t = start
    while t <= until:
        yield t
        t += step


# -- promotion.timeoutSeconds ---------------------------------------------------------------------


def test_a_deployment_that_never_takes_the_patch_over_30_simulated_days():
    """The deployment ignores every patch (admission webhook down, say). Each promotion ends at
    promotion.timeoutSeconds with PromotionTimedOut, new cycles do start, the patches are bounded,
    and after maxConsecutiveFailures the resource stops in Failed instead of patching for ever."""
    spec = make_spec()  # promotion.timeoutSeconds: the default, 3600 s
    assert spec.promotion.timeout_seconds == 3600
    world = World(estimate_at=breaching, patches_taken=0)
    step = 300
    trace = play(spec, world, every(step, 30 * DAY))
    longest = timedelta(0)
    for _t, st in trace.statuses:
        if st.phase is Phase.promoting:
            longest = max(longest, at(_t) - st.current.promotion_requested_at)
    assert longest <= timedelta(seconds=3600 + step)
    failed = [h for h in trace.status.history if h.decision is Decision.failed]
    assert len(failed) == spec.max_consecutive_failures >= 2  # new cycles started after the first timeout
    assert all("promotion.timeoutSeconds" in h.message for h in failed)
    assert len(trace.events("PromotionTimedOut")) == 3
    assert trace.status.phase is Phase.failed and trace.status.reason == "TooManyFailures"
    assert trace.count(PatchDeployment) <= 3 * (3600 // step + 2)
    assert condition(trace.status, "Ready").status == "False"


def test_a_promotion_that_times_out_restores_the_champion_with_backoff_then_gives_up():
    """The canary is applied, then the deployment freezes: the cycle fails at the promotion
    deadline, the champion-only split is asked for with backoff, at most pipeline.maxAttempts
    times, and then the Degraded condition says the rollback was given up."""
    spec = make_spec(maxConsecutiveFailures=1)  # one cycle: no later promotion takes over
    world = World(estimate_at=breaching, patches_taken=1)  # the canary patch lands, nothing after it
    trace = play(spec, world, every(30, 2 * DAY))
    (cycle, *_) = trace.status.history
    assert cycle.decision is Decision.failed and "did not serve v2 alone" in cycle.message
    rollbacks = [(t, a) for t, a in trace.actions
                 if isinstance(a, PatchDeployment) and (a.champion_version, a.canary_version) == ("v1", None)]
    assert 1 <= len(rollbacks) <= spec.pipeline.max_attempts
    gaps = [b[0] - a[0] for a, b in zip(rollbacks, rollbacks[1:])]
    assert gaps == sorted(gaps) and gaps[-1] >= spec.pipeline.retry_backoff_seconds  # backing off
    assert trace.events("RollbackGaveUp")
    degraded = [st for _, st in trace.statuses if condition(st, "Degraded").reason == "RollbackGaveUp"]
    assert degraded and condition(degraded[0], "Degraded").status == "True"


def test_a_rollback_that_never_lands_fails_the_cycle_at_the_deadline():
    """A canary whose own estimate is below the threshold is rolled back; when the deployment
    does not take the rollback either, the cycle fails with RollbackTimedOut at the deadline."""
    spec = make_spec(estimate={"canaryUrl": "http://canary.test/estimate"})
    world = World(estimate_at=breaching, patches_taken=1)

    trace = Trace(CycleStatus())
    outcomes: tuple = ()
    for t in every(30, 3 * HOUR):
        obs = world.observe(trace.status, t, outcomes)
        obs = Observations(estimate=obs.estimate, canary_estimate=reading(0.5, t), runs=obs.runs,
                           deployment=obs.deployment, outcomes=obs.outcomes)
        out = reconcile(spec, trace.status, obs, at(t), IDENT)
        trace.status = out.status
        trace.actions += [(t, a) for a in out.actions]
        trace.statuses.append((t, out.status))
        outcomes = world.execute(out.actions, t)
        world.advance()
    assert any(st.stage is Stage.rollback for _, st in trace.statuses)
    (cycle, *_) = trace.status.history
    assert cycle.decision is Decision.failed and trace.events("RollbackTimedOut")


def test_promotion_timeout_must_exceed_the_canary():
    with pytest.raises(InvalidSpec, match=r"spec.promotion: promotion.timeoutSeconds \(600\) must exceed "
                                          r"promotion.canarySeconds \(600\)"):
        parse_spec(deep_merge(BASE_SPEC, {"promotion": {"canarySeconds": 600, "timeoutSeconds": 600}}))


# -- runs: RunTimedOut, cancels and submissions with backoff and a limit ---------------------------


def test_a_run_that_never_finishes_times_out_is_cancelled_and_the_cycle_fails():
    spec = make_spec(maxConsecutiveFailures=1)  # pipeline.timeoutSeconds 3600
    world = World(estimate_at=breaching, runs_stall=True)
    trace = play(spec, world, every(60, 2 * HOUR))
    (cycle, *_) = trace.status.history
    assert cycle.decision is Decision.failed and "did not finish within 3600 s" in cycle.message
    assert trace.events("RunTimedOut")
    (name,) = world.runs
    assert world.runs[name]["phase"].value == "CANCELED" and world.cancels == [name]
    assert trace.status.pending_cancel == [] and trace.status.retries == []


def test_cancels_while_the_pipeline_service_is_down_are_bounded_over_5000_simulated_hours():
    """The run's state cannot be read and cancels fail: they are asked with backoff, at most
    pipeline.maxAttempts times (was: every pass, for ever), then a condition says so; and the
    service being down shows as Degraded within pipeline.unreachableAfterSeconds."""
    spec = make_spec()
    world = World(estimate_at=breaching, runs_stall=True)
    trace = play(spec, world, every(30, 600))
    assert trace.status.phase is Phase.improving
    world.pipeline_down = True
    down_at = 630
    trace = play(spec, world, every(30, 2 * HOUR, start=down_at), trace=trace)
    flagged = next(t for t, st in trace.statuses
                   if condition(st, "Degraded") and condition(st, "Degraded").reason == "PipelineUnreachable")
    assert flagged - down_at <= spec.pipeline.unreachable_after_seconds + 30
    assert condition(dict(trace.statuses)[flagged], "Ready").status == "False"
    assert trace.events("PipelineUnreachable")[0][0] == flagged
    trace = play(spec, world, every(HOUR, 5000 * HOUR, start=3 * HOUR), trace=trace)
    # Each cycle (maxConsecutiveFailures of them) times out and asks for its cancel at most
    # maxAttempts times; then the condition says so and the resource stops in Failed.
    cycles = len(trace.status.history)
    assert cycles == spec.max_consecutive_failures
    assert all("did not finish within 3600 s" in h.message for h in trace.status.history)
    assert spec.pipeline.max_attempts <= trace.count(CancelRun) <= cycles * spec.pipeline.max_attempts
    assert 1 <= len(trace.events("CancelGaveUp")) <= cycles
    assert len(trace.events("PipelineUnreachable")) <= cycles  # once per outage a cycle runs into
    assert condition(trace.status, "Degraded").status == "True"
    assert trace.status.reason == "TooManyFailures"
    assert trace.status.pending_cancel == [] and trace.status.retries == []


def test_the_degraded_condition_clears_when_the_pipeline_service_answers_again():
    spec = make_spec()
    world = World(estimate_at=breaching, runs_stall=True)
    trace = play(spec, world, every(30, 300))
    world.pipeline_down = True
    trace = play(spec, world, every(30, 1200, start=330), trace=trace)
    assert condition(trace.status, "Degraded").status == "True"
    world.pipeline_down = False
    trace = play(spec, world, [1230], trace=trace)
    assert condition(trace.status, "Degraded").status == "False"
    assert trace.status.pipeline_unreachable_since is None


def test_a_submission_that_never_becomes_a_run_is_retried_with_backoff_then_fails_the_cycle():
    """KFP accepts the submission but the run never appears (was: StartRun every pass, no limit)."""
    spec = make_spec()
    world = World(estimate_at=breaching, submits_lost=True)
    trace = play(spec, world, every(30, 2 * HOUR))
    starts = [t for t, a in trace.actions if isinstance(a, StartRun)]
    first_cycle = starts[:spec.pipeline.max_attempts]
    gaps = [b - a for a, b in zip(first_cycle, first_cycle[1:])]
    assert gaps[0] <= 30 and gaps[1:] == sorted(gaps[1:]) and gaps[-1] >= 4 * spec.pipeline.retry_backoff_seconds
    cycle = trace.status.history[0]
    assert cycle.decision is Decision.failed and "did not appear after 6 submissions" in cycle.message
    assert trace.events("RunNotStarted")
    trace = play(spec, world, every(HOUR, 30 * DAY, start=3 * HOUR), trace=trace)
    assert trace.count(StartRun) <= spec.max_consecutive_failures * spec.pipeline.max_attempts
    assert trace.status.reason == "TooManyFailures"


def test_a_cycle_started_while_the_service_is_down_is_flagged_in_minutes_and_bounded_by_the_run_timeout():
    """The submission fails and the run cannot be looked up: whether it exists is unknown, so it is
    not submitted again blindly; Degraded says why within minutes, the run timeout ends the cycle."""
    spec = make_spec(maxConsecutiveFailures=1)
    world = World(estimate_at=breaching, pipeline_down=True)
    trace = play(spec, world, every(30, 2 * HOUR))
    started = trace.status.history[0].started_at
    flagged = next(t for t, st in trace.statuses if condition(st, "Degraded").reason == "PipelineUnreachable")
    assert at(flagged) - started <= timedelta(seconds=spec.pipeline.unreachable_after_seconds + 60)
    assert "ConnectionError: refused" in condition(dict(trace.statuses)[flagged], "Degraded").message
    cycle = trace.status.history[0]
    assert cycle.decision is Decision.failed and "did not finish within 3600 s" in cycle.message
    assert trace.count(StartRun) == 1


def test_backoff_and_limits_come_from_the_spec():
    spec = make_spec(pipeline={"maxAttempts": 3, "retryBackoffSeconds": 100, "maxRetryBackoffSeconds": 150})
    world = World(estimate_at=breaching, submits_lost=True)
    trace = play(spec, world, every(10, 3000))
    starts = [t for t, a in trace.actions if isinstance(a, StartRun)]
    assert len(starts) >= 3
    first = starts[:3]
    assert first[1] - first[0] == 10 and first[2] - first[1] == 100
    assert "did not appear after 3 submissions" in trace.status.history[0].message
