"""Object store: one interface, a backend chosen by URL.

``file:///abs/path``  local directory (the embedded default: ``$PWD/.daic/store``)
``s3://bucket/prefix`` any S3 endpoint (MinIO, SeaweedFS, AWS) via the minio client

``open_store()`` with no argument reads ``DAIC_STORE``, else uses the embedded default.
Both backends offer conditional writes (``put_bytes(..., if_none_match=True)`` /
``put_bytes(..., if_match=etag)``, raising ``PreconditionFailed``); every s3:// call is bounded by
timeouts and a total deadline (daic.storage.s3_store).
"""
from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

from .base import ObjectStore, check_key, check_prefix
from .errors import KeyNotFound, ObjectTooLarge, PreconditionFailed, StorageError

DEFAULT_DIR = Path(".daic") / "store"


def default_url() -> str:
    return os.environ.get("DAIC_STORE") or f"file://{(Path.cwd() / DEFAULT_DIR).resolve()}"


def check_url(url: str) -> tuple[str, str, str]:
    """(scheme, bucket or host, path) of a store URL that :func:`open_store` can open; a StorageError
    naming the URL otherwise. Nothing is opened, so a command can check the URL before its work."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise StorageError(f"{url}: file:// URLs must be absolute (file:///path), got host {parsed.netloc!r}")
        if not parsed.path:
            raise StorageError(f"{url}: file:// URL has no path")
    elif parsed.scheme == "s3":
        if not parsed.netloc:
            raise StorageError(f"{url}: s3:// URL needs a bucket (s3://bucket/prefix)")
    else:
        raise StorageError(f"{url}: unsupported store URL scheme {parsed.scheme!r}; use file:///path or s3://bucket/prefix")
    if "\x00" in url:
        raise StorageError(f"{url!r}: a store URL cannot hold a NUL byte")
    return parsed.scheme, parsed.netloc, parsed.path


def open_store(url: str | None = None, *, create_bucket: bool = False) -> ObjectStore:
    """Open the store at ``url`` (see module docstring); errors name the URL."""
    url = url or default_url()
    scheme, location, path = check_url(url)
    if scheme == "file":
        from .file_store import FileStore

        return FileStore(path)
    from .s3_store import S3Store

    return S3Store(location, path, create_bucket=create_bucket)


__all__ = ["ObjectStore", "StorageError", "KeyNotFound", "ObjectTooLarge", "PreconditionFailed", "open_store", "check_url", "default_url",
           "check_key", "check_prefix"]
