"""``s3://bucket/prefix`` backend, through the ``minio`` client.

Works with MinIO and SeaweedFS (the object store Kubeflow Pipelines >= 2.15 bundles) and any S3
endpoint. Endpoint and credentials come from the environment, MinIO's names first, AWS's second:

====================  =============================================
``MINIO_ENDPOINT``    or ``AWS_ENDPOINT_URL``; ``http://host:port`` or ``host:port``
``MINIO_ACCESS_KEY``  or ``AWS_ACCESS_KEY_ID``
``MINIO_SECRET_KEY``  or ``AWS_SECRET_ACCESS_KEY``
``MINIO_SECURE``      ``true``/``false`` when the endpoint has no scheme (default true)
``MINIO_REGION``      or ``AWS_REGION`` (default ``us-east-1``)
====================  =============================================

A single S3 PUT is atomic (readers never see part of an object), so writes need no extra care.
"""
from __future__ import annotations

import io
import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlparse

import urllib3
from minio import Minio
from minio.error import S3Error

from .base import ObjectStore, check_key
from .errors import KeyNotFound, StorageError

_MISSING_KEY_CODES = {"NoSuchKey", "NoSuchObject"}
_AUTH_CODES = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken"}


def _first(env: Mapping[str, str], *names: str) -> str | None:
    for name in names:
        if env.get(name):
            return env[name]
    return None


@dataclass(frozen=True)
class S3Settings:
    """Where and as whom to reach an S3 endpoint; validated on construction."""

    endpoint: str  # host:port, no scheme
    access_key: str
    secret_key: str
    secure: bool = True
    region: str = "us-east-1"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "S3Settings":
        env = os.environ if env is None else env
        raw = _first(env, "MINIO_ENDPOINT", "AWS_ENDPOINT_URL")
        if not raw:
            raise StorageError(
                "s3:// store needs an endpoint: set MINIO_ENDPOINT (or AWS_ENDPOINT_URL), "
                "e.g. MINIO_ENDPOINT=http://127.0.0.1:9000"
            )
        access = _first(env, "MINIO_ACCESS_KEY", "AWS_ACCESS_KEY_ID")
        secret = _first(env, "MINIO_SECRET_KEY", "AWS_SECRET_ACCESS_KEY")
        if not access or not secret:
            raise StorageError(
                "s3:// store needs credentials: set MINIO_ACCESS_KEY and MINIO_SECRET_KEY "
                "(or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
            )
        if "://" in raw:
            parsed = urlparse(raw)
            if parsed.scheme not in ("http", "https") or not parsed.netloc:
                raise StorageError(f"MINIO_ENDPOINT={raw!r}: expected http://host:port or https://host:port")
            endpoint, secure = parsed.netloc, parsed.scheme == "https"
        else:
            flag = env.get("MINIO_SECURE", "true").strip().lower()
            if flag not in ("true", "false", "1", "0"):
                raise StorageError(f"MINIO_SECURE={flag!r}: expected true or false")
            endpoint, secure = raw, flag in ("true", "1")
        region = _first(env, "MINIO_REGION", "AWS_REGION") or "us-east-1"
        return cls(endpoint=endpoint, access_key=access, secret_key=secret, secure=secure, region=region)


class S3Store(ObjectStore):
    """Objects under ``prefix`` in one bucket."""

    def __init__(self, bucket: str, prefix: str = "", settings: S3Settings | None = None,
                 create_bucket: bool = False) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.settings = settings or S3Settings.from_env()
        self.url = f"s3://{bucket}/{self.prefix}".rstrip("/")
        # Few, quick retries: an unreachable endpoint must fail in seconds, not minutes.
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=3.0, read=60.0),
            retries=urllib3.Retry(total=2, backoff_factor=0.2, status_forcelist=(500, 502, 503, 504)),
            maxsize=16,
        )
        s = self.settings
        self.client = Minio(s.endpoint, access_key=s.access_key, secret_key=s.secret_key,
                            secure=s.secure, region=s.region, http_client=http)
        self._check_bucket(create_bucket)

    # Error translation ------------------------------------------------------------------------

    def _fail(self, action: str, key: str | None, exc: Exception) -> StorageError:
        where = f"{self.url} (endpoint {self.settings.endpoint})"
        what = f"{action} {key!r}" if key else action
        if isinstance(exc, S3Error):
            if exc.code in _MISSING_KEY_CODES:
                return KeyNotFound(f"{where}: no object {key!r}")
            if exc.code == "NoSuchBucket":
                return StorageError(f"{where}: bucket {self.bucket!r} does not exist")
            if exc.code in _AUTH_CODES:
                return StorageError(f"{where}: credentials rejected ({exc.code}) while trying to {what}")
            return StorageError(f"{where}: cannot {what}: {exc.code}: {exc.message}")
        if isinstance(exc, (urllib3.exceptions.HTTPError, OSError)):
            return StorageError(f"{where}: endpoint unreachable while trying to {what}: {exc}")
        return StorageError(f"{where}: cannot {what}: {exc}")

    def _check_bucket(self, create: bool) -> None:
        try:
            if self.client.bucket_exists(self.bucket):
                return
            if create:
                self.client.make_bucket(self.bucket)
                return
        except Exception as exc:  # noqa: BLE001 - translated to a StorageError naming the URL
            raise self._fail("open the bucket", None, exc) from exc
        raise StorageError(f"{self.url} (endpoint {self.settings.endpoint}): bucket {self.bucket!r} does not exist")

    def _name(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    # Operations ------------------------------------------------------------------------------

    def put_bytes(self, key: str, data: bytes) -> None:
        name = self._name(key)
        try:
            self.client.put_object(self.bucket, name, io.BytesIO(data), length=len(data))
        except Exception as exc:  # noqa: BLE001
            raise self._fail("write", key, exc) from exc

    def get_bytes(self, key: str) -> bytes:
        name = self._name(key)
        try:
            resp = self.client.get_object(self.bucket, name)
        except Exception as exc:  # noqa: BLE001
            raise self._fail("read", key, exc) from exc
        try:
            return resp.read()
        finally:
            resp.close()
            resp.release_conn()

    def exists(self, key: str) -> bool:
        name = self._name(key)
        try:
            self.client.stat_object(self.bucket, name)
            return True
        except S3Error as exc:
            if exc.code in _MISSING_KEY_CODES or exc.code == "NoSuchKey":
                return False
            raise self._fail("stat", key, exc) from exc
        except Exception as exc:  # noqa: BLE001
            raise self._fail("stat", key, exc) from exc

    def list(self, prefix: str = "") -> list[str]:
        full = f"{self.prefix}/{prefix}" if self.prefix else prefix
        strip = len(self.prefix) + 1 if self.prefix else 0
        try:
            names = [o.object_name for o in self.client.list_objects(self.bucket, prefix=full, recursive=True)]
        except Exception as exc:  # noqa: BLE001
            raise self._fail("list", prefix or "<all>", exc) from exc
        return sorted(n[strip:] for n in names if not n.endswith("/"))

    def delete(self, key: str) -> None:
        name = self._name(key)
        try:
            self.client.remove_object(self.bucket, name)
        except Exception as exc:  # noqa: BLE001
            raise self._fail("delete", key, exc) from exc
