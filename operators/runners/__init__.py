"""Pipeline runners: one interface over Kubeflow Pipelines (``kfp.Client``) and local runs.

The reconcile function only ever names runs; a runner maps a run name to a run. ``submit`` must
be idempotent per name (submitting a name that exists is a no-op), which is what makes the
operator's restarts safe: whatever phase it died in, asking again never starts a second run.
"""
from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from daic.operators.observations import RunPhase, RunState

RESULT_KEY = "cycles/{run_name}/result.json"  # where a finished run leaves its result record


@runtime_checkable
class PipelineRunner(Protocol):
    def submit(self, run_name: str, params: dict[str, Any]) -> None:
        """Start the run ``run_name`` unless one of that name exists."""

    def get(self, run_name: str) -> RunState:
        """The run's state; ``RunPhase.not_found`` when no run has that name."""

    def cancel(self, run_name: str) -> None:
        """Stop the run if it is still going; a finished or missing run is not an error."""


__all__ = ["PipelineRunner", "RunPhase", "RunState", "RESULT_KEY"]
