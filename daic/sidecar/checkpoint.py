"""The sidecar's checkpoint read back as a typed record before any of it is restored.

``SidecarService._checkpoint`` writes it and ``WriteAheadLog.commit`` stores it; the segments it
covers are deleted at that commit, so it is the only copy of the halves still waiting for their
partner, the ids already joined, the estimators' windows and the labels received. A checkpoint of
the wrong shape (a hand edit, a disk fault, another program's file) is therefore refused as a
whole, naming the file and the field, and the sidecar does not start: starting fresh would drop
those accepted events and re-record joined ones without anyone deciding it, while a person who
moves the file aside (the message says how) decides exactly that. Nothing is restored from a
checkpoint that does not parse, so the refusal leaves no half-restored state behind.

Floats are not required to be finite here: the sidecar itself writes NaN for inputs recorded
unscored (a feedback P(correct), a drift covariate), and the estimator state checks its own.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError

from daic.storage.parsed import CorruptObject, describe_errors

MOVE_ASIDE = "move it aside to start without the saved state (its waiting events and windows are then lost)"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WalEntry(_Strict):
    """One logged event as ``LoggedEvent.to_wal`` writes it."""

    k: StrictStr
    id: StrictStr
    rid: StrictStr
    t: float
    m: StrictStr = ""
    b: StrictStr


class ServingState(_Strict):
    champion: Optional[StrictStr] = None
    newest: dict[str, float] = Field(default_factory=dict)


class FeedbackState(_Strict):
    n: int = Field(ge=0)
    correct: int = Field(ge=0)
    p_correct: list[Optional[float]]
    is_correct: list[bool]
    covariates: list[list[Optional[float]]] = Field(default_factory=list)


#: rid, version, predictions, P(correct) (None: unscored), covariates (None: none)
RecentEntry = tuple[StrictStr, StrictStr, list[int], list[Optional[float]], Optional[list[list[Optional[float]]]]]


class Checkpoint(BaseModel):
    """What ``SidecarService._checkpoint`` writes (plus the log's ``committed_segment``)."""

    model_config = ConfigDict(extra="ignore")

    # Every checkpoint ever written has these (a missing one would restore as empty, losing it
    # silently); the later fields are optional, read as nothing from an older checkpoint.
    committed_segment: int
    pending: list[WalEntry]
    completed: list[StrictStr]
    estimators: dict[str, dict[str, Any]]
    feedback: dict[str, FeedbackState]
    serving: Optional[ServingState] = None
    widths: dict[str, tuple[int, int]] = Field(default_factory=dict)
    recent: list[RecentEntry] = Field(default_factory=list)


def parse_checkpoint(path: Path, raw: Any) -> Checkpoint:
    """``raw`` (the JSON read from ``path``) as a Checkpoint; CorruptObject naming the file, the
    field and the way out otherwise."""
    try:
        return Checkpoint.model_validate(raw)
    except ValidationError as exc:
        raise CorruptObject(f"{path}: not a valid sidecar checkpoint: {describe_errors(exc)}; {MOVE_ASIDE}") from None


def corrupt_part(path: Path, field: str, why: Exception) -> CorruptObject:
    """The refusal for a part that parsed but does not restore (an estimator's window)."""
    return CorruptObject(f"{path}: not a valid sidecar checkpoint: {field}: {why}; {MOVE_ASIDE}")
