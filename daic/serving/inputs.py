"""Decode and validate the images of a Seldon prediction request (pure; numpy only).

Both the model server (to reject bad requests with HTTP 400) and the sidecar (to read the inputs
back from the logged request event) use this one decoder, so what the model accepted is exactly
what the sidecar records. Accepted payloads, in the Seldon Core v1 protocol:

``{"data": {"ndarray": [...]}}`` or ``{"data": {"tensor": {"shape": [...], "values": [...]}}}``

with shape (N, 28, 28), (N, 1, 28, 28) or (N, 784), finite numbers in [0, 1] (pixel
intensities divided by 255, as in docs/CONTRACTS.md). Every error names the field and the value
that broke the rule.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

IMAGE_SHAPE = (28, 28)
N_PIXELS = IMAGE_SHAPE[0] * IMAGE_SHAPE[1]
#: Default upper bound on inputs per request: large enough for batch clients, small enough
#: that one request cannot hold a worker (or the sidecar's queue) for long.
DEFAULT_MAX_BATCH = 256
_UNSUPPORTED = ("jsonData", "strData", "binData", "customData")


class InputError(ValueError):
    """A request the model cannot serve; ``field`` names the offending part of the payload."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True)
class DecodedRequest:
    """The images of a request, float32 (N, 28, 28) in [0, 1], and how they were encoded
    (``"ndarray"`` or ``"tensor"``), so the response can answer in the same encoding."""

    images: np.ndarray
    encoding: str


def decode_request(payload: Any, max_batch: int = DEFAULT_MAX_BATCH) -> DecodedRequest:
    """Validate a Seldon JSON message and return its images; raises InputError."""
    if not isinstance(payload, dict):
        raise InputError("request", f"must be a JSON object (a Seldon message), got {type(payload).__name__}")
    for name in _UNSUPPORTED:
        if name in payload:
            raise InputError(name, "is not supported; send images as data.ndarray or data.tensor")
    meta = payload.get("meta")
    tags = meta.get("tags") if isinstance(meta, dict) else None
    if tags is not None and not isinstance(tags, dict):
        # echoed into the response (and by the filter into the model's request): a dict or nothing
        raise InputError("meta.tags", f"must be an object of tag names to values, got {type(tags).__name__}")
    data = payload.get("data")
    if not isinstance(data, dict):
        raise InputError("data", "is missing or not an object; send {\"data\": {\"ndarray\": [[...]]}}")
    if "ndarray" in data:
        field, encoding = "data.ndarray", "ndarray"
        array = _as_numeric(data["ndarray"], field)
    elif "tensor" in data:
        field, encoding = "data.tensor", "tensor"
        array = _tensor(data["tensor"])
    else:
        raise InputError("data", "needs an 'ndarray' or a 'tensor' field (tftensor is not supported)")
    images = _as_images(array, field, max_batch)
    return DecodedRequest(images=images, encoding=encoding)


def _as_numeric(value: Any, field: str) -> np.ndarray:
    if not isinstance(value, list):
        raise InputError(field, f"must be a (nested) list of numbers, got {type(value).__name__}")
    try:
        array = np.asarray(value)
    except ValueError as exc:  # numpy >= 1.24: inhomogeneous nesting
        raise InputError(field, f"is ragged (rows of different lengths): {exc}") from None
    if array.dtype.kind not in "iuf":
        what = {"O": "ragged or contains null/objects", "U": "contains strings", "b": "contains booleans",
                "S": "contains bytes"}.get(array.dtype.kind, f"has dtype {array.dtype}")
        raise InputError(field, f"must hold numbers only; it {what}")
    return array


def _tensor(tensor: Any) -> np.ndarray:
    if not isinstance(tensor, dict):
        raise InputError("data.tensor", f"must be an object with 'shape' and 'values', got {type(tensor).__name__}")
    shape = tensor.get("shape")
    if (not isinstance(shape, list) or not shape
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape)):
        raise InputError("data.tensor.shape", f"must be a non-empty list of non-negative integers, got {shape!r}")
    values = _as_numeric(tensor.get("values"), "data.tensor.values")
    if values.ndim != 1:
        raise InputError("data.tensor.values", f"must be a flat list, got {values.ndim} dimensions")
    expected = int(np.prod(shape))
    if values.size != expected:
        raise InputError(
            "data.tensor.values", f"has {values.size} numbers but shape {shape} needs {expected}"
        )
    return values.reshape(shape)


def _as_images(array: np.ndarray, field: str, max_batch: int) -> np.ndarray:
    shape = array.shape
    if array.ndim == 3 and shape[1:] == IMAGE_SHAPE:
        images = array
    elif array.ndim == 4 and shape[1:] == (1, *IMAGE_SHAPE):
        images = array[:, 0]
    elif array.ndim == 2 and shape[1] == N_PIXELS:
        images = array.reshape(-1, *IMAGE_SHAPE)
    else:
        raise InputError(
            field, f"has shape {list(shape)}; expected [N, 28, 28], [N, 1, 28, 28] or [N, 784]"
        )
    n = images.shape[0]
    if n == 0:
        raise InputError(field, "holds no inputs (batch size 0)")
    if n > max_batch:
        raise InputError(field, f"holds {n} inputs, more than the limit of {max_batch} per request (max_batch)")
    # Range checks before the float32 cast: 1e308 is finite but out of range, not "infinite".
    finite = np.isfinite(images)
    if not finite.all():
        index = int(np.flatnonzero(~finite.reshape(n, -1).all(axis=1))[0])
        raise InputError(field, f"input {index} contains NaN or infinite values")
    lo, hi = float(images.min()), float(images.max())
    if lo < 0.0 or hi > 1.0:
        flat = images.reshape(n, -1)
        index = int(np.flatnonzero((flat < 0).any(axis=1) | (flat > 1).any(axis=1))[0])
        raise InputError(
            field,
            f"values must lie in [0, 1] (pixel intensities / 255); input {index} has range "
            f"[{float(flat[index].min()):g}, {float(flat[index].max()):g}]",
        )
    return np.ascontiguousarray(images, dtype=np.float32)
