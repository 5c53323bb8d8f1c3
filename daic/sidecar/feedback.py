"""Ground truth in the shape of Seldon's feedback API (pure).

A Seldon ``Feedback`` message is ``{"request": SeldonMessage, "response": SeldonMessage,
"reward": float, "truth": SeldonMessage}``, every field optional. The v1.18.2 executor
(``executor/api/rest/server.go`` ``feedback``, ``executor/predictor/predictor_process.go``
``Feedback``) takes the prediction it is about from the feedback call's ``Seldon-Puid`` header
(a fresh UUID when the client sent none), forwards the message to the model and, on every node
whose logger mode is ``response`` or ``all``, logs it as an ``io.seldon.serving.feedback`` event
with that puid as ``Ce-Requestid``. So the prediction being judged is named by the request id
alone: ``meta.puid`` in the body is never read (the executor never puts the puid there; a client's
own request body may carry any value). The predicted classes and the model version come from the
prediction the sidecar stored under that id, not from the body.

The truth is the labels, as ``data.ndarray``/``data.tensor`` of shape (N,) or (N, 1) class
indices, or (N, C) one-hot rows. Reward-only feedback (Seldon's usual shape for routers) carries
no labels: it is accepted and recorded as a reward.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

N_CLASSES = 10


@dataclass(frozen=True)
class GroundTruth:
    request_id: str
    labels: np.ndarray | None  # (N,) int64, None for reward-only feedback
    reward: float | None


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
    """Read one feedback message about the prediction ``request_id`` (the carrying event's
    ``Ce-Requestid``, or the ``Seldon-Puid`` header on the direct endpoint)."""
    if not isinstance(body, dict):
        raise ValueError(f"feedback must be a JSON object, got {type(body).__name__}")
    if not request_id:
        raise ValueError("feedback names no prediction: send it with the Seldon-Puid header of the prediction's "
                         "response")
    reward = body.get("reward")
    if reward is not None:
        if isinstance(reward, bool) or not isinstance(reward, (int, float)) or not np.isfinite(reward):
            raise ValueError(f"reward must be a finite number, got {reward!r}")
        reward = float(reward)
    if body.get("truth") is None:
        if reward is None:
            raise ValueError("feedback has neither 'truth' (the true labels) nor 'reward'")
        return GroundTruth(request_id=request_id, labels=None, reward=reward)
    labels = _labels(_matrix(body["truth"], "truth"), "truth.data")
    return GroundTruth(request_id=request_id, labels=labels, reward=reward)
