"""Typed status of an ``AssessmentCycle``: the only state the reconcile function keeps.

Everything the operator needs to resume after a restart lives here (phase, the cycle in flight and
its run name, what is owed to the object store, runs still to cancel), so a new operator process
reading the status continues exactly where the old one stopped. The CRD's status schema mirrors
these models (tested), plus ``status.kopf``, which kopf writes for its own bookkeeping.
"""
from __future__ import annotations

import enum
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


class Phase(str, enum.Enum):
    monitoring = "Monitoring"
    assessing = "Assessing"            # the run samples, waits for labels, estimates offline
    improving = "Improving"            # the run trains a challenger and evaluates it
    awaiting_approval = "AwaitingApproval"
    promoting = "Promoting"            # canary, then full promotion (or a rollback)
    cooldown = "Cooldown"
    degraded = "Degraded"              # no cycle in flight and the estimate cannot be read/trusted
    failed = "Failed"                  # the last cycle failed; retried after cooldown up to a limit


IN_FLIGHT = frozenset({Phase.assessing, Phase.improving, Phase.awaiting_approval, Phase.promoting})


class Stage(str, enum.Enum):
    submitted = "submitted"
    sampling = "sampling"
    labeling = "labeling"
    estimating = "estimating"
    training = "training"
    evaluating = "evaluating"
    approval = "approval"
    canary = "canary"
    promote = "promote"
    rollback = "rollback"


IMPROVING_STAGES = frozenset({Stage.training, Stage.evaluating})


class Decision(str, enum.Enum):
    """How a cycle ended. Every value but ``promoted`` is a documented refusal (docs/operator.md)."""

    promoted = "promoted"
    rolled_back = "rolled-back"
    drop_not_confirmed = "drop-not-confirmed"
    no_challenger = "no-challenger"
    challenger_not_better = "challenger-not-better"
    rejected = "rejected"
    approval_timed_out = "approval-timed-out"
    failed = "failed"


def utc(dt: datetime) -> datetime:
    """Make ``dt`` timezone-aware UTC (naive values are taken as UTC)."""
    return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class EstimateStatus(_Model):
    accuracy: float
    lower: float | None = None
    upper: float | None = None
    n: int = Field(default=0, ge=0)
    drift_alarm: bool = False
    trusted: bool = True
    model_version: str | None = None
    reference_accuracy: float | None = None
    observed_at: datetime            # the estimate's own time (sidecar window end, or receipt time)
    received_at: datetime            # when this operator first saw it (its clock: used for staleness)


class RunResult(_Model):
    """What a finished pipeline run reports (contract in docs/operator.md)."""

    model_config = ConfigDict(alias_generator=None, populate_by_name=True, extra="ignore")

    drop_confirmed: bool
    offline_accuracy: float = Field(ge=0, le=1)
    offline_lower: float = Field(ge=0, le=1)
    offline_upper: float = Field(ge=0, le=1)
    labels_used: int = Field(ge=0)
    champion_version: str | None = None
    champion_accuracy: float | None = Field(default=None, ge=0, le=1)
    challenger_version: str | None = None
    challenger_accuracy: float | None = Field(default=None, ge=0, le=1)
    promote: bool | None = None              # the pipeline's evaluate step's own verdict, if it gave one
    promotion_reason: str | None = None
    # the evaluation's choice with the cycle's filter (issue 21; components/evaluate): what serves
    serve: str | None = None
    serve_reason: str | None = None
    challenger_alone_accuracy: float | None = Field(default=None, ge=0, le=1)
    challenger_filter_accuracy: float | None = Field(default=None, ge=0, le=1)
    wrapped_champion_holdout_accuracy: float | None = Field(default=None, ge=0, le=1)
    challenger_filter_version: str | None = None  # a filter version wrapping the challenger, when it serves behind one
    challenger_filter_gate: str | None = None


#: what serves after a cycle with a challenger (operators.reconcile.choose_serving)
ServeChoice = Literal["challenger", "challenger+filter", "champion+filter", "champion"]


class FilterRollout(str, enum.Enum):
    """Where the cycle's input filter stands (issue 21): it goes in like a challenger (canary, then
    the whole predictor; a failing canary rolls back), and ``removing`` takes a serving one out."""

    canary = "canary"
    promote = "promote"
    rollback = "rollback"
    removing = "removing"
    done = "done"


class RemedyStatus(_Model):
    """The remedy decision of the cycle in flight (``daic.operators.reconcile.decide_remedy`` on the
    fit-filter step's figures) and the filter's rollout."""

    decision: Literal["deploy", "keep", "remove", "none"]
    retrain: bool
    compare_to: str
    reason: str
    decided_at: datetime
    filter_version: str | None = None
    gate: str | None = None
    champion_accuracy: float | None = None
    filter_accuracy: float | None = None
    filter_holdout_accuracy: float | None = None
    rollout: FilterRollout | None = None
    requested_at: datetime | None = None
    canary_started_at: datetime | None = None
    canary_estimate: float | None = None
    canary_n: int | None = None
    outcome: str | None = None  # deployed, rolled-back, timed-out, removed, kept, none, moved-to-challenger
    # after the evaluation: what serves (operators.reconcile.choose_serving) and why
    serve: ServeChoice | None = None
    serve_reason: str | None = None
    challenger_filter_version: str | None = None
    challenger_filter_gate: str | None = None


class ServedFilter(_Model):
    """The input filter in front of the champion now (None: no filter)."""

    version: str
    gate: str = "gated"
    wraps: str | None = None          # the champion version it was adapted to
    cycle: int | None = None          # the cycle that put it in
    since: datetime
    reason: str = ""
    clean_count: int = Field(default=0, ge=0)  # consecutive clean readings (no drift, estimate above threshold)
    removing_since: datetime | None = None     # a removal was asked (traffic clean again)


class CurrentCycle(_Model):
    cycle: int = Field(ge=1)
    run_name: str
    started_at: datetime
    trigger_reason: str
    trigger_estimate: float
    threshold: float | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    run_state: str | None = None
    run_observed_at: datetime | None = None
    run_error: str | None = None
    result: dict[str, Any] | None = None
    champion_version: str | None = None
    challenger_version: str | None = None
    approval_requested_at: datetime | None = None
    canary_started_at: datetime | None = None
    canary_estimate: float | None = None
    canary_n: int | None = None
    promotion_requested_at: datetime | None = None
    decision: str | None = None
    remedy: RemedyStatus | None = None


class CycleSummary(_Model):
    """One finished cycle, as kept (bounded) in status.history; the full record is in the store."""

    cycle: int = Field(ge=1)
    run_name: str
    started_at: datetime
    finished_at: datetime
    trigger_reason: str
    trigger_estimate: float
    offline_accuracy: float | None = None
    offline_lower: float | None = None
    offline_upper: float | None = None
    labels_used: int | None = None
    decision: Decision
    message: str = ""
    champion_version: str | None = None
    challenger_version: str | None = None
    record_key: str
    remedy: str | None = None          # the filter decision: deploy, keep, remove, none
    remedy_reason: str | None = None
    filter_outcome: str | None = None
    filter_version: str | None = None
    serve: ServeChoice | None = None   # what serves after the evaluation (choose_serving)
    serve_reason: str | None = None


class DeploymentStatus(_Model):
    champion_version: str | None = None
    canary_version: str | None = None
    canary_share: int = Field(default=0, ge=0, le=100)
    observed_at: datetime
    filter_version: str | None = None
    canary_filter_version: str | None = None


class Condition(_Model):
    type: str
    status: Literal["True", "False", "Unknown"]  # as Kubernetes conditions have it
    reason: str
    message: str = ""
    last_transition_time: datetime


class PendingRecord(_Model):
    key: str
    record: dict[str, Any]


class RetryState(_Model):
    """An action the operator keeps asking for until it is seen done (``key`` as in actions.py):
    how often it was asked, when it may be asked again (exponential backoff) and the last error."""

    key: str
    attempts: int = Field(default=0, ge=0)
    next_at: datetime
    last_error: str | None = None


class RollbackRequest(_Model):
    """The champion-only split to restore after a promotion that timed out (asked with backoff
    until the deployment shows it, even after the cycle ended)."""

    name: str
    namespace: str | None = None
    predictor: str
    champion_version: str
    requested_at: datetime


class CycleStatus(_Model):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    phase: Phase = Phase.monitoring
    stage: Stage | None = None
    reason: str = "Created"
    message: str = ""
    phase_since: datetime | None = None
    observed_generation: int | None = None
    cycle_count: int = Field(default=0, ge=0)
    armed: bool = True
    breach_count: int = Field(default=0, ge=0)
    consecutive_failures: int = Field(default=0, ge=0)
    effective_threshold: float | None = None
    estimate: EstimateStatus | None = None
    estimate_error: str | None = None
    current: CurrentCycle | None = None
    deployment: DeploymentStatus | None = None
    history: list[CycleSummary] = Field(default_factory=list)
    outbox: list[PendingRecord] = Field(default_factory=list)
    pending_cancel: list[str] = Field(default_factory=list)
    retries: list[RetryState] = Field(default_factory=list)
    pending_rollback: RollbackRequest | None = None
    filter: ServedFilter | None = None
    pipeline_unreachable_since: datetime | None = None  # first unanswered run read of an unbroken streak
    conditions: list[Condition] = Field(default_factory=list)
    cooldown_until: datetime | None = None
    last_cycle_time: datetime | None = None

    def to_wire(self) -> dict[str, Any]:
        """camelCase JSON-ready dict; ``None`` kept as null so a merge patch clears the field."""
        return self.model_dump(mode="json", by_alias=True)

    @classmethod
    def from_wire(cls, raw: Any) -> "CycleStatus":
        return cls.model_validate(raw or {})
