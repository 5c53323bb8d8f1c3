"""Shared helpers for the reconcile tests: specs, readings, and a small simulated outside world.

``World`` stands in for the systems the operator talks to (KFP, the deployment, the object store)
so that crash-and-restart scenarios can be played against the *pure* reconcile function: it
keeps runs by name (a second submit of a name is counted, never creates a second run), moves each
run through its stages one step per pass, and applies deployment patches. The adapters that talk
to the real systems are tested separately (test_operator_adapters.py, test_operator_handlers.py).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from daic.operators.actions import CancelRun, EmitEvent, PatchDeployment, StartRun, WriteRecord
from daic.operators.observations import (
    ActionOutcome,
    DeploymentReading,
    EstimateReading,
    Observations,
    RunObservation,
    RunPhase,
    RunState,
)
from daic.operators.reconcile import CycleIdentity, Reconciled, reconcile
from daic.operators.spec import CycleSpec, parse_spec
from daic.operators.status import CycleStatus

T0 = datetime(2025, 1, 1, tzinfo=timezone.utc)
IDENT = CycleIdentity(name="demo", uid="0f1e2d3c-4b5a-6978-8899-aabbccddeeff", namespace="default", generation=1)

BASE_SPEC: dict[str, Any] = {
    "deployment": {"name": "mnist"},
    "estimate": {"url": "http://sidecar.test/estimate", "staleAfterSeconds": 600},
    "trigger": {"threshold": 0.9, "minWindow": 100},
    "pipeline": {"timeoutSeconds": 3600},
    "promotion": {"mode": "auto", "canaryShare": 10, "canarySeconds": 60},
    "cooldownSeconds": 600,
}

GOOD_RESULT: dict[str, Any] = {
    "drop_confirmed": True, "offline_accuracy": 0.82, "offline_lower": 0.77, "offline_upper": 0.87,
    "labels_used": 180, "champion_version": "v1", "champion_accuracy": 0.82,
    "challenger_version": "v2", "challenger_accuracy": 0.95,
}


def deep_merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def make_spec(**patch: Any) -> CycleSpec:
    return parse_spec(deep_merge(BASE_SPEC, patch))


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def reading(accuracy: float, t: float, n: int = 500, **kw: Any) -> EstimateReading:
    kw.setdefault("model_version", "v1")
    return EstimateReading(accuracy=accuracy, n=n, observed_at=at(t), **kw)


def run_obs(name: str, phase: RunPhase, t: float, stage: str | None = None,
            result: dict[str, Any] | None = None, error: str | None = None) -> RunObservation:
    return RunObservation(RunState(name, phase, stage, result, error), at(t))


def step(spec: CycleSpec, status: CycleStatus, t: float, obs: Observations | None = None,
         ident: CycleIdentity = IDENT) -> Reconciled:
    return reconcile(spec, status, obs or Observations(), at(t), ident)


@dataclass
class World:
    """A simulated KFP + deployment + object store, advanced one step per reconcile pass."""

    estimate_at: Any                                     # t -> EstimateReading | None
    result: dict[str, Any] = field(default_factory=lambda: dict(GOOD_RESULT))
    champion: str = "v1"
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    submissions: list[str] = field(default_factory=list)
    cancels: list[str] = field(default_factory=list)
    deployment: tuple[str, str | None, int] = ("v1", None, 0)
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: list[EmitEvent] = field(default_factory=list)
    stages: tuple[str, ...] = ("sample", "label", "estimate", "train", "evaluate")
    # Faults (all off by default): a pipeline service that does not answer (reads give UNKNOWN,
    # submits and cancels raise), submissions accepted but never run, runs that never finish,
    # and a deployment that stops taking patches after ``patches_taken`` of them.
    pipeline_down: bool = False
    submits_lost: bool = False
    runs_stall: bool = False
    patches_taken: int | None = None
    patches: list[PatchDeployment] = field(default_factory=list)

    def observe(self, status: CycleStatus, t: float, outcomes: tuple = ()) -> Observations:
        names = ([status.current.run_name] if status.current else []) + list(status.pending_cancel)
        runs = []
        for name in names:
            run = self.runs.get(name)
            if self.pipeline_down:
                runs.append(RunObservation(RunState(name, RunPhase.unknown, error="ConnectionError: refused"), at(t)))
                continue
            if run is None:
                runs.append(run_obs(name, RunPhase.not_found, t))
                continue
            runs.append(run_obs(name, run["phase"], t, run.get("stage"),
                                self.result if run["phase"] is RunPhase.succeeded else None))
        dep = DeploymentReading(*self.deployment, at(t))
        return Observations(estimate=self.estimate_at(t), runs=tuple(runs), deployment=dep, outcomes=outcomes)

    def advance(self) -> None:
        """Every run still going moves one stage on; after the last stage it succeeds."""
        if self.runs_stall:
            for run in self.runs.values():
                if run["phase"] is RunPhase.pending:
                    run["phase"], run["stage"] = RunPhase.running, "train"
            return
        for run in self.runs.values():
            if run["phase"] in (RunPhase.pending, RunPhase.running):
                i = run["i"] = run["i"] + 1
                if i < len(self.stages):
                    run["phase"], run["stage"] = RunPhase.running, self.stages[i]
                else:
                    run["phase"], run["stage"] = RunPhase.succeeded, None

    def execute(self, actions: tuple, t: float) -> tuple:
        outcomes = []
        for action in actions:
            if self.pipeline_down and isinstance(action, (StartRun, CancelRun)):
                (self.submissions if isinstance(action, StartRun) else self.cancels).append(action.run_name)
                outcomes.append(ActionOutcome(action.key, False, at(t), "ConnectionError: refused"))
                continue
            if isinstance(action, StartRun):
                self.submissions.append(action.run_name)
                if not self.submits_lost:
                    self.runs.setdefault(action.run_name, {"phase": RunPhase.pending, "stage": None, "i": -1,
                                                           "params": action.params})
            elif isinstance(action, CancelRun):
                self.cancels.append(action.run_name)
                if action.run_name in self.runs and not self.runs[action.run_name]["phase"].terminal:
                    self.runs[action.run_name]["phase"] = RunPhase.canceled
            elif isinstance(action, PatchDeployment):
                self.patches.append(action)
                if self.patches_taken is None or len(self.patches) <= self.patches_taken:
                    self.deployment = (action.champion_version, action.canary_version, action.canary_share)
            elif isinstance(action, WriteRecord):
                self.records[action.object_key] = action.record
            elif isinstance(action, EmitEvent):
                self.events.append(action)
            outcomes.append(ActionOutcome(action.key, True, at(t)))
        return tuple(outcomes)
