"""Turns the local controller's status file into timeline events (trigger, retrain, promotion...)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from daic.report.timeline import TimelineEvent


@dataclass
class ControllerWatch:
    status_path: Path
    seen: set[tuple[str, str]] = field(default_factory=set)
    finished: list[dict] = field(default_factory=list)
    phase: str = "starting"
    stage: str | None = None
    serving: str | None = None  # the filter in service at the last poll

    def read(self) -> dict:
        try:
            return json.loads(self.status_path.read_text()).get("status") or {}
        except (FileNotFoundError, ValueError):
            return {}  # not written yet, or (never, with atomic writes) mid-write

    def poll(self, step: int) -> list[TimelineEvent]:
        """New events since the last poll, stamped with the traffic step they were noticed at."""
        status = self.read()
        self.phase, self.stage = status.get("phase", self.phase), status.get("stage")
        events: list[TimelineEvent] = []

        def once(kind: str, cycle: str, detail: str = "") -> None:
            if (kind, cycle) not in self.seen:
                self.seen.add((kind, cycle))
                events.append(TimelineEvent(step=step, kind=kind, cycle=cycle, detail=detail))

        current = status.get("current")
        if current:
            run = current["runName"]
            once("trigger", run, current.get("triggerReason", ""))
            result = current.get("result") or {}
            if result.get("offlineAccuracy") is not None or result.get("offline_accuracy") is not None:
                once("assessment", run)
            if self.stage in ("training", "evaluating"):
                once("retrain", run)
            remedy = current.get("remedy") or {}
            if remedy.get("decision"):
                once("remedy", run, f"filter {remedy['decision']}: {remedy.get('reason', '')}")
            if remedy.get("outcome") == "deployed":
                once("filter-in", run, f"filter {remedy.get('filterVersion')} in front of the champion")
        for summary in status.get("history") or []:
            run = summary["runName"]
            once("trigger", run, summary.get("triggerReason", ""))
            if summary.get("offlineAccuracy") is not None:
                once("assessment", run)
            if summary.get("remedy"):
                once("remedy", run, f"filter {summary['remedy']}: {summary.get('remedyReason', '')}")
            if summary.get("filterOutcome") in ("deployed", "removed-at-promotion"):
                once("filter-in", run, f"filter {summary.get('filterVersion')} in front of the champion")
            if summary.get("filterOutcome") == "removed-at-promotion":
                once("filter-out", run, f"filter {summary.get('filterVersion')} removed: the promoted model "
                                        "replaced the champion it was adapted to")
            kind = "promotion" if summary.get("decision") == "promoted" else "refusal"
            if (kind, run) not in self.seen:
                self.finished.append(summary)
            once(kind, run, f"{summary.get('decision')}: {summary.get('message', '')}")
        served = status.get("filter")
        if served:
            self.serving = served.get("version")
        elif self.serving and status:
            key = ("filter-out", f"filter {self.serving}")
            if key not in self.seen and ("filter-out", self._cycle_of(status, self.serving)) not in self.seen:
                self.seen.add(key)
                events.append(TimelineEvent(step=step, kind="filter-out", detail=f"filter {self.serving} removed"))
            self.serving = None
        return events

    @staticmethod
    def _cycle_of(status: dict, version: str) -> str | None:
        """The run whose history entry put ``version`` in (its filter-out event may be out already)."""
        for summary in status.get("history") or []:
            if summary.get("filterVersion") == version:
                return summary["runName"]
        return None

    @property
    def describe(self) -> str:
        return self.phase + (f"/{self.stage}" if self.stage else "")
