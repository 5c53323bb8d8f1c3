"""Operational records: what the sidecar appends to the object store for sampling to pick later.

One object per flushed batch, ``operational/<deployment>/batch-<UTC time>-<seq>.npz``, with one
row per *input* (a request with a batch of 8 images gives 8 rows):

================  ==============  ===================================================
``ids``           (N,) str        ``<request id>:<row>``: unique per input
``request_ids``   (N,) str        the Seldon puid the input came with
``times``         (N,) float64    Unix seconds when the sidecar accepted the prediction
``inputs``        (N, 28, 28) f4  the images, in [0, 1]
``predictions``   (N,) int64      argmax of ``probs``
``probs``         (N, 10) f4      the served model's softmax
``embeddings``    (N, D) f4       its penultimate activations
``shadow_probs``  (N, 10) f4      the shadow model's softmax
``p_correct``     (N,) f4         the pseudo-oracles' combined P(correct)
``drift``         (N,) f4         reference percentile of the input's latent distance
``model_version`` (N,) str        the version that served it
================  ==============  ===================================================

``<UTC time>`` is the time of the batch's first row (``20250101T120000123456Z``) and ``<seq>`` the
sidecar's write-ahead-log segment, so keys sort by time and never collide. The sidecar writes at
least once (a crash between a batch write and its checkpoint writes those rows again after the
replay), so readers drop repeated ``ids`` (keeping the first).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np

from daic.storage import ObjectStore

PREFIX = "operational"
COLUMNS: tuple[str, ...] = ("ids", "request_ids", "times", "inputs", "predictions", "probs", "embeddings",
                            "shadow_probs", "p_correct", "drift", "model_version")
_DTYPES = {"ids": str, "request_ids": str, "times": np.float64, "inputs": np.float32,
           "predictions": np.int64, "probs": np.float32, "embeddings": np.float32,
           "shadow_probs": np.float32, "p_correct": np.float32, "drift": np.float32, "model_version": str}


def check_deployment(deployment: str) -> str:
    if not isinstance(deployment, str) or not deployment or "/" in deployment or deployment in (".", ".."):
        raise ValueError(f"deployment must be a non-empty name without '/', got {deployment!r}")
    return deployment


def batch_key(deployment: str, first_time: float, seq: int) -> str:
    stamp = datetime.fromtimestamp(first_time, tz=timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    return f"{PREFIX}/{check_deployment(deployment)}/batch-{stamp}-{seq:08d}.npz"


@dataclass(frozen=True)
class OperationalRecords:
    """Rows of the table in the module docstring, as parallel arrays."""

    ids: np.ndarray
    request_ids: np.ndarray
    times: np.ndarray
    inputs: np.ndarray
    predictions: np.ndarray
    probs: np.ndarray
    embeddings: np.ndarray
    shadow_probs: np.ndarray
    p_correct: np.ndarray
    drift: np.ndarray
    model_version: np.ndarray

    def __post_init__(self) -> None:
        n = None
        for name in COLUMNS:
            arr = np.asarray(getattr(self, name))
            if arr.dtype.kind == "O" or _DTYPES[name] is str:
                arr = arr.astype(str)
            else:
                arr = arr.astype(_DTYPES[name], copy=False)
            if n is None:
                n = arr.shape[0] if arr.ndim else -1
            if arr.ndim == 0 or arr.shape[0] != n:
                raise ValueError(f"operational records: column {name!r} has {arr.shape[0] if arr.ndim else 0} rows, "
                                 f"expected {n}")
            object.__setattr__(self, name, arr)
        if self.inputs.shape[1:] != (28, 28):
            raise ValueError(f"inputs must be (N, 28, 28), got {self.inputs.shape}")

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in COLUMNS}

    @classmethod
    def concat(cls, parts: list["OperationalRecords"]) -> "OperationalRecords":
        if not parts:
            return cls.empty()
        dims = {p.embeddings.shape[1] for p in parts if len(p)}
        if len(dims) > 1:
            raise ValueError(f"operational records mix embedding sizes {sorted(dims)} (different model "
                             "architectures); read them per model_version")
        return cls(**{name: np.concatenate([getattr(p, name) for p in parts]) for name in COLUMNS})

    @classmethod
    def empty(cls, embedding_dim: int = 0, n_classes: int = 10) -> "OperationalRecords":
        return cls(ids=np.zeros(0, str), request_ids=np.zeros(0, str), times=np.zeros(0),
                   inputs=np.zeros((0, 28, 28), np.float32), predictions=np.zeros(0, np.int64),
                   probs=np.zeros((0, n_classes), np.float32),
                   embeddings=np.zeros((0, embedding_dim), np.float32),
                   shadow_probs=np.zeros((0, n_classes), np.float32), p_correct=np.zeros(0, np.float32),
                   drift=np.zeros(0, np.float32), model_version=np.zeros(0, str))

    def select(self, index) -> "OperationalRecords":
        return OperationalRecords(**{name: getattr(self, name)[index] for name in COLUMNS})



def write_batch(store: ObjectStore, deployment: str, records: OperationalRecords, seq: int) -> str:
    """Store one batch; returns its key. Empty batches are an error (nothing to write)."""
    if not len(records):
        raise ValueError("refusing to write an empty operational batch")
    key = batch_key(deployment, float(records.times.min()), seq)
    store.put_arrays(key, **records.to_arrays())
    return key


def read_operational(store: ObjectStore, deployment: str, since: float | None = None,
                     until: float | None = None) -> OperationalRecords:
    """Every record of ``deployment`` with ``since <= time < until`` (None: unbounded), ordered by
    time, repeated ids dropped. An empty result is returned as empty arrays, not an error."""
    check_deployment(deployment)
    if since is not None and until is not None and until <= since:
        raise ValueError(f"until ({until}) must be after since ({since})")
    prefix = f"{PREFIX}/{deployment}/"
    parts = []
    for key in store.list(prefix):
        name = key[len(prefix):]
        if "/" in name or not name.startswith("batch-") or not name.endswith(".npz"):
            continue
        arrays = store.get_arrays(key)
        missing = [c for c in COLUMNS if c not in arrays]
        if missing:
            raise ValueError(f"operational batch {key!r} lacks {', '.join(missing)}")
        batch = OperationalRecords(**{c: arrays[c] for c in COLUMNS})
        keep = np.ones(len(batch), bool)
        if since is not None:
            keep &= batch.times >= since
        if until is not None:
            keep &= batch.times < until
        if keep.any():
            parts.append(batch.select(keep))
    if not parts:
        return OperationalRecords.empty()
    records = OperationalRecords.concat(parts)
    order = np.argsort(records.times, kind="stable")
    records = records.select(order)
    _, first = np.unique(records.ids, return_index=True)
    return records.select(np.sort(first))
