"""One reconcile pass with real adapters: observe -> reconcile -> persist status -> execute actions.

Shared by the kopf handlers (cluster) and ``daic controller`` (one machine); only the adapters
differ. The order matters for restarts: the new status is persisted *before* any action runs, so
a crash after persisting loses at most actions that the next pass asks for again (the run is seen
missing and submitted under the same name, the deployment seen unpatched, the record still in the
outbox), and a crash before persisting leaves the old status, whose actions are idempotent too.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Protocol, Sequence

from daic.operators.actions import Action, CancelRun, EmitEvent, PatchDeployment, StartRun, WriteRecord
from daic.operators.estimates import EstimateSource
from daic.operators.observations import (
    ActionOutcome,
    Approval,
    DeploymentReading,
    EstimateError,
    FilterRecord,
    Observations,
    RunObservation,
    RunPhase,
    RunState,
    approval_from_annotations,
)
from daic.operators.reconcile import CycleIdentity, reconcile_resource
from daic.operators.runners import PipelineRunner
from daic.operators.spec import CycleSpec, InvalidSpec, parse_spec
from daic.operators.status import CycleStatus, FilterRollout, Phase

log = logging.getLogger(__name__)


class DeploymentTarget(Protocol):
    def observe(self, now: datetime) -> DeploymentReading: ...

    def apply(self, want: PatchDeployment) -> None: ...


class RecordSink(Protocol):
    def put_json(self, key: str, obj: Any) -> None: ...


class EventSink(Protocol):
    def emit(self, event: EmitEvent) -> None: ...


@dataclass
class Ports:
    """The adapters one AssessmentCycle talks to (built from its spec)."""

    estimate: EstimateSource
    runner: PipelineRunner
    deployment: DeploymentTarget
    records: RecordSink
    canary: EstimateSource | None = None


@dataclass(frozen=True)
class PassResult:
    status: CycleStatus
    actions: tuple[Action, ...]
    outcomes: tuple[ActionOutcome, ...]  # feed into the next pass


class RepeatFilter:
    """Drops an event identical to the previous one (an action failing on every pass, say)."""

    def __init__(self, sink: EventSink):
        self.sink = sink
        self._last: tuple[str, str, str] | None = None

    def emit(self, event: EmitEvent) -> None:
        key = (event.type, event.reason, event.message)
        if key != self._last:
            self._last = key
            self.sink.emit(event)


def observe(spec: CycleSpec, status: CycleStatus, ports: Ports, now: datetime,
            annotations: dict[str, str] | None, outcomes: Sequence[ActionOutcome],
            events: EventSink) -> Observations:
    """Ask every adapter what the reconcile function needs to know now; never raises."""
    try:
        estimate = ports.estimate.read(now)
    except Exception as exc:  # noqa: BLE001 - an adapter bug must not stop the loop
        estimate = EstimateError(f"{type(exc).__name__}: {exc}", now)
    cur = status.current
    rollout = cur.remedy.rollout if cur is not None and cur.remedy is not None else None
    filter_moving = (rollout not in (None, FilterRollout.done)
                     or (status.filter is not None and status.filter.removing_since is not None))
    canary = None
    if ports.canary is not None and (status.phase is Phase.promoting or rollout is FilterRollout.canary):
        try:
            canary = ports.canary.read(now)
        except Exception as exc:  # noqa: BLE001
            canary = EstimateError(f"{type(exc).__name__}: {exc}", now)
    names = ([cur.run_name] if cur is not None else []) + list(status.pending_cancel)
    runs = []
    for name in dict.fromkeys(names):
        try:
            state = ports.runner.get(name)
        except Exception as exc:  # noqa: BLE001
            log.warning("cannot read run %s: %s", name, exc)
            state = RunState(name, RunPhase.unknown, error=f"{type(exc).__name__}: {exc}")
        runs.append(RunObservation(state, now))
    deployment = None
    if status.phase is Phase.promoting or status.pending_rollback is not None or filter_moving:
        try:
            deployment = ports.deployment.observe(now)
        except Exception as exc:  # noqa: BLE001
            log.warning("cannot read the deployment: %s", exc)
    approval: Approval | None = None
    if status.phase is Phase.awaiting_approval and cur is not None:
        try:
            approval = approval_from_annotations(annotations, cur.cycle, now)
        except ValueError as exc:
            events.emit(EmitEvent("Warning", "InvalidAnnotation", str(exc)))
    filter_record = None
    if cur is not None and cur.remedy is None and hasattr(ports.records, "get_json"):
        filter_record = read_filter_record(ports.records, cur.run_name, now)
    return Observations(estimate=estimate, canary_estimate=canary, runs=tuple(runs), deployment=deployment,
                        approval=approval, outcomes=tuple(outcomes), filter_record=filter_record)


def read_filter_record(store: Any, run_name: str, now: datetime) -> FilterRecord | None:
    """The fit-filter step's record of the run (``cycles/<run>/filter.json``), None until it is
    written (or when it cannot be read now: the next pass asks again)."""
    key = f"cycles/{run_name}/filter.json"
    try:
        if hasattr(store, "exists") and not store.exists(key):
            return None
        record = store.get_json(key)
    except Exception as exc:  # noqa: BLE001 - a missing or unreadable record is "not yet"
        log.debug("no filter record %s: %s", key, exc)
        return None
    return FilterRecord(run_name, record, now) if isinstance(record, dict) else None


def execute(actions: Sequence[Action], ports: Ports | None, events: EventSink,
            now: datetime) -> tuple[ActionOutcome, ...]:
    """Run each action once; a failure is reported (and retried by a later pass), never raised.

    Events go first: the status that decided them is already persisted, and every other action is
    retried by a later pass if the process dies here, but an event is emitted once. Emitted after a
    StartRun, a kill -9 between the two lost the cycle's ``CycleStarted`` while its run went on."""
    outcomes = []
    for action in sorted(actions, key=lambda a: not isinstance(a, EmitEvent)):
        try:
            if isinstance(action, EmitEvent):
                events.emit(action)
            elif ports is None:
                raise RuntimeError("no adapters: the spec is invalid")
            elif isinstance(action, StartRun):
                ports.runner.submit(action.run_name, action.params)
            elif isinstance(action, CancelRun):
                ports.runner.cancel(action.run_name)
            elif isinstance(action, PatchDeployment):
                ports.deployment.apply(action)
            elif isinstance(action, WriteRecord):
                ports.records.put_json(action.object_key, action.record)
            else:  # pragma: no cover - the Action union is closed
                raise TypeError(f"unknown action {action!r}")
        except Exception as exc:  # noqa: BLE001
            log.warning("action %s failed: %s", action.key, exc)
            outcomes.append(ActionOutcome(action.key, False, now, f"{type(exc).__name__}: {exc}"))
        else:
            outcomes.append(ActionOutcome(action.key, True, now))
    return tuple(outcomes)


def _sync_abstain(spec: CycleSpec, ports: Ports, ident: CycleIdentity, events: EventSink) -> None:
    """spec.abstain onto the model servers' policy record (daic.operators.abstain; issue 21)."""
    from daic.operators.abstain import sync_abstain

    if not hasattr(ports.records, "get_json"):  # a record sink that is not a store
        return
    event = sync_abstain(spec, ports.records, f"{ident.namespace or 'local'}/{ident.name}")
    if event is not None:
        events.emit(event)


def run_pass(ident: CycleIdentity, raw_spec: Any, raw_status: Any, annotations: dict[str, str] | None,
             make_ports: Callable[[CycleSpec], Ports], events: EventSink,
             persist: Callable[[CycleStatus], None], now: datetime,
             outcomes: Sequence[ActionOutcome] = ()) -> PassResult:
    status = CycleStatus.from_wire(raw_status)
    ports: Ports | None = None
    try:
        spec = parse_spec(raw_spec)
    except InvalidSpec:
        obs = Observations(outcomes=tuple(outcomes))
    else:
        ports = make_ports(spec)
        _sync_abstain(spec, ports, ident, events)
        obs = observe(spec, status, ports, now, annotations, outcomes, events)
    result = reconcile_resource(raw_spec, status.to_wire(), obs, now, ident)
    persist(result.status)
    done = execute(result.actions, ports, events, now)
    return PassResult(result.status, result.actions, done)
