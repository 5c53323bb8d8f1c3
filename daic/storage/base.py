"""The object-store interface every part of daic writes through.

Backends implement six byte-level operations; the typed helpers (JSON, numpy arrays) live here
once so both backends encode objects identically and a record written on a laptop reads back on a
cluster. Keys are '/'-separated relative paths (``models/mnist/v0001/card.json``).

Conditional writes (the compare-and-set the model registry's champion pointer needs) follow S3's
conditional PUT (RFC 9110 preconditions as S3 implements them for PutObject):
``put_bytes(key, data, if_none_match=True)`` creates the object only if it does not exist, and
``put_bytes(key, data, if_match=etag)`` replaces it only if its current ETag is ``etag`` (as
returned by ``get_with_etag`` or by an earlier put). Either raises ``PreconditionFailed`` and
writes nothing when the condition does not hold. ETags are opaque strings without quotes.
"""
from __future__ import annotations

import io
import json
import re
import zipfile
import zlib
from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from .errors import StorageError

#: The largest object any read takes whole (the largest daic writes, a version's references or an
#: operational part, are tens of MB); above it a read fails with ObjectTooLarge naming the key.
MAX_OBJECT_BYTES = 1 << 30

_KEY = re.compile(r"^[A-Za-z0-9._=@+-]+(/[A-Za-z0-9._=@+-]+)*$")


def check_key(key: str) -> str:
    """Reject keys that could escape the store root or collide across backends."""
    if not isinstance(key, str) or not _KEY.match(key) or any(p in (".", "..") for p in key.split("/")):
        raise ValueError(
            f"invalid object key {key!r}: use '/'-separated names of letters, digits and ._=@+- "
            "(no leading '/', no empty, '.' or '..' parts)"
        )
    return key


def check_prefix(prefix: str) -> str:
    """A listing prefix: empty (every key), or a key with at most one trailing '/'; the rules of
    :func:`check_key`, so that no prefix reaches outside the store (``../``) on any backend."""
    if not isinstance(prefix, str):
        raise ValueError(f"invalid key prefix {prefix!r}: not a string")
    if prefix:
        try:
            check_key(prefix[:-1] if prefix.endswith("/") else prefix)
        except ValueError:
            raise ValueError(
                f"invalid key prefix {prefix!r}: use '/'-separated names of letters, digits and ._=@+- "
                "(no leading '/', no empty, '.' or '..' parts), optionally ending in '/'") from None
    return prefix


class ObjectStore(ABC):
    """A flat key → bytes store with atomic writes and prefix listing."""

    url: str
    #: Reads of larger objects fail (ObjectTooLarge) before the body is taken: a store is a peer
    #: too, and one that serves a huge or endless object must not fill the reader's memory.
    max_object_bytes: int = MAX_OBJECT_BYTES

    def _too_large(self, key: str, size: int | None) -> "ObjectTooLarge":
        from .errors import ObjectTooLarge

        shown = f"{size:,} bytes" if size is not None else "more"
        return ObjectTooLarge(f"{self.url}: object {key!r} holds {shown}, more than the read bound of "
                              f"{self.max_object_bytes:,} bytes (max_object_bytes); not read")

    @abstractmethod
    def put_bytes(self, key: str, data: bytes, *, if_none_match: bool = False,
                  if_match: str | None = None) -> str:
        """Write ``data`` under ``key``; readers see the old object or the new one, never a part.

        Returns the new object's ETag. ``if_none_match=True``: only if ``key`` does not exist;
        ``if_match=etag``: only if the object's current ETag is ``etag``. Raises
        ``PreconditionFailed`` (nothing written) when the condition does not hold.
        """

    @abstractmethod
    def get_bytes(self, key: str) -> bytes:
        """Read ``key``; raises KeyNotFound when it does not exist."""

    @abstractmethod
    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        """Read ``key`` and the ETag of what was read (for a later ``put_bytes(if_match=...)``)."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """All keys that start with ``prefix`` (a plain string prefix), sorted."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key``; removing a missing key is not an error (S3 semantics)."""

    # Typed helpers -------------------------------------------------------------------------

    def put_json(self, key: str, obj: Any, *, if_none_match: bool = False, if_match: str | None = None) -> str:
        data = json.dumps(obj, indent=2, sort_keys=True, default=_json_default).encode()
        return self.put_bytes(key, data, if_none_match=if_none_match, if_match=if_match)

    def put_json_if_unchanged(self, key: str, obj: Any, etag: str | None) -> str:
        """Compare-and-set: write ``obj`` only if ``key`` is still the object read with ``etag``
        (``None``: only if it still does not exist); :class:`PreconditionFailed` otherwise."""
        return self.put_json(key, obj, if_none_match=etag is None, if_match=etag)

    def get_json(self, key: str) -> Any:
        return self._decode_json(key, self.get_bytes(key))

    def get_json_with_etag(self, key: str) -> tuple[Any, str]:
        raw, etag = self.get_with_etag(key)
        return self._decode_json(key, raw), etag

    def _decode_json(self, key: str, raw: bytes) -> Any:
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
        return self.arrays_from_bytes(key, self.get_bytes(key))

    def check_npz_bound(self, key: str, raw: bytes) -> None:
        """ObjectTooLarge naming ``key`` when the ``.npz`` archive ``raw`` declares more data,
        uncompressed, than the read bound: the archive's own size is bounded where it is read,
        but a few KiB of deflated zeros can declare gigabytes. Python's zipfile never inflates a
        member past its declared size, so the declared sizes bound what loading allocates. Not an
        archive at all: nothing to check here (loading it gives the caller's own error)."""
        try:
            declared = sum(info.file_size for info in zipfile.ZipFile(io.BytesIO(raw)).infolist())
        except (zipfile.BadZipFile, ValueError, OSError, EOFError):
            return
        if declared > self.max_object_bytes:
            from .errors import ObjectTooLarge

            raise ObjectTooLarge(f"{self.url}: object {key!r} (a .npz archive) declares {declared:,} bytes "
                                 f"uncompressed, more than the read bound of {self.max_object_bytes:,} bytes "
                                 "(max_object_bytes); not read")

    def arrays_from_bytes(self, key: str, raw: bytes) -> dict[str, np.ndarray]:
        """The arrays of the ``.npz`` archive ``raw`` read from ``key`` (see ``get_arrays``)."""
        self.check_npz_bound(key, raw)
        try:
            with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
                return {name: npz[name] for name in npz.files}
        except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
            # empty bytes: EOFError; a truncated zip: BadZipFile; a damaged member: zlib.error
            raise StorageError(f"{self.url}: object {key!r} is not a numpy .npz archive: "
                               f"{type(exc).__name__}: {exc}") from exc

    @staticmethod
    def _check_condition(if_none_match: bool, if_match: str | None) -> None:
        if if_none_match and if_match is not None:
            raise ValueError("put_bytes: give if_none_match or if_match, not both")
        if if_match is not None and (not isinstance(if_match, str) or not if_match.strip('"')):
            raise ValueError(f"put_bytes: if_match must be a non-empty ETag string, got {if_match!r}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"cannot encode {type(obj).__name__} as JSON")
