"""The run timeline: what the online side said, and the truth where it is known.

The demo (and any poller of the sidecar's ``/estimate``) appends one point per step; the truth is
known only when traffic comes from a benchmark scenario. Stored at ``runs/<run>/timeline.json``.
"""
from __future__ import annotations

import time
from typing import Literal

from pydantic import BaseModel, Field

from daic.storage import KeyNotFound, ObjectStore

#: ``remedy``: the operator's filter decision (issue 21; detail: the decision and its reason);
#: ``filter-in`` / ``filter-out``: the input filter put in front of the champion / taken out.
EventKind = Literal["trigger", "assessment", "retrain", "promotion", "refusal", "recalibration", "remedy",
                    "filter-in", "filter-out"]


class TimelinePoint(BaseModel):
    step: int
    time: float = Field(default_factory=time.time)
    true_accuracy: float | None = None
    estimate: float | None = None
    lower: float | None = None
    upper: float | None = None
    drift: float | None = None
    trusted: bool = True
    model_version: str | None = None


class TimelineEvent(BaseModel):
    step: int
    kind: EventKind
    detail: str = ""
    cycle: str | None = None


class Timeline(BaseModel):
    run: str
    deployment: str = "mnist"
    scenario: str | None = None
    points: list[TimelinePoint] = Field(default_factory=list)
    events: list[TimelineEvent] = Field(default_factory=list)

    @staticmethod
    def key(run: str) -> str:
        return f"runs/{run}/timeline.json"

    def save(self, store: ObjectStore) -> None:
        store.put_json(self.key(self.run), self.model_dump())

    @classmethod
    def load(cls, store: ObjectStore, run: str) -> "Timeline":
        from daic.storage.parsed import read_object

        return read_object(store, cls.key(run), cls)  # CorruptObject naming the key when not a Timeline

    @classmethod
    def latest_run(cls, store: ObjectStore) -> str:
        runs = sorted({k.split("/")[1] for k in store.list("runs/") if k.endswith("/timeline.json")})
        if not runs:
            raise KeyNotFound(f"{store.url}: no run timeline under runs/ (run `daic demo` first)")
        return runs[-1]
