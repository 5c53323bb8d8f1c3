"""Where Ray Train persists checkpoints: under ``checkpoints/<model>/`` in the object store.

Ray Train writes checkpoints through a pyarrow filesystem. For a ``file://`` store that is the
store's directory itself; for an ``s3://`` store it is a pyarrow ``S3FileSystem`` built from the
same endpoint and credentials the store uses (MinIO, SeaweedFS and AWS alike), so checkpoints
land next to the registry and survive the Ray cluster.
"""
from __future__ import annotations

from typing import Any, Optional

from daic.storage import ObjectStore

PREFIX = "checkpoints"


def checkpoint_location(store: ObjectStore, model_name: str) -> tuple[str, Optional[Any]]:
    """(``RunConfig.storage_path``, ``RunConfig.storage_filesystem``) for ``store``."""
    url = store.url
    if url.startswith("file://"):
        return f"{url[len('file://'):].rstrip('/')}/{PREFIX}/{model_name}", None
    if url.startswith("s3://"):
        from pyarrow import fs

        settings = store.settings
        filesystem = fs.S3FileSystem(
            access_key=settings.access_key, secret_key=settings.secret_key,
            endpoint_override=settings.endpoint, scheme="https" if settings.secure else "http",
            region=settings.region,
        )
        prefix = f"{store.bucket}/{store.prefix}".rstrip("/")
        return f"{prefix}/{PREFIX}/{model_name}", filesystem
    raise ValueError(f"no checkpoint location for store {url!r}: expected file:// or s3://")
