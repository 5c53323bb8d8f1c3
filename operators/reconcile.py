"""The operator's decisions as one pure function: ``(spec, status, observations, now) -> (status, actions)``.

Phases (status.Phase):

    Monitoring ──trigger──► Assessing (submitted, sampling, labeling, estimating)
                              └─► Improving (training, evaluating)
                                    └─ run succeeded ─► drop not confirmed / no better challenger ─► Cooldown
                                                     ─► AwaitingApproval (manual) ─► Promoting / Cooldown
                                                     ─► Promoting (auto): canary ─► promote | rollback ─► Cooldown
    Cooldown ──cooldownSeconds──► Monitoring
    any run failure / timeout ─► Failed ──cooldown──► Monitoring (until maxConsecutiveFailures)
    Monitoring ◄──► Degraded (estimate unavailable or stale, no reference accuracy, invalid spec)

The second remedy (issue 21; docs/operator.md, "The filter remedy"): while the run goes on, the
fit-filter step's record (``cycles/<run>/filter.json``) is read and `decide_remedy` decides on it;
a filter that beats the champion on the labeled sample goes in like a challenger (canary of the
same champion behind the filter, then the whole predictor; a canary below the threshold rolls
back), with no approval (it changes no model and comes out with one patch). The challenger is then
held to the wrapped champion; promoting it takes the filter out (the filter was adapted to the
replaced champion's outputs); so does traffic that is clean again (``trigger.consecutive`` clean
readings: no drift or change alarm, estimate above the threshold) while no cycle is in flight.

Every wait is bounded (docs/operator.md, "Timeouts"): a run by ``pipeline.timeoutSeconds``
(RunTimedOut, the run cancelled), a promotion by ``promotion.timeoutSeconds`` (PromotionTimedOut:
the champion-only split is restored and the cycle fails), an approval by
``promotion.approvalTimeoutSeconds``. Actions whose effect the operator waits to see (StartRun,
CancelRun, the rollback patch) are asked again with exponential backoff (``pipeline.
retryBackoffSeconds`` doubling to ``pipeline.maxRetryBackoffSeconds``) at most
``pipeline.maxAttempts`` times (``status.retries``); then the cycle fails (RunNotStarted) or the
``Degraded`` condition says what was given up. A pipeline service that does not answer for
``pipeline.unreachableAfterSeconds`` while a cycle needs it sets ``Degraded=True``
(PipelineUnreachable) at once, long before the run timeout.

Why pure: a Kubernetes operator is restarted, rescheduled and fed duplicate or late watch events.
Keeping every decision in a function of its inputs makes each of those cases a table row in a test,
and keeping all state in ``status`` lets a fresh process resume any phase. Every action is keyed
and idempotent; the run name is derived from the resource uid and the cycle number, so resuming
never starts a second run for the same cycle. The driver persists the status *before* executing
the actions: if it dies in between, the next pass sees the run missing (or the deployment not yet
patched, or the record still in ``status.outbox``) and asks again.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from daic.operators import trigger as trigger_policy
from daic.operators.actions import Action, CancelRun, EmitEvent, PatchDeployment, StartRun, WriteRecord
from daic.operators.observations import (
    Approval,
    EstimateError,
    EstimateReading,
    FilterRecord,
    Observations,
    RunPhase,
    RunState,
)
from daic.operators.spec import CycleSpec, InvalidSpec, PromotionMode, describe_errors, parse_spec
from daic.operators.status import (
    IMPROVING_STAGES,
    IN_FLIGHT,
    Condition,
    CurrentCycle,
    CycleStatus,
    CycleSummary,
    Decision,
    DeploymentStatus,
    EstimateStatus,
    FilterRollout,
    PendingRecord,
    RemedyStatus,
    Phase,
    RetryState,
    RollbackRequest,
    RunResult,
    ServedFilter,
    Stage,
    utc,
)

RECORD_KIND = "AssessmentCycleRecord"
# Reasons of the Degraded condition that stay until a new cycle starts or the spec changes.
GAVE_UP = frozenset({"CancelGaveUp", "RollbackGaveUp"})
_MAX_PASSES = 6  # chained transitions in one reconcile (e.g. Cooldown over -> Monitoring -> trigger)


@dataclass(frozen=True)
class CycleIdentity:
    """Who the cycle is: run names and record keys derive from it."""

    name: str
    uid: str
    namespace: str | None = None
    generation: int = 1


@dataclass(frozen=True)
class Reconciled:
    status: CycleStatus
    actions: tuple[Action, ...]


def run_name(ident: CycleIdentity, cycle: int) -> str:
    """Deterministic run name for cycle ``cycle`` of this resource: the same after any restart,
    different for a re-created resource of the same name (the uid differs)."""
    if cycle < 1:
        raise ValueError(f"cycle numbers start at 1, got {cycle}")
    uid = re.sub(r"[^a-z0-9]", "", ident.uid.lower())[:8]
    if not uid:
        raise ValueError(f"resource uid {ident.uid!r} has no letters or digits")
    return f"{ident.name[:40]}-c{cycle}-{uid}"


def record_key(name: str) -> str:
    return f"cycles/{name}/record.json"


def sampling_window(window_hours: float, previous_start: datetime | None,
                    now: datetime) -> tuple[datetime, datetime]:
    """The logged inputs a cycle starting ``now`` samples: since the previous cycle started (its
    window ended there), at most ``window_hours`` back; ``[since, until)``."""
    since = now - timedelta(hours=window_hours)
    if previous_start is not None and since < previous_start < now:
        since = previous_start
    return since, now


def pipeline_params(spec: CycleSpec, ident: CycleIdentity, name: str, threshold: float | None,
                    reading: EstimateReading,
                    window: tuple[datetime, datetime] | None = None) -> dict[str, Any]:
    """The parameters every run gets (names reserved in spec.RESERVED_PARAMETERS), then the spec's own.

    ``window`` (see `sampling_window`) becomes ``since``/``until`` (ISO-8601); a spec's own
    ``pipeline.parameters.since`` / ``until`` still win."""
    params: dict[str, Any] = {
        "cycle_id": name,
        "run_name": name,
        "deployment": spec.deployment.name,
        "namespace": spec.deployment.namespace or ident.namespace or "",
        "model_name": spec.deployment.model_name,
        "champion_version": reading.model_version or "",
        "threshold": threshold if threshold is not None else 0.0,
        "trigger_estimate": reading.accuracy,
        "budget": spec.labeling.budget,
        "sampler": spec.labeling.sampler.value,
        "target_half_width": spec.labeling.target_half_width,
        "labeling_backend": spec.labeling.backend.value,
        "labeling_timeout_s": spec.labeling.timeout_seconds,
        "ray_workers": spec.resources.ray_workers,
        "cpus_per_worker": spec.resources.cpus_per_worker,
        "gpus_per_worker": spec.resources.gpus_per_worker,
        "memory_per_worker": spec.resources.memory_per_worker or "",
        "train_batch_size": spec.training.batch_size,
        "train_precision": spec.training.precision.value,
        "ray_cluster": spec.training.ray_cluster,
        "train_node_selector": dict(spec.training.node_selector),
        "train_tolerations": [t.model_dump(exclude_none=True) for t in spec.training.tolerations],
        "labels_prefix": f"labels/{name}/",
        "record_prefix": f"cycles/{name}/",
        "predictor": spec.deployment.predictor,
        "promote_by": "operator",  # the operator promotes (canary, approval); the pipeline must not
        "remedy": spec.remedy.value,  # which remedy steps run (fit-filter, train); the operator decides
    }
    if window is not None:
        params["since"], params["until"] = (t.isoformat() for t in window)
    params.update(spec.pipeline.parameters)
    return params


@dataclass(frozen=True)
class RemedyDecision:
    """What the cycle does about a drop (issue 21): ``filter`` is ``deploy`` (put the input filter in
    front of the champion), ``keep``, ``remove`` or ``none``; ``retrain`` whether a challenger is
    trained; ``compare_to`` what the challenger must beat (the champion, or the champion behind the
    filter once the filter serves)."""

    filter: str
    retrain: bool
    compare_to: str
    reason: str


def decide_remedy(remedy: str, *, drop_confirmed: bool, traffic_clean: bool, filter_in_service: bool,
                  champion_accuracy: float | None, filter_accuracy: float | None,
                  min_improvement: float = 0.0) -> RemedyDecision:
    """The remedy rows (pure; tests/test_filter_remedy.py is the table). ``champion_accuracy`` and
    ``filter_accuracy`` are the labeled sample's offline estimates of the champion alone and behind
    the filter; the filter goes in by the challenger's rule (gain > 0 and >= ``min_improvement``).

    1. traffic clean again: remove a filter in service, train nothing;
    2. drop not confirmed: keep what serves, train nothing;
    3. ``retrain``: no filter (one left from an earlier spec is removed), train a challenger;
    4. ``filter`` / ``both``: the filter goes in when it beats the champion, else none (a serving one is
       removed); ``both`` also trains, and the challenger is then compared with the wrapped champion.
    """
    remedy = getattr(remedy, "value", remedy)
    if remedy not in ("retrain", "filter", "both"):
        raise ValueError(f"remedy must be retrain, filter or both, got {remedy!r}")
    if traffic_clean:
        if filter_in_service:
            return RemedyDecision("remove", False, "champion", "traffic is clean again: the filter is removed")
        return RemedyDecision("none", False, "champion", "traffic is clean: nothing to remedy")
    if not drop_confirmed:
        return RemedyDecision("keep" if filter_in_service else "none", False, "champion",
                              "the labeled sample does not confirm the drop")
    if remedy == "retrain":
        return RemedyDecision("remove" if filter_in_service else "none", True, "champion",
                              "remedy retrain: a challenger is trained, no filter")
    beats = (champion_accuracy is not None and filter_accuracy is not None
             and filter_accuracy - champion_accuracy > 0 and filter_accuracy - champion_accuracy >= min_improvement)
    if beats:
        gain = filter_accuracy - champion_accuracy
        why = (f"champion+filter {filter_accuracy:.4f} beats champion {champion_accuracy:.4f} (gain {gain:+.4f}) "
               "on the labeled sample")
        if remedy == "filter":
            return RemedyDecision("deploy", False, "champion", f"remedy filter: {why}")
        return RemedyDecision("deploy", True, "wrapped-champion", f"remedy both: {why}; a challenger is trained "
                                                                  "and must beat the wrapped champion")
    if filter_accuracy is None or champion_accuracy is None:
        why = "no offline estimate of the champion behind the filter"
    else:
        why = (f"champion+filter {filter_accuracy:.4f} does not beat champion {champion_accuracy:.4f} by "
               f"> 0 and >= {min_improvement:.4f}")
    return RemedyDecision("remove" if filter_in_service else "none", remedy == "both", "champion",
                          f"remedy {remedy}: {why}" + ("; a challenger is trained" if remedy == "both" else ""))


#: what serves after a cycle with a challenger (issue 21, ``choose_serving``)
SERVE_CHOICES = ("challenger", "challenger+filter", "champion+filter", "champion")


@dataclass(frozen=True)
class ServingChoice:
    """Which combination serves after the evaluation: ``serve`` one of :data:`SERVE_CHOICES`;
    ``accuracy`` the chosen challenger variant's held-out estimate (None when no challenger was
    judged); ``reference`` what it had to beat; ``variant`` the challenger variant that was judged
    (:func:`choose_challenger_variant`), whether or not it serves."""

    serve: str
    accuracy: float | None
    reference: float | None
    reason: str
    variant: str = "challenger"

    @property
    def promotes(self) -> bool:
        return self.serve in ("challenger", "challenger+filter")

    @property
    def filtered(self) -> bool:
        return self.serve.endswith("+filter")


def choose_challenger_variant(challenger: float | None, challenger_filtered: float | None, *,
                              alone_keeps_clean: bool = True, filtered_keeps_clean: bool = True
                              ) -> tuple[str, float | None, str]:
    """(variant, its accuracy, why) of the challenger, alone or behind the cycle's filter, by their
    estimates on the same labeled held-out draws (pure). The filter stays only where it helps the
    new model: behind it must be strictly better (a tie serves the simpler graph, no filter).

    A variant that loses more clean accuracy than the promotion rule tolerates (``*_keeps_clean``
    False, from evaluate's clean check) is not a candidate while the other one keeps clean: the
    better drifted figure of a variant that cannot be promoted would otherwise block the one that
    can (the filter's gate costs clean accuracy the challenger alone does not)."""
    if challenger is None:
        return "challenger", None, "no challenger estimate"
    if challenger_filtered is None:
        return "challenger", challenger, f"challenger {challenger:.4f} (no filter to put in front of it)"
    if alone_keeps_clean and not filtered_keeps_clean:
        return ("challenger", challenger,
                f"challenger alone {challenger:.4f}: challenger+filter ({challenger_filtered:.4f}) loses more clean "
                "accuracy than the rule tolerates")
    if filtered_keeps_clean and not alone_keeps_clean:
        return ("challenger+filter", challenger_filtered,
                f"challenger+filter {challenger_filtered:.4f}: the challenger alone ({challenger:.4f}) loses more "
                "clean accuracy than the rule tolerates")
    if challenger_filtered > challenger:
        return ("challenger+filter", challenger_filtered,
                f"challenger+filter {challenger_filtered:.4f} > challenger alone {challenger:.4f} on the held-out draws")
    return ("challenger", challenger,
            f"challenger alone {challenger:.4f} >= challenger+filter {challenger_filtered:.4f} on the held-out draws: "
            "the filter does not help the new model")


def choose_serving(*, champion: float | None, wrapped_champion: float | None, challenger: float | None,
                   challenger_filtered: float | None, filter_in_service: bool,
                   min_improvement: float = 0.0, alone_keeps_clean: bool = True,
                   filtered_keeps_clean: bool = True) -> ServingChoice:
    """The evaluation's choice among the challenger alone, the challenger behind the filter, the
    champion behind the filter (and the champion alone, when no filter serves) on the cycle's
    labeled held-out draws (pure; tests/test_operator_serving_choice.py is the table).

    1. the better challenger variant (:func:`choose_challenger_variant`; one that fails the clean
       check is passed over while the other keeps clean);
    2. it is promoted when it beats what serves now -- the wrapped champion while the filter
       serves (its held-out estimate), else the champion -- by the challenger's rule (gain > 0 and
       >= ``min_improvement``);
    3. otherwise what serves stays: the champion behind the filter, or the champion alone.
    """
    keep = "champion+filter" if filter_in_service else "champion"
    reference = wrapped_champion if filter_in_service and wrapped_champion is not None else champion
    against = "champion+filter" if filter_in_service and wrapped_champion is not None else "champion"
    variant, acc, why = choose_challenger_variant(challenger, challenger_filtered, alone_keeps_clean=alone_keeps_clean,
                                                  filtered_keeps_clean=filtered_keeps_clean)
    if acc is None:
        return ServingChoice(keep, None, reference, f"no challenger was judged: {keep} keeps serving", variant)
    if reference is None:
        return ServingChoice(keep, acc, None, f"{why}; no estimate of what serves ({against}): {keep} keeps serving",
                             variant)
    gain = acc - reference
    if gain > 0 and gain >= min_improvement:
        return ServingChoice(variant, acc, reference,
                             f"{why}; {variant} {acc:.4f} beats {against} {reference:.4f} (gain {gain:+.4f})", variant)
    return ServingChoice(keep, acc, reference,
                         f"{why}; {variant} {acc:.4f} does not beat {against} {reference:.4f} by > 0 and "
                         f">= {min_improvement:.4f}: {keep} keeps serving", variant)


def reconcile(spec: CycleSpec, status: CycleStatus, obs: Observations, now: datetime,
              ident: CycleIdentity) -> Reconciled:
    """One reconcile pass. Does not mutate its arguments."""
    work = _Pass(spec, status.model_copy(deep=True), ident, utc(now))
    work.ingest(obs)
    work.advance()
    work.finish()
    return Reconciled(work.status, tuple(work.actions))


def reconcile_resource(raw_spec: Any, raw_status: Any, obs: Observations, now: datetime,
                       ident: CycleIdentity) -> Reconciled:
    """``reconcile`` on the resource as stored: validates the spec first.

    An invalid spec stops new cycles (Degraded, reason InvalidSpec, condition SpecValid=False) but
    does not abandon a cycle in flight: its phase is kept and it resumes once the spec is fixed.
    """
    status = CycleStatus.from_wire(raw_status)
    now = utc(now)
    try:
        spec = parse_spec(raw_spec)
    except InvalidSpec as exc:
        status = status.model_copy(deep=True)
        actions: list[Action] = []
        message = f"invalid spec: {exc}"
        changed = status.reason != "InvalidSpec" or status.message != message
        if status.phase not in IN_FLIGHT:
            if status.phase is not Phase.degraded:
                status.phase_since = now
            status.phase, status.stage = Phase.degraded, None
        status.reason, status.message = "InvalidSpec", message
        if changed:
            actions.append(EmitEvent("Warning", "InvalidSpec", message))
        _set_condition(status, "SpecValid", False, "InvalidSpec", message, now)
        _set_condition(status, "Ready", False, "InvalidSpec", message, now)
        status.observed_generation = ident.generation
        return Reconciled(status, tuple(actions))
    return reconcile(spec, status, obs, now, ident)


class _Pass:
    """The working state of one reconcile call (private; the function above is the interface)."""

    def __init__(self, spec: CycleSpec, status: CycleStatus, ident: CycleIdentity, now: datetime):
        self.spec, self.status, self.ident, self.now = spec, status, ident, now
        self.actions: list[Action] = []
        self.fresh: EstimateReading | None = None     # an estimate newer than any seen before
        self.check: trigger_policy.TriggerCheck | None = None  # the trigger's verdict on it
        self.run: RunState | None = None              # a new state of the current run
        self.approval: Approval | None = None
        self.canary: EstimateReading | None = None    # the canary's own estimate, read during the canary
        self.filter_canary: EstimateReading | None = None  # the same, during a filter's canary
        self.filter_busy: bool | None = None               # this pass's verdict of _filter_step
        self.failures: list[str] = []
        self.pipeline_error: str | None = None
        self.cycle_started = False
        self.generation_changed = (status.observed_generation is not None
                                   and ident.generation != status.observed_generation)
        if status.phase_since is None:
            status.phase_since = now

    # -- observations -------------------------------------------------------------------------

    def ingest(self, obs: Observations) -> None:
        st = self.status
        for outcome in obs.outcomes:
            if outcome.ok and outcome.key.startswith("record:"):
                done = outcome.key.removeprefix("record:")
                st.outbox = [p for p in st.outbox if p.key != done]
            elif not outcome.ok:
                self.failures.append(f"{outcome.key}: {outcome.error}")
                retry = self._retry(outcome.key)
                if retry is not None:
                    retry.last_error = outcome.error

        if isinstance(obs.estimate, EstimateError):
            st.estimate_error = obs.estimate.error
        elif isinstance(obs.estimate, EstimateReading):
            reading = obs.estimate
            last = st.estimate
            if last is None or utc(reading.observed_at) > last.observed_at:
                st.estimate = EstimateStatus(
                    accuracy=reading.accuracy, lower=reading.lower, upper=reading.upper, n=reading.n,
                    drift_alarm=reading.drift_alarm, trusted=reading.trusted,
                    model_version=reading.model_version, reference_accuracy=reading.reference_accuracy,
                    observed_at=utc(reading.observed_at), received_at=self.now)
                st.estimate_error = None
                self.fresh = reading
                self.check = trigger_policy.check(self.spec.trigger, reading)
                if self.check.threshold is not None:
                    st.effective_threshold = self.check.threshold
                if self.check.recovered and not st.armed:
                    st.armed = True
                    self._event("Normal", "Rearmed", f"{self.check.message}; the trigger is armed again")
            if reading.unscored_reason:
                # The sidecar records the newest inputs unscored, so its estimate stands still (the
                # same window, the same timestamp): say why, where a stale estimate's message looks.
                st.estimate_error = (f"the sidecar records {reading.model_version or 'the serving version'}'s "
                                     f"newest inputs unscored: {reading.unscored_reason}")

        for run_obs in sorted(obs.runs, key=lambda r: utc(r.observed_at)):
            state, seen = run_obs.state, utc(run_obs.observed_at)
            if state.phase is RunPhase.unknown:
                if st.pipeline_unreachable_since is None:
                    st.pipeline_unreachable_since = seen
                if state.error:
                    self.pipeline_error = state.error
            else:
                st.pipeline_unreachable_since = None
                if state.phase is not RunPhase.not_found:
                    self._forget_retry(StartRun(state.run_name, {}).key)
            if state.run_name in st.pending_cancel and (state.phase.terminal or state.phase is RunPhase.not_found):
                st.pending_cancel = [n for n in st.pending_cancel if n != state.run_name]
            cur = st.current
            if cur is None or state.run_name != cur.run_name or state.phase is RunPhase.unknown:
                continue
            if cur.run_observed_at is not None and seen <= cur.run_observed_at:
                continue  # a duplicate, or older than what we already know
            cur.run_observed_at, cur.run_state, cur.run_error = seen, state.phase.value, state.error
            if state.phase is RunPhase.succeeded and state.result is not None:
                cur.result = dict(state.result)
            self.run = state

        dep = obs.deployment
        if dep is not None and (st.deployment is None or utc(dep.observed_at) > st.deployment.observed_at):
            st.deployment = DeploymentStatus(champion_version=dep.champion_version,
                                             canary_version=dep.canary_version,
                                             canary_share=dep.canary_share, observed_at=utc(dep.observed_at),
                                             filter_version=dep.filter_version,
                                             canary_filter_version=dep.canary_filter_version)

        canary = obs.canary_estimate
        cur = st.current
        if (isinstance(canary, EstimateReading) and cur is not None and cur.canary_started_at is not None
                and utc(canary.observed_at) >= cur.canary_started_at):
            cur.canary_estimate, cur.canary_n = canary.accuracy, canary.n
            self.canary = canary
        rem = cur.remedy if cur is not None else None
        if (isinstance(canary, EstimateReading) and rem is not None and rem.rollout is FilterRollout.canary
                and rem.canary_started_at is not None and utc(canary.observed_at) >= rem.canary_started_at):
            rem.canary_estimate, rem.canary_n = canary.accuracy, canary.n
            self.filter_canary = canary

        record = obs.filter_record
        if (isinstance(record, FilterRecord) and cur is not None and record.run_name == cur.run_name
                and cur.remedy is None):
            self._take_remedy(record.record, from_result=False)

        if obs.approval is not None and st.current is not None and obs.approval.cycle == st.current.cycle:
            self.approval = obs.approval

    # -- the state machine ----------------------------------------------------------------------

    def advance(self) -> None:
        handlers = {
            Phase.monitoring: self._monitoring,
            Phase.degraded: self._degraded,
            Phase.assessing: self._running,
            Phase.improving: self._running,
            Phase.awaiting_approval: self._awaiting_approval,
            Phase.promoting: self._promoting,
            Phase.cooldown: self._cooldown,
            Phase.failed: self._failed,
        }
        self._filter_when_clean()
        for _ in range(_MAX_PASSES):
            before = (self.status.phase, self.status.stage)
            again = handlers[self.status.phase]()
            if not again or (self.status.phase, self.status.stage) == before:
                break
        for pending in self.status.outbox:
            self.actions.append(WriteRecord(pending.key, pending.record))
        self._cancels()
        self._rollback()

    # -- actions asked again until seen done: backoff and a limit ----------------------------------

    def _retry(self, key: str) -> RetryState | None:
        return next((r for r in self.status.retries if r.key == key), None)

    def _forget_retry(self, key: str) -> None:
        self.status.retries = [r for r in self.status.retries if r.key != key]

    def _ask(self, key: str) -> str:
        """Whether to ask for the action ``key`` now: "now", "wait" (backing off) or "exhausted"
        (``pipeline.maxAttempts`` asked and the last one's backoff over without effect)."""
        p = self.spec.pipeline
        retry = self._retry(key)
        if retry is not None and self.now < retry.next_at:
            return "wait"
        if retry is not None and retry.attempts >= p.max_attempts:
            return "exhausted"
        if retry is None:
            retry = RetryState(key=key, attempts=0, next_at=self.now)
            self.status.retries.append(retry)
        retry.attempts += 1
        # The second ask may come on the next pass (a crash may have lost the first), then the
        # waits double: 0, b, 2b, 4b, ... capped at maxRetryBackoffSeconds.
        backoff = (0 if retry.attempts == 1 else
                   min(p.retry_backoff_seconds * 2 ** (retry.attempts - 2), p.max_retry_backoff_seconds))
        retry.next_at = self.now + timedelta(seconds=backoff)
        return "now"

    def _gave_up(self, reason: str, message: str) -> None:
        self._event("Warning", reason, message)
        _set_condition(self.status, "Degraded", True, reason, message, self.now)

    def _cancels(self) -> None:
        st = self.status
        for name in list(st.pending_cancel):
            action = CancelRun(name)
            verdict = self._ask(action.key)
            if verdict == "now":
                self.actions.append(action)
            elif verdict == "exhausted":
                retry = self._retry(action.key)
                st.pending_cancel = [n for n in st.pending_cancel if n != name]
                self._forget_retry(action.key)
                self._gave_up("CancelGaveUp", f"run {name} was not seen stopped after {retry.attempts} cancel "
                                              "requests; it may still be running: stop it in the pipeline service"
                                              + (f" (last error: {retry.last_error})" if retry and retry.last_error else ""))
        live = {CancelRun(n).key for n in st.pending_cancel}
        st.retries = [r for r in st.retries if not r.key.startswith("cancel:") or r.key in live]

    def _rollback(self) -> None:
        st = self.status
        rb = st.pending_rollback
        if rb is None:
            st.retries = [r for r in st.retries if not r.key.startswith("rollback:")]
            return
        served = self._serving()
        want = PatchDeployment(rb.name, rb.namespace, rb.predictor, rb.champion_version, None, 0,
                               *(served or (None, "gated")))
        key = f"rollback:{want.key}"
        dep = st.deployment
        restored = (dep is not None and dep.observed_at >= rb.requested_at
                    and (dep.champion_version, dep.canary_version) == (rb.champion_version, None))
        if restored or st.phase is Phase.promoting:  # done, or a new promotion decides the split now
            st.pending_rollback = None
            self._forget_retry(key)
            return
        verdict = self._ask(key)
        if verdict == "now":
            self.actions.append(want)
        elif verdict == "exhausted":
            retry = self._retry(key)
            st.pending_rollback = None
            self._forget_retry(key)
            self._gave_up("RollbackGaveUp", f"deployment {rb.name} did not return to {rb.champion_version} alone "
                                            f"after {retry.attempts if retry else 0} patches; check it by hand")

    def _monitoring(self) -> bool:
        st, spec = self.status, self.spec
        check = self.check
        if self.fresh is None or check is None:
            return self._check_staleness()
        if check.reason == "NoReference":
            return self._transition(Phase.degraded, None, "NoReference", check.message, "Warning")
        if not check.eligible:
            st.reason, st.message = check.reason, check.message
            return False
        st.breach_count = st.breach_count + 1 if (check.breach and st.armed) else 0
        if spec.suspend:
            st.reason, st.message = "Suspended", f"spec.suspend is true; {check.message}"
            return False
        if st.armed and st.breach_count >= spec.trigger.consecutive:
            return self._start_cycle(check)
        if check.breach and not st.armed:
            st.reason, st.message = "Disarmed", (
                f"{check.message}, but the trigger stays disarmed until the estimate recovers to "
                f"{check.threshold + spec.trigger.hysteresis:.4f} (hysteresis) after the last cycle")
        elif check.breach:
            st.reason, st.message = "Breaching", (
                f"{check.message} ({st.breach_count}/{spec.trigger.consecutive} consecutive)")
        else:
            st.reason, st.message = check.reason, check.message
        return False

    def _check_staleness(self) -> bool:
        st = self.status
        limit = timedelta(seconds=self.spec.estimate.stale_after_seconds)
        if st.estimate is None:
            if self.now - (st.phase_since or self.now) > limit:
                return self._transition(Phase.degraded, None, "EstimateUnavailable",
                                        f"no estimate read for {limit.total_seconds():.0f} s"
                                        + (f": {st.estimate_error}" if st.estimate_error else ""), "Warning")
            return False
        if self.now - st.estimate.received_at > limit:
            return self._transition(Phase.degraded, None, "EstimateStale",
                                    f"no new estimate since {st.estimate.received_at.isoformat()}"
                                    + (f": {st.estimate_error}" if st.estimate_error else ""), "Warning")
        return False

    def _degraded(self) -> bool:
        if self.status.reason == "InvalidSpec":
            return self._transition(Phase.monitoring, None, "SpecValid", "the spec is valid again", "Normal")
        if self.fresh is None:
            return False
        if trigger_policy.effective_threshold(self.spec.trigger, self.fresh) is None:
            return False
        return self._transition(Phase.monitoring, None, "EstimateAvailable",
                                "a fresh estimate is available again", "Normal")

    def _start_cycle(self, check: trigger_policy.TriggerCheck) -> bool:
        st, reading = self.status, self.fresh
        assert reading is not None
        number = st.cycle_count + 1
        name = run_name(self.ident, number)
        previous = max((h.started_at for h in st.history), default=None)
        window = sampling_window(self.spec.sampling.window_hours, previous, self.now)
        params = pipeline_params(self.spec, self.ident, name, check.threshold, reading, window)
        st.current = CurrentCycle(
            cycle=number, run_name=name, started_at=self.now, trigger_reason=check.reason,
            trigger_estimate=reading.accuracy, threshold=check.threshold, params=params,
            champion_version=reading.model_version)
        st.cycle_count, st.armed, st.breach_count = number, False, 0
        if st.filter is not None:  # the cycle decides about the filter now; a removal in progress waits for it
            st.filter.removing_since, st.filter.clean_count = None, 0
        self.cycle_started = True
        self._queue_record(self._record(st.current, None))
        start = StartRun(name, params)
        self._forget_retry(start.key)
        self._ask(start.key)  # the first attempt: counted, so a run that never appears is bounded
        self.actions.append(start)
        self._transition(Phase.assessing, Stage.submitted, "CycleStarted",
                         f"cycle {number} ({check.message}): started run {name}", "Normal")
        return False

    def _running(self) -> bool:
        cur = self.status.current
        if cur is None:  # a status edited by hand; nothing to resume
            return self._transition(Phase.monitoring, None, "NoCycle", "no cycle in flight", "Warning")
        if self.now - cur.started_at > timedelta(seconds=self.spec.pipeline.timeout_seconds):
            self._cancel(cur.run_name)
            return self._fail("RunTimedOut", f"run {cur.run_name} did not finish within "
                                             f"{self.spec.pipeline.timeout_seconds} s; cancelled")
        self._filter_step()
        run = self.run
        if run is None:
            return False
        if run.phase is RunPhase.not_found:
            start = StartRun(cur.run_name, dict(cur.params))
            verdict = self._ask(start.key)
            if verdict == "now":
                self.actions.append(start)
            elif verdict == "exhausted":
                retry = self._retry(start.key)
                self._forget_retry(start.key)
                return self._fail("RunNotStarted", f"run {cur.run_name} did not appear after {retry.attempts} "
                                                   "submissions" + (f" (last error: {retry.last_error})"
                                                                    if retry.last_error else ""))
            return False
        if run.phase in (RunPhase.pending, RunPhase.running):
            stage = _stage(run.stage)
            if stage is None or stage == self.status.stage:
                return False
            phase = Phase.improving if stage in IMPROVING_STAGES else Phase.assessing
            if self.status.phase is Phase.improving and phase is Phase.assessing:
                return False  # a stale stage name; a cycle does not go back to assessing
            return self._transition(phase, stage, "StageChanged",
                                    f"run {cur.run_name} is {stage.value}", "Normal")
        if run.phase is RunPhase.succeeded:
            return self._decide()
        reason = "RunCanceled" if run.phase is RunPhase.canceled else "RunFailed"
        return self._fail(reason, f"run {cur.run_name} {run.phase.value.lower()}"
                                  + (f": {run.error}" if run.error else ""))

    def _decide(self) -> bool:
        cur = self.status.current
        assert cur is not None
        if cur.result is None:
            return self._fail("MissingRunResult", f"run {cur.run_name} succeeded without a result record")
        try:
            result = RunResult.model_validate(cur.result)
        except ValidationError as exc:
            return self._fail("InvalidRunResult", f"run {cur.run_name} result: " +
                              describe_errors(exc).replace("spec.", "result."))
        cur.champion_version = result.champion_version or cur.champion_version
        cur.challenger_version = result.challenger_version
        if cur.remedy is None:
            self._take_remedy(cur.result, from_result=True, drop_confirmed=result.drop_confirmed)
        if self._filter_step():
            return False  # the filter's rollout decides the split first; the challenger waits for it
        interval = (f"offline estimate {result.offline_accuracy:.4f} "
                    f"[{result.offline_lower:.4f}, {result.offline_upper:.4f}] from {result.labels_used} labels")
        if not result.drop_confirmed:
            return self._finish(Decision.drop_not_confirmed, f"{interval} does not confirm the drop")
        if not result.challenger_version:
            return self._finish(Decision.no_challenger, f"{interval} confirms the drop; no challenger was trained")
        if result.challenger_accuracy is None:
            return self._fail("InvalidRunResult", f"run {cur.run_name} names challenger "
                                                  f"{result.challenger_version} without challenger_accuracy")
        if result.promote is False:
            return self._finish(Decision.challenger_not_better,
                                f"{interval}; the evaluation refused challenger {result.challenger_version}"
                                + (f": {result.promotion_reason}" if result.promotion_reason else ""))
        champion_acc = result.champion_accuracy if result.champion_accuracy is not None else result.offline_accuracy
        against = f"champion {cur.champion_version}" if cur.champion_version else "champion"
        rem = cur.remedy
        wrapped, serving_filter = None, None
        if (rem is not None and rem.compare_to == "wrapped-champion" and rem.outcome == "deployed"
                and self.status.filter is not None):
            # What serves is the champion behind the filter: the challenger must beat that, on the
            # held-out draws it was judged on (the evaluation's design estimate, else the fit-filter
            # step's figure there, else its labeled-sample estimate).
            wrapped = next((v for v in (result.wrapped_champion_holdout_accuracy, rem.filter_holdout_accuracy,
                                        rem.filter_accuracy) if v is not None), None)
            serving_filter = rem.filter_version
        # The evaluation's choice among the challenger alone, the challenger behind the filter and the
        # champion behind it (issue 21), held to what serves now by the challenger's rule.
        filtered = result.challenger_accuracy if result.challenger_filter_version else None
        alone = result.challenger_alone_accuracy
        if alone is None:
            alone = None if result.challenger_filter_version else result.challenger_accuracy
        choice = choose_serving(champion=champion_acc, wrapped_champion=wrapped, challenger=alone,
                                challenger_filtered=filtered, filter_in_service=wrapped is not None,
                                min_improvement=self.spec.promotion.min_improvement)
        if rem is not None:
            rem.serve, rem.serve_reason = choice.serve, choice.reason
            if choice.filtered and choice.promotes:
                rem.challenger_filter_version = result.challenger_filter_version
                rem.challenger_filter_gate = result.challenger_filter_gate or "gated"
        if wrapped is not None:
            champion_acc, against = wrapped, f"{against}+filter {serving_filter}"
        need = self.spec.promotion.min_improvement
        if not choice.promotes:
            gain = (choice.accuracy or 0.0) - champion_acc
            return self._finish(Decision.challenger_not_better,
                                f"{interval}; challenger {result.challenger_version} "
                                f"{result.challenger_accuracy:.4f} vs {against} {champion_acc:.4f} "
                                f"(gain {gain:+.4f}, needs > 0 and >= {need:.4f}); {choice.serve} keeps serving")
        if not cur.champion_version:
            return self._fail("UnknownChampion", "cannot switch traffic: the champion version is unknown "
                                                 "(neither the estimate nor the run result names it)")
        summary = (f"{interval}; challenger {result.challenger_version} {result.challenger_accuracy:.4f} "
                   f"beats {against} {champion_acc:.4f}"
                   + (f"; it serves behind filter {result.challenger_filter_version} ({choice.reason})"
                      if choice.filtered else ""))
        if self.spec.promotion.mode is PromotionMode.manual:
            cur.approval_requested_at = self.now
            return self._transition(
                Phase.awaiting_approval, Stage.approval, "ApprovalRequired",
                f"{summary}; approve with: kubectl annotate acyc {self.ident.name} "
                f"daic.dev/approve={cur.cycle} (or daic.dev/reject={cur.cycle})", "Normal")
        return self._start_promotion(summary)

    def _start_promotion(self, why: str) -> bool:
        cur = self.status.current
        assert cur is not None
        cur.promotion_requested_at = self.now
        stage = Stage.canary if self.spec.promotion.canary_share > 0 else Stage.promote
        return self._transition(Phase.promoting, stage, "PromotionStarted",
                                f"{why}; promoting {cur.challenger_version} via {stage.value}", "Normal")

    def _awaiting_approval(self) -> bool:
        cur = self.status.current
        if cur is None:
            return self._transition(Phase.monitoring, None, "NoCycle", "no cycle in flight", "Warning")
        if self.approval is not None:
            if self.approval.approved:
                return self._start_promotion(f"cycle {cur.cycle} approved")
            return self._finish(Decision.rejected, f"cycle {cur.cycle}: a reviewer rejected challenger "
                                                   f"{cur.challenger_version}")
        asked = cur.approval_requested_at or cur.started_at
        if self.now - asked > timedelta(seconds=self.spec.promotion.approval_timeout_seconds):
            return self._finish(Decision.approval_timed_out,
                                f"no approval within {self.spec.promotion.approval_timeout_seconds} s")
        return False

    def _promoting(self) -> bool:
        st, cur, promo = self.status, self.status.current, self.spec.promotion
        if cur is None:
            return self._transition(Phase.monitoring, None, "NoCycle", "no cycle in flight", "Warning")
        if not cur.challenger_version or not cur.champion_version:
            return self._fail("InvalidPromotion", "promotion without champion and challenger versions")
        patches = len(of_type(self.actions, PatchDeployment))
        if self._promotion_step():
            return True
        started = cur.promotion_requested_at or st.phase_since or self.now
        if self.now - started <= timedelta(seconds=promo.timeout_seconds):
            return False
        # Timed out: drop this pass's patch towards the promotion and restore the champion alone.
        kept = [a for a in self.actions if not isinstance(a, PatchDeployment)]
        self.actions = kept + of_type(self.actions, PatchDeployment)[:patches]
        ref = self.spec.deployment
        st.pending_rollback = RollbackRequest(name=ref.name, namespace=ref.namespace or self.ident.namespace,
                                              predictor=ref.predictor, champion_version=cur.champion_version,
                                              requested_at=self.now)
        waited = {Stage.canary: f"the {promo.canary_share}% canary of {cur.challenger_version}",
                  Stage.promote: f"{cur.challenger_version} alone",
                  Stage.rollback: f"{cur.champion_version} alone (rollback)"}.get(st.stage, "the new split")
        reason = "RollbackTimedOut" if st.stage is Stage.rollback else "PromotionTimedOut"
        return self._fail(reason, f"deployment {ref.name} did not serve {waited} within "
                                  f"{promo.timeout_seconds} s (promotion.timeoutSeconds); restoring "
                                  f"{cur.champion_version} alone")

    def _promotion_step(self) -> bool:
        st, cur, promo = self.status, self.status.current, self.spec.promotion
        assert cur is not None and cur.challenger_version and cur.champion_version
        if st.stage is Stage.canary:
            if not self._deployment_is(cur.champion_version, cur.challenger_version, promo.canary_share,
                                       self._serving(), canary_filter=self._challenger_filter()):
                return False
            if cur.canary_started_at is None:
                cur.canary_started_at = self.now
                self._event("Normal", "CanaryServing",
                            f"{cur.challenger_version} serves {promo.canary_share}% of traffic")
            threshold, canary = st.effective_threshold, self.canary
            if (canary is not None and threshold is not None and canary.n >= self.spec.trigger.min_window
                    and canary.accuracy < threshold):
                return self._transition(Phase.promoting, Stage.rollback, "CanaryRollback",
                                        f"canary estimate {canary.accuracy:.4f} (n={canary.n}) < "
                                        f"{threshold:.4f}; rolling back to {cur.champion_version}", "Warning")
            if self.now - cur.canary_started_at >= timedelta(seconds=promo.canary_seconds):
                return self._transition(Phase.promoting, Stage.promote, "CanaryPassed",
                                        f"canary held for {promo.canary_seconds} s; promoting "
                                        f"{cur.challenger_version}", "Normal")
            return False
        if st.stage is Stage.rollback:
            if self._deployment_is(cur.champion_version, None, 0, self._serving()):
                return self._finish(Decision.rolled_back, f"canary of {cur.challenger_version} rolled back; "
                                                          f"{cur.champion_version} serves all traffic")
            return False
        behind = self._challenger_filter()
        if self._deployment_is(cur.challenger_version, None, 0, behind):
            served = st.filter
            if behind is not None:
                # The evaluation chose the challenger behind the filter (choose_serving): the cycle's
                # filter, registered as wrapping the challenger, stays in front of the new champion.
                st.filter = ServedFilter(version=behind[0], gate=behind[1], wraps=cur.challenger_version,
                                         cycle=cur.cycle, since=self.now,
                                         reason=cur.remedy.serve_reason if cur.remedy and cur.remedy.serve_reason else "")
                if cur.remedy is not None:
                    cur.remedy.outcome = "moved-to-challenger"
                self._event("Normal", "FilterDeployed",
                            f"filter {behind[0]} ({behind[1]}) serves in front of {cur.challenger_version}"
                            + (f", replacing filter {served.version}" if served is not None else ""))
            elif served is not None:
                # The filter was adapted to the replaced champion (its label-free objective and its
                # gate were fitted on that model's outputs): it comes out with the promotion.
                st.filter = None
                if cur.remedy is not None:
                    cur.remedy.outcome = "removed-at-promotion"
                self._event("Normal", "FilterRemoved",
                            f"filter {served.version} removed: challenger {cur.challenger_version} replaced "
                            f"{cur.champion_version}, the champion the filter was adapted to")
            return self._finish(Decision.promoted, f"{cur.challenger_version} replaced {cur.champion_version}")
        return False

    def _deployment_is(self, champion: str, canary: str | None, share: int,
                       filter: tuple[str, str] | None = None, canary_filter: tuple[str, str] | None = None) -> bool:
        """True when the last reading shows this split (and these filters: (version, gate) in front
        of the main / canary model, None for none); otherwise asks for it (an idempotent patch)."""
        dep = self.status.deployment
        fv, fg = filter or (None, "gated")
        cfv, cfg = canary_filter or (None, "gated")
        if dep is not None and (dep.champion_version, dep.canary_version, dep.canary_share, dep.filter_version,
                                dep.canary_filter_version) == (champion, canary, share if canary else 0, fv,
                                                               cfv if canary else None):
            return True
        ref = self.spec.deployment
        self.actions.append(PatchDeployment(ref.name, ref.namespace or self.ident.namespace, ref.predictor,
                                            champion, canary, share if canary else 0, fv, fg,
                                            cfv if canary else None, cfg))
        return False

    def _serving(self) -> tuple[str, str] | None:
        f = self.status.filter
        return (f.version, f.gate) if f is not None else None

    def _challenger_filter(self) -> tuple[str, str] | None:
        """(version, gate) of the filter the evaluation chose to put in front of the challenger, or None."""
        rem = self.status.current.remedy if self.status.current is not None else None
        if rem is None or rem.serve != "challenger+filter" or not rem.challenger_filter_version:
            return None
        return rem.challenger_filter_version, rem.challenger_filter_gate or "gated"

    # -- the filter remedy (issue 21) ---------------------------------------------------------------

    def _take_remedy(self, fields: dict[str, Any] | None, *, from_result: bool, drop_confirmed: bool = True) -> None:
        """Decide the filter remedy with `decide_remedy` on the fit-filter step's figures (its
        record, or the run result's ``filter_*`` fields) and start the rollout it asks for."""
        cur, fields = self.status.current, dict(fields or {})
        assert cur is not None
        champion_key = "filter_champion_accuracy" if from_result else "champion_accuracy"
        gate_key = "filter_gate" if from_result else "gate"
        champion_acc, filter_acc = _num(fields.get(champion_key)), _num(fields.get("filter_accuracy"))
        version = fields.get("filter_version") or None
        d = decide_remedy(self.spec.remedy, drop_confirmed=drop_confirmed, traffic_clean=False,
                          filter_in_service=self.status.filter is not None, champion_accuracy=champion_acc,
                          filter_accuracy=filter_acc, min_improvement=self.spec.promotion.min_improvement)
        if d.filter == "deploy" and not isinstance(version, str):
            d = RemedyDecision("none", d.retrain, "champion", "the fit-filter step named no filter version")
        error = fields.get("filter_error" if from_result else "error")
        if error:
            d = RemedyDecision(d.filter, d.retrain, d.compare_to, f"{d.reason} (the fit-filter step failed: {error})")
        rem = RemedyStatus(decision=d.filter, retrain=d.retrain, compare_to=d.compare_to, reason=d.reason,
                           decided_at=self.now, filter_version=version if isinstance(version, str) else None,
                           gate=str(fields.get(gate_key) or "gated"), champion_accuracy=champion_acc,
                           filter_accuracy=filter_acc,
                           filter_holdout_accuracy=_num(fields.get("filter_holdout_accuracy")))
        if d.filter == "deploy":
            rem.rollout = FilterRollout.canary if self.spec.promotion.canary_share > 0 else FilterRollout.promote
            rem.requested_at = self.now
        elif d.filter == "remove":
            rem.rollout, rem.requested_at = FilterRollout.removing, self.now
        else:
            rem.rollout, rem.outcome = FilterRollout.done, "kept" if d.filter == "keep" else "none"
        cur.remedy = rem
        self.filter_busy = None  # a new rollout: _filter_step must look again this pass
        self._event("Normal", "RemedyDecided", f"cycle {cur.cycle}: filter {d.filter}"
                                               f"{' ' + rem.filter_version if d.filter == 'deploy' else ''}, "
                                               f"retrain {'yes' if d.retrain else 'no'}: {d.reason}")

    def _filter_champion(self) -> str | None:
        st, cur = self.status, self.status.current
        dep = st.deployment.champion_version if st.deployment is not None else None
        est = st.estimate.model_version if st.estimate is not None else None
        return (cur.champion_version if cur is not None else None) or dep or est

    def _filter_step(self) -> bool:
        """Advance the cycle's filter rollout (once per pass); True while it still waits for the deployment."""
        if self.filter_busy is None:
            self.filter_busy = self._filter_rollout()
        return self.filter_busy

    def _filter_rollout(self) -> bool:
        st, cur, promo = self.status, self.status.current, self.spec.promotion
        rem = cur.remedy if cur is not None else None
        if rem is None or rem.rollout in (None, FilterRollout.done):
            return False
        assert cur is not None
        champion = self._filter_champion()
        if champion is None:
            rem.rollout, rem.outcome = FilterRollout.done, "no-champion"
            self._event("Warning", "FilterNotDeployed", "the champion version is unknown: the filter cannot be "
                                                        "put in front of it")
            return False
        new = (rem.filter_version, rem.gate or "gated") if rem.filter_version else None
        started = rem.requested_at or self.now
        limit = timedelta(seconds=promo.timeout_seconds)
        if rem.rollout in (FilterRollout.canary, FilterRollout.promote) and self.now - started > limit:
            rem.rollout, rem.outcome = FilterRollout.rollback, "timed-out"
            self._event("Warning", "FilterTimedOut", f"filter {rem.filter_version} was not served within "
                                                     f"{promo.timeout_seconds} s (promotion.timeoutSeconds); "
                                                     "restoring the previous split")
        if rem.rollout is FilterRollout.canary:
            if not self._deployment_is(champion, champion, promo.canary_share, self._serving(), new):
                return True
            if rem.canary_started_at is None:
                rem.canary_started_at = self.now
                self._event("Normal", "FilterCanaryServing", f"{champion} behind filter {rem.filter_version} "
                                                             f"serves {promo.canary_share}% of traffic")
            threshold, canary = st.effective_threshold, self.filter_canary
            if (canary is not None and threshold is not None and canary.n >= self.spec.trigger.min_window
                    and canary.accuracy < threshold):
                rem.rollout, rem.outcome = FilterRollout.rollback, "rolled-back"
                self._event("Warning", "FilterCanaryRollback", f"filter canary estimate {canary.accuracy:.4f} "
                                                               f"(n={canary.n}) < {threshold:.4f}; rolling back")
            elif self.now - rem.canary_started_at >= timedelta(seconds=promo.canary_seconds):
                rem.rollout = FilterRollout.promote
                self._event("Normal", "FilterCanaryPassed", f"filter canary held for {promo.canary_seconds} s; "
                                                            f"putting filter {rem.filter_version} in front of "
                                                            f"{champion}")
            else:
                return True
        if rem.rollout is FilterRollout.promote:
            if not self._deployment_is(champion, None, 0, new):
                return True
            assert rem.filter_version is not None
            st.filter = ServedFilter(version=rem.filter_version, gate=rem.gate or "gated", wraps=champion,
                                     cycle=cur.cycle, since=self.now, reason=rem.reason)
            rem.rollout, rem.outcome = FilterRollout.done, "deployed"
            self._event("Normal", "FilterDeployed", f"filter {rem.filter_version} ({st.filter.gate}) serves in "
                                                    f"front of {champion}: {rem.reason}")
            return False
        if rem.rollout is FilterRollout.rollback:
            if not self._deployment_is(champion, None, 0, self._serving()):
                if self.now - started <= 2 * limit:
                    return True
                self._gave_up("FilterRollbackGaveUp", f"deployment did not return to {champion} without filter "
                                                      f"{rem.filter_version}; check it by hand")
            rem.rollout, rem.outcome = FilterRollout.done, rem.outcome or "rolled-back"
            self._event("Normal", "FilterRolledBack", f"filter {rem.filter_version} is not served ({rem.outcome})")
            return False
        if rem.rollout is FilterRollout.removing:
            if not self._deployment_is(champion, None, 0, None):
                if self.now - started <= limit:
                    return True
                self._gave_up("FilterRemovalGaveUp", f"filter {st.filter.version if st.filter else '?'} was not "
                                                     "seen removed; check the deployment by hand")
                rem.rollout, rem.outcome = FilterRollout.done, "removal-gave-up"
                return False
            removed = st.filter.version if st.filter else None
            st.filter = None
            rem.rollout, rem.outcome = FilterRollout.done, "removed"
            self._event("Normal", "FilterRemoved", f"filter {removed} removed: {rem.reason}")
        return False

    def _filter_when_clean(self) -> None:
        """Between cycles: take a serving filter out once traffic is clean again (``trigger.consecutive``
        fresh readings with no drift or change alarm, trusted, and not below the threshold)."""
        st, f = self.status, self.status.filter
        if f is None or st.current is not None:
            return
        if f.removing_since is None:
            reading, check = self.fresh, self.check
            if reading is None or check is None:
                return
            clean = (check.eligible and not check.breach and reading.trusted and not reading.drift_alarm
                     and not reading.change_alarm)
            f.clean_count = f.clean_count + 1 if clean else 0
            if f.clean_count < self.spec.trigger.consecutive:
                return
            d = decide_remedy(self.spec.remedy, drop_confirmed=False, traffic_clean=True, filter_in_service=True,
                              champion_accuracy=None, filter_accuracy=None)
            if d.filter != "remove":
                return
            f.removing_since, f.reason = self.now, d.reason
            self._event("Normal", "FilterRemoving", f"{d.reason} ({f.clean_count} clean readings, estimate "
                                                    f"{reading.accuracy:.4f}); removing filter {f.version}")
        champion = self._filter_champion()
        if champion is None:
            return
        if self._deployment_is(champion, None, 0, None):
            st.filter = None
            self._event("Normal", "FilterRemoved", f"filter {f.version} removed: {f.reason}")
        elif self.now - f.removing_since > timedelta(seconds=self.spec.promotion.timeout_seconds):
            f.removing_since, f.clean_count = None, 0
            self._gave_up("FilterRemovalGaveUp", f"filter {f.version} was not seen removed within "
                                                 f"{self.spec.promotion.timeout_seconds} s; asked again after "
                                                 "the next clean readings")

    def _cooldown(self) -> bool:
        until = self.status.cooldown_until
        if until is None or self.now >= until:
            return self._transition(Phase.monitoring, None, "CooldownOver", "monitoring again", "Normal")
        return False

    def _failed(self) -> bool:
        st = self.status
        if st.consecutive_failures >= self.spec.max_consecutive_failures:
            if self.generation_changed:
                st.consecutive_failures = 0
                return self._transition(Phase.monitoring, None, "SpecChanged",
                                        "spec changed after repeated failures; monitoring again", "Normal")
            if st.reason != "TooManyFailures":
                self._transition(Phase.failed, None, "TooManyFailures",
                                 f"{st.consecutive_failures} cycles failed in a row; change the spec to retry",
                                 "Warning")
            return False
        if st.cooldown_until is None or self.now >= st.cooldown_until:
            return self._transition(Phase.monitoring, None, "RetryAfterFailure", "monitoring again", "Normal")
        return False

    # -- endings ----------------------------------------------------------------------------------

    def _fail(self, reason: str, message: str) -> bool:
        return self._finish(Decision.failed, message, reason=reason)

    def _finish(self, decision: Decision, message: str, reason: str | None = None) -> bool:
        st, cur = self.status, self.status.current
        assert cur is not None
        cur.decision = decision.value
        rem = cur.remedy
        if rem is not None and rem.rollout not in (None, FilterRollout.done):
            # The cycle ends (a failure, a timeout) with the filter's rollout unfinished: restore
            # the champion with the filter that served before (a canary or a half-made patch goes).
            rem.rollout, rem.outcome = FilterRollout.done, "abandoned"
            if cur.champion_version and self.status.pending_rollback is None:
                ref = self.spec.deployment
                self.status.pending_rollback = RollbackRequest(
                    name=ref.name, namespace=ref.namespace or self.ident.namespace, predictor=ref.predictor,
                    champion_version=cur.champion_version, requested_at=self.now)
        result = cur.result or {}
        summary = CycleSummary(
            cycle=cur.cycle, run_name=cur.run_name, started_at=cur.started_at, finished_at=self.now,
            trigger_reason=cur.trigger_reason, trigger_estimate=cur.trigger_estimate,
            offline_accuracy=_num(result.get("offline_accuracy")),
            offline_lower=_num(result.get("offline_lower")), offline_upper=_num(result.get("offline_upper")),
            labels_used=_int(result.get("labels_used")), decision=decision, message=message,
            champion_version=cur.champion_version, challenger_version=cur.challenger_version,
            record_key=record_key(cur.run_name),
            remedy=cur.remedy.decision if cur.remedy else None, remedy_reason=cur.remedy.reason if cur.remedy else None,
            filter_outcome=cur.remedy.outcome if cur.remedy else None,
            filter_version=cur.remedy.filter_version if cur.remedy else None,
            serve=cur.remedy.serve if cur.remedy else None, serve_reason=cur.remedy.serve_reason if cur.remedy else None)
        history = [h for h in st.history if h.cycle != cur.cycle] + [summary]
        st.history = history[-self.spec.max_history:]
        self._queue_record(self._record(cur, summary))
        st.last_cycle_time = self.now
        st.cooldown_until = self.now + timedelta(seconds=self.spec.cooldown_seconds)
        st.current = None
        failed = decision is Decision.failed
        if failed:
            st.consecutive_failures += 1
            st.armed = True  # the drop was not dealt with: try again after the cooldown
            return self._transition(Phase.failed, None, reason or "CycleFailed",
                                    f"cycle {cur.cycle} failed: {message}", "Warning")
        st.consecutive_failures = 0
        return self._transition(Phase.cooldown, None, f"Cycle{_camel(decision.value)}",
                                f"cycle {cur.cycle} {decision.value}: {message}", "Normal")

    def _cancel(self, name: str) -> None:
        if name not in self.status.pending_cancel:
            self.status.pending_cancel.append(name)

    # -- records, events, conditions ------------------------------------------------------------

    def _record(self, cur: CurrentCycle, summary: CycleSummary | None) -> dict[str, Any]:
        return {
            "kind": RECORD_KIND,
            "resource": {"name": self.ident.name, "namespace": self.ident.namespace, "uid": self.ident.uid},
            "state": "finished" if summary else "started",
            "cycle": cur.model_dump(mode="json", by_alias=True),
            "summary": summary.model_dump(mode="json", by_alias=True) if summary else None,
            "spec": self.spec.model_dump(mode="json", by_alias=True),
        }

    def _queue_record(self, record: dict[str, Any]) -> None:
        key = record_key(record["cycle"]["runName"])
        outbox = [p for p in self.status.outbox if p.key != key] + [PendingRecord(key=key, record=record)]
        self.status.outbox = outbox[-self.spec.max_history:]

    def _transition(self, phase: Phase, stage: Stage | None, reason: str, message: str, kind: str) -> bool:
        st = self.status
        if (st.phase, st.stage, st.reason) == (phase, stage, reason):
            st.message = message
            return False
        if st.phase is not phase:
            st.phase_since = self.now
        st.phase, st.stage, st.reason, st.message = phase, stage, reason, message
        self._event(kind, reason, message)
        return True

    def _event(self, kind: str, reason: str, message: str) -> None:
        self.actions.append(EmitEvent(kind, reason, message))  # type: ignore[arg-type]

    def _degraded_condition(self) -> None:
        """``Degraded``: True while the phase is Degraded, while the pipeline service has not
        answered for ``pipeline.unreachableAfterSeconds`` with a cycle needing it, and after an
        action was given up (until the next cycle starts or the spec changes)."""
        st, now = self.status, self.now
        since = st.pipeline_unreachable_since
        limit = timedelta(seconds=self.spec.pipeline.unreachable_after_seconds)
        previous = next((c for c in st.conditions if c.type == "Degraded"), None)
        if st.phase is Phase.degraded:
            _set_condition(st, "Degraded", True, st.reason, st.message, now)
        elif since is not None and now - since >= limit:
            message = (f"the pipeline service has not answered since {since.isoformat()} "
                       f"({(now - since).total_seconds():.0f} s)" + (f": {self.pipeline_error}" if self.pipeline_error else ""))
            if previous is None or previous.reason != "PipelineUnreachable":
                self._event("Warning", "PipelineUnreachable", message)
            _set_condition(st, "Degraded", True, "PipelineUnreachable", message, now)
        elif (previous is not None and previous.status == "True" and previous.reason in GAVE_UP
              and not self.cycle_started and not self.generation_changed):
            pass  # keep what was given up in view
        else:
            _set_condition(st, "Degraded", False, "AsExpected", "", now)

    def finish(self) -> None:
        st, now = self.status, self.now
        ready = st.phase not in (Phase.degraded, Phase.failed)
        _set_condition(st, "Ready", ready, st.reason, st.message, now)
        _set_condition(st, "SpecValid", True, "Valid", "", now)
        limit = timedelta(seconds=self.spec.estimate.stale_after_seconds)
        if st.estimate is None:
            _set_condition(st, "EstimateAvailable", False, "NoEstimate", st.estimate_error or "", now)
        elif now - st.estimate.received_at > limit:
            _set_condition(st, "EstimateAvailable", False, "Stale", st.estimate_error or "", now)
        else:
            _set_condition(st, "EstimateAvailable", True, "Fresh", "", now)
        cur = st.current
        served = st.filter
        _set_condition(st, "FilterServing", served is not None,
                       "FilterInService" if served else "NoFilter",
                       (f"filter {served.version} ({served.gate}) in front of {served.wraps}"
                        + (f" since cycle {served.cycle}" if served.cycle else "") + f": {served.reason}")
                       if served else "", now)
        _set_condition(st, "CycleInFlight", cur is not None, st.phase.value,
                       f"cycle {cur.cycle}, run {cur.run_name}" if cur else "", now)
        if cur is None and not st.pending_cancel:
            st.pipeline_unreachable_since = None  # nothing to ask the pipeline service now
        live = ({StartRun(cur.run_name, {}).key} if cur else set()) | {CancelRun(n).key for n in st.pending_cancel}
        st.retries = [r for r in st.retries if not r.key.startswith(("start:", "cancel:")) or r.key in live]
        self._degraded_condition()
        degraded = next(c for c in st.conditions if c.type == "Degraded")
        if ready and degraded.status == "True":
            _set_condition(st, "Ready", False, degraded.reason, degraded.message, now)
        if self.failures:
            self._event("Warning", "ActionFailed", "; ".join(self.failures))
        st.observed_generation = self.ident.generation


def of_type(actions: list[Action], cls: type) -> list[Action]:
    return [a for a in actions if isinstance(a, cls)]


def _set_condition(status: CycleStatus, kind: str, ok: bool, reason: str, message: str, now: datetime) -> None:
    value = "True" if ok else "False"
    for i, cond in enumerate(status.conditions):
        if cond.type == kind:
            since = cond.last_transition_time if cond.status == value else now
            status.conditions[i] = Condition(type=kind, status=value, reason=reason or "None",
                                             message=message, last_transition_time=since)
            return
    status.conditions.append(Condition(type=kind, status=value, reason=reason or "None",
                                       message=message, last_transition_time=now))


def _stage(name: str | None) -> Stage | None:
    if not name:
        return None
    low = name.lower()
    for stage in (Stage.sampling, Stage.labeling, Stage.estimating, Stage.training, Stage.evaluating):
        if stage.value in low or stage.value.removesuffix("ing") in low:
            return stage
    return None


def _camel(value: str) -> str:
    return "".join(part.capitalize() for part in value.split("-"))


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None
