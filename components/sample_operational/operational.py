"""Read the operational records the sidecar logged for a deployment, within a time window.

Records are ``operational/<deployment>/batch-*.npz`` with per-input arrays ``ids``, ``times``
(Unix seconds), ``inputs`` (N, 28, 28), ``predictions``, ``probs``, ``p_correct`` (and
``embeddings``, ``shadow_probs``, ``drift``, ``model_version``, which sampling does not need).
This reader keeps only what sampling and labeling use, so it does not load more than that.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np

from daic.storage import ObjectStore

REQUIRED = ("ids", "times", "inputs", "predictions", "p_correct")


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


@dataclass(frozen=True)
class OperationalWindow:
    """The logged inputs of one deployment in [since, until), in logging order."""

    ids: np.ndarray
    times: np.ndarray
    inputs: np.ndarray
    predictions: np.ndarray
    p_correct: np.ndarray
    batches: tuple[str, ...]

    @property
    def size(self) -> int:
        return int(self.ids.shape[0])


def read_window(store: ObjectStore, deployment: str, since: float | None = None,
                until: float | None = None) -> OperationalWindow:
    """Concatenate the deployment's batches, keeping inputs with since <= time < until.

    Raises ValueError when the deployment logged nothing in the window (there is nothing to
    assess), naming the prefix and the window.
    """
    if not deployment or "/" in deployment:
        raise ValueError(f"deployment must be a non-empty name without '/', got {deployment!r}")
    if since is not None and until is not None and until <= since:
        raise ValueError(f"until ({until}) must be after since ({since})")
    prefix = f"operational/{deployment}/"
    keys = [k for k in store.list(prefix) if k.rsplit("/", 1)[-1].startswith("batch-") and k.endswith(".npz")]
    parts: dict[str, list[np.ndarray]] = {name: [] for name in REQUIRED}
    used = []
    for k in keys:
        arrays = store.get_arrays(k)
        missing = [name for name in REQUIRED if name not in arrays]
        if missing:
            raise ValueError(f"operational record {k!r} lacks {', '.join(missing)}")
        times = np.asarray(arrays["times"], dtype=np.float64)
        keep = np.ones(times.shape, bool)
        if since is not None:
            keep &= times >= since
        if until is not None:
            keep &= times < until
        if not keep.any():
            continue
        used.append(k)
        for name in REQUIRED:
            parts[name].append(np.asarray(arrays[name])[keep])
    if not used:
        raise ValueError(
            f"no operational inputs under {store.url}/{prefix} in the window "
            f"[{since if since is not None else '-inf'}, {until if until is not None else '+inf'})"
        )
    return OperationalWindow(
        ids=np.concatenate(parts["ids"]).astype(str),
        times=np.concatenate(parts["times"]).astype(np.float64),
        inputs=np.concatenate(parts["inputs"]).astype(np.float32),
        predictions=np.concatenate(parts["predictions"]).astype(np.int64),
        p_correct=np.concatenate(parts["p_correct"]).astype(np.float64),
        batches=tuple(used),
    )
