"""What the operator saw since the last reconcile: the inputs of the pure reconcile function.

Every observation carries ``observed_at`` so the reconcile function can drop duplicates and stale
readings (an older estimate arriving after a newer one, a run state polled before a restart and
delivered after it) instead of acting on them twice.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


class RunPhase(str, enum.Enum):
    """A pipeline run's state, common to kfp.Client and the local runner."""

    not_found = "NOT_FOUND"
    pending = "PENDING"
    running = "RUNNING"
    succeeded = "SUCCEEDED"
    failed = "FAILED"
    canceled = "CANCELED"
    unknown = "UNKNOWN"  # the runner could not be asked (network error): no information

    @property
    def terminal(self) -> bool:
        return self in (RunPhase.succeeded, RunPhase.failed, RunPhase.canceled)


@dataclass(frozen=True)
class RunState:
    """A runner's answer for one run name. ``stage`` names the step running now when the runner
    knows it (sampling, labeling, estimating, training, evaluating); ``result`` is the run's result
    record once it succeeded."""

    run_name: str
    phase: RunPhase
    stage: str | None = None
    result: dict[str, Any] | None = None
    error: str | None = None


@dataclass(frozen=True)
class EstimateReading:
    """One online estimate (the sidecar's ``GET /estimate``, or a Prometheus query)."""

    accuracy: float
    n: int
    observed_at: datetime              # the estimate's own time when given, else the receipt time
    lower: float | None = None
    upper: float | None = None
    drift_alarm: bool = False
    trusted: bool = True
    model_version: str | None = None
    reference_accuracy: float | None = None
    error_sd: float | None = None      # the estimate's error scale; the untrusted-window rule uses it
    change_alarm: bool = False         # the sidecar's sequential change alarm (daic.oracles.change)
    unscored_reason: str | None = None  # why the newest inputs were recorded unscored (the estimate stands still)


@dataclass(frozen=True)
class EstimateError:
    """The estimate could not be read or parsed."""

    error: str
    observed_at: datetime


@dataclass(frozen=True)
class RunObservation:
    state: RunState
    observed_at: datetime


@dataclass(frozen=True)
class DeploymentReading:
    """The traffic split the deployment serves now."""

    champion_version: str | None
    canary_version: str | None
    canary_share: int
    observed_at: datetime
    filter_version: str | None = None
    canary_filter_version: str | None = None


@dataclass(frozen=True)
class FilterRecord:
    """The fit-filter step's record of the run ``run_name`` (``cycles/<run>/filter.json``), read while
    the run goes on so the filter can go in while retraining runs."""

    run_name: str
    record: dict[str, Any]
    observed_at: datetime


@dataclass(frozen=True)
class Approval:
    """A person's decision on cycle ``cycle`` (annotation ``daic.dev/approve`` or ``daic.dev/reject``)."""

    cycle: int
    approved: bool
    observed_at: datetime


@dataclass(frozen=True)
class ActionOutcome:
    """The result of executing an action with ``key`` (see actions.py), fed back on the next pass."""

    key: str
    ok: bool
    observed_at: datetime
    error: str | None = None


@dataclass(frozen=True)
class Observations:
    estimate: EstimateReading | EstimateError | None = None
    canary_estimate: EstimateReading | EstimateError | None = None
    runs: tuple[RunObservation, ...] = ()
    deployment: DeploymentReading | None = None
    approval: Approval | None = None
    filter_record: FilterRecord | None = None
    outcomes: tuple[ActionOutcome, ...] = field(default_factory=tuple)


APPROVE_ANNOTATION = "daic.dev/approve"
REJECT_ANNOTATION = "daic.dev/reject"


def approval_from_annotations(annotations: dict[str, str] | None, cycle: int | None,
                              now: datetime) -> Approval | None:
    """A person's decision on ``cycle`` from the resource's annotations, if they name that cycle.

    ``kubectl annotate acyc NAME daic.dev/approve=3`` approves cycle 3; ``daic.dev/reject=3``
    rejects it (a rejection wins when both name the same cycle). Annotations naming another cycle
    are ignored, so a stale approval never promotes a later challenger.
    """
    if cycle is None or not annotations:
        return None
    decided: Approval | None = None
    for key, approved in ((APPROVE_ANNOTATION, True), (REJECT_ANNOTATION, False)):
        raw = annotations.get(key)
        if raw is None:
            continue
        try:
            named = int(str(raw).strip())
        except ValueError:
            raise ValueError(f"annotation {key}={raw!r} must be a cycle number, e.g. {key}={cycle}") from None
        if named == cycle:
            decided = Approval(cycle=cycle, approved=approved, observed_at=now)
    return decided
