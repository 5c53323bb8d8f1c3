"""Ground truth in the shape of Seldon's feedback API (pure).

A Seldon ``Feedback`` message is ``{"request": SeldonMessage, "response": SeldonMessage,
"reward": float, "truth": SeldonMessage}``; the executor forwards it to the model and, with a
logger on the node, logs it as a ``io.seldon.serving.feedback`` CloudEvent. The truth is the
labels, as ``data.ndarray``/``data.tensor`` of shape (N,) or (N, 1) class indices, or (N, C)
one-hot rows. The prediction being judged is found by the response's ``meta.puid`` (what the
executor returned with it), else by the request id of the event carrying the feedback; the
predicted classes come from the feedback's ``response`` when it has one.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from daic.serving.protocol import TAG_VERSION

N_CLASSES = 10


@dataclass(frozen=True)
class GroundTruth:
    request_id: str
    labels: np.ndarray  # (N,) int64
    predictions: np.ndarray | None  # (N,) int64 from the feedback's response, if it has one
    model_version: str | None


def _matrix(message: Any, field: str) -> np.ndarray:
    if not isinstance(message, dict) or not isinstance(message.get("data"), dict):
        raise ValueError(f"{field} must be a Seldon message with a 'data' object")
    data = message["data"]
    try:
        if "ndarray" in data:
            return np.asarray(data["ndarray"], dtype=np.float64)
        if "tensor" in data and isinstance(data["tensor"], dict):
            t = data["tensor"]
            return np.asarray(t.get("values"), dtype=np.float64).reshape(t.get("shape"))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{field}.data is not a numeric array: {exc}") from None
    raise ValueError(f"{field}.data needs 'ndarray' or 'tensor'")


def _labels(values: np.ndarray, field: str) -> np.ndarray:
    if values.ndim == 2 and values.shape[1] == N_CLASSES:
        return values.argmax(axis=1).astype(np.int64)
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"{field} must be (N,) class indices or (N, {N_CLASSES}) one-hot rows, got shape "
                         f"{list(values.shape)}")
    if not np.all(np.isfinite(values)) or np.any(values != np.round(values)) or values.min() < 0 \
            or values.max() >= N_CLASSES:
        raise ValueError(f"{field} must hold integer classes in [0, {N_CLASSES})")
    return values.astype(np.int64)


def parse_feedback(body: Any, request_id: str) -> GroundTruth:
    """Read one feedback message; ``request_id`` is the carrying event's (fallback join key)."""
    if not isinstance(body, dict):
        raise ValueError(f"feedback must be a JSON object, got {type(body).__name__}")
    if "truth" not in body:
        raise ValueError("feedback has no 'truth': the sidecar needs the true labels")
    labels = _labels(_matrix(body["truth"], "truth"), "truth.data")
    response = body.get("response")
    predictions = None
    version = None
    if isinstance(response, dict) and response:
        meta = response.get("meta") or {}
        request_id = str(meta.get("puid") or request_id)
        version = (meta.get("tags") or {}).get(TAG_VERSION)
        if isinstance(response.get("data"), dict):
            probs = _matrix(response, "response")
            if probs.ndim != 2 or probs.shape[0] != labels.size:
                raise ValueError(f"response.data has shape {list(probs.shape)} but truth has {labels.size} labels")
            predictions = probs.argmax(axis=1).astype(np.int64)
    if not request_id:
        raise ValueError("feedback names no prediction: give response.meta.puid or a request id")
    return GroundTruth(request_id=request_id, labels=labels, predictions=predictions,
                       model_version=None if version is None else str(version))
