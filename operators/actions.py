"""What the reconcile function asks the outside world to do.

Each action is a typed value with a ``key``: executing it twice has the effect of executing it
once (a run is submitted under its deterministic name, a patch sets a desired state, a record is
written under a fixed key), so after a crash the operator can simply reconcile again.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Union


@dataclass(frozen=True)
class StartRun:
    """Submit the pipeline run ``run_name`` unless a run of that name exists already."""

    run_name: str
    params: dict[str, Any] = field(hash=False)

    @property
    def key(self) -> str:
        return f"start:{self.run_name}"


@dataclass(frozen=True)
class CancelRun:
    run_name: str

    @property
    def key(self) -> str:
        return f"cancel:{self.run_name}"


@dataclass(frozen=True)
class PatchDeployment:
    """Make the deployment serve ``champion_version`` with ``canary_version`` taking
    ``canary_share`` percent of traffic (no canary when ``canary_version`` is None).

    ``filter_version`` / ``canary_filter_version``: the input filter (a TRANSFORMER node, issue 21)
    in front of the main / canary predictor's model, None for none; a filter's canary is the same
    champion version behind the new filter. ``*_gate``: how the filter is gated per input."""

    name: str
    namespace: str | None
    predictor: str
    champion_version: str
    canary_version: str | None = None
    canary_share: int = 0
    filter_version: str | None = None
    filter_gate: str = "gated"
    canary_filter_version: str | None = None
    canary_filter_gate: str = "gated"

    def __post_init__(self) -> None:
        if not 0 <= self.canary_share <= 100:
            raise ValueError(f"canary_share must be within 0..100, got {self.canary_share}")
        if self.canary_version is None and self.canary_share:
            raise ValueError("canary_share must be 0 without a canary_version")
        if self.canary_version is None and self.canary_filter_version:
            raise ValueError("canary_filter_version needs a canary_version")

    @property
    def key(self) -> str:
        key = f"deploy:{self.name}:{self.champion_version}:{self.canary_version}:{self.canary_share}"
        if self.filter_version or self.canary_filter_version:
            key += f":filter={self.filter_version}/{self.filter_gate}:{self.canary_filter_version}/{self.canary_filter_gate}"
        return key


@dataclass(frozen=True)
class EmitEvent:
    """A Kubernetes Event on the AssessmentCycle (a log line for the local controller)."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str

    @property
    def key(self) -> str:
        return f"event:{self.reason}:{self.message}"


@dataclass(frozen=True)
class WriteRecord:
    """Write a full cycle record to the object store (keys under ``cycles/``)."""

    object_key: str
    record: dict[str, Any] = field(hash=False)

    @property
    def key(self) -> str:
        return f"record:{self.object_key}"


Action = Union[StartRun, CancelRun, PatchDeployment, EmitEvent, WriteRecord]
