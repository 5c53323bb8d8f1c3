"""The object-store interface every part of daic writes through.

Backends implement five byte-level operations; the typed helpers (JSON, numpy arrays) live here
once so both backends encode objects identically and a record written on a laptop reads back on a
cluster. Keys are '/'-separated relative paths (``models/mnist/v0001/card.json``).
"""
from __future__ import annotations

import io
import json
import re
from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from .errors import StorageError

_KEY = re.compile(r"^[A-Za-z0-9._=@+-]+(/[A-Za-z0-9._=@+-]+)*$")


def check_key(key: str) -> str:
    """Reject keys that could escape the store root or collide across backends."""
    if not isinstance(key, str) or not _KEY.match(key) or any(p in (".", "..") for p in key.split("/")):
        raise ValueError(
            f"invalid object key {key!r}: use '/'-separated names of letters, digits and ._=@+- "
            "(no leading '/', no empty, '.' or '..' parts)"
        )
    return key


class ObjectStore(ABC):
    """A flat key → bytes store with atomic writes and prefix listing."""

    url: str

    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None:
        """Write ``data`` under ``key``; readers see the old object or the new one, never a part."""

    @abstractmethod
    def get_bytes(self, key: str) -> bytes:
        """Read ``key``; raises KeyNotFound when it does not exist."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """All keys that start with ``prefix`` (a plain string prefix), sorted."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key``; removing a missing key is not an error (S3 semantics)."""

    # Typed helpers -------------------------------------------------------------------------

    def put_json(self, key: str, obj: Any) -> None:
        self.put_bytes(key, json.dumps(obj, indent=2, sort_keys=True, default=_json_default).encode())

    def get_json(self, key: str) -> Any:
        raw = self.get_bytes(key)
        try:
            return json.loads(raw)
        except json.JSONDecodeError as exc:
            raise StorageError(f"{self.url}: object {key!r} is not valid JSON: {exc}") from exc

    def put_arrays(self, key: str, **arrays: np.ndarray) -> None:
        """Store named numpy arrays as one ``.npz`` object (compressed)."""
        if not arrays:
            raise ValueError("put_arrays needs at least one named array")
        buf = io.BytesIO()
        np.savez_compressed(buf, **{k: np.asarray(v) for k, v in arrays.items()})
        self.put_bytes(key, buf.getvalue())

    def get_arrays(self, key: str) -> dict[str, np.ndarray]:
        raw = self.get_bytes(key)
        try:
            with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
                return {name: npz[name] for name in npz.files}
        except (ValueError, OSError) as exc:
            raise StorageError(f"{self.url}: object {key!r} is not a numpy .npz archive: {exc}") from exc

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"cannot encode {type(obj).__name__} as JSON")
