"""The operational window to sample from, and the time parameters that bound it.

Records are the sidecar's (:mod:`daic.sidecar.records`: ``operational/<deployment>/batch-*.npz``,
one row per input with ids, times, inputs, predictions, probabilities, P(correct) ...).
"""
from __future__ import annotations

from datetime import datetime, timezone

import numpy as np

from daic.sidecar.records import OperationalRecords, read_operational
from daic.storage import ObjectStore


def parse_time(value: str | float | None, field: str) -> float | None:
    """'' / None -> unbounded; a number (Unix seconds) or an ISO-8601 time ('2025-01-01T12:00:00Z')."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{field} must be Unix seconds or an ISO-8601 time, got {value!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


def read_window(store: ObjectStore, deployment: str, since: float | None = None,
                until: float | None = None) -> OperationalRecords:
    """The deployment's records with since <= time < until (the sidecar's reader).

    Raises ValueError when the deployment logged nothing in the window (there is nothing to
    assess), naming the prefix and the window.
    """
    records = read_operational(store, deployment, since, until)
    if not len(records):
        raise ValueError(
            f"no operational inputs under {store.url}/operational/{deployment}/ in the window "
            f"[{since if since is not None else '-inf'}, {until if until is not None else '+inf'})"
        )
    return records
