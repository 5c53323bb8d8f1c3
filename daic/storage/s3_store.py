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

Every call is bounded (:class:`StoreTimeouts`, from the environment):

================================  ======  ==============================================
``DAIC_STORE_CONNECT_TIMEOUT``    5 s     TCP connect, per attempt
``DAIC_STORE_READ_TIMEOUT``       10 s    each wait for the server's bytes, per attempt
``DAIC_STORE_DEADLINE``           20 s    an operation without progress, retries included
``DAIC_STORE_RETRIES``            2       extra attempts (see below), inside the deadline
================================  ======  ==============================================

The deadline starts with the operation and is renewed by every answered request, so an operation
of many requests (a paged listing, a multipart upload) or a large body may take longer while the
server answers, but one that gets no answer fails: when the deadline passes the call raises
``StorageError`` naming the URL and endpoint, so a frozen or unreachable server costs a caller at
most about ``DAIC_STORE_DEADLINE`` plus one read timeout (30 s by default). A body stalled midway
fails at the read timeout.
Retries (exponential backoff from 0.2 s) are made for failures that cannot have changed anything:
connection refused or timed out, 502/503/504, and for reads (GET/HEAD) also read timeouts,
dropped connections and 500. A PUT whose answer timed out is not re-sent (a conditional PUT
re-sent after it was applied would report a false conflict).

A single S3 PUT is atomic (readers never see part of an object). Conditional writes send S3's
``If-None-Match: *`` / ``If-Match: "<etag>"`` PutObject headers; a 412 (or AWS's 409
ConditionalRequestConflict) becomes ``PreconditionFailed``. Before its first conditional write a
store checks once per endpoint that the server honours them (a second create-if-absent of a probe
object must be refused), and raises ``StorageError`` if it does not, rather than racing silently:
SeaweedFS >= 3.80 (4.48 is tested), MinIO and AWS S3 all honour them (docs/cluster.md).
"""
from __future__ import annotations

import io
import os
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import urlparse

import urllib3
from minio import Minio
from minio.error import S3Error

from .base import ObjectStore, check_key, check_prefix
from .errors import KeyNotFound, ObjectTooLarge, PreconditionFailed, StorageError

_MISSING_KEY_CODES = {"NoSuchKey", "NoSuchObject"}
_PRECONDITION_CODES = {"PreconditionFailed", "ConditionalRequestConflict"}
_AUTH_CODES = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken"}


def _first(env: Mapping[str, str], *names: str) -> str | None:
    for name in names:
        if env.get(name):
            return env[name]
    return None


def _positive(env: Mapping[str, str], name: str, default: float, *, integer: bool = False) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        raise StorageError(f"{name}={raw!r}: expected a {'whole ' if integer else ''}number") from None
    if value < 0 or (not integer and value == 0):
        raise StorageError(f"{name}={raw!r}: must be {'>= 0' if integer else '> 0'}")
    return value


@dataclass(frozen=True)
class StoreTimeouts:
    """Bounds on every S3 call (see the module docstring for the variables and what each does)."""

    connect_s: float = 5.0
    read_s: float = 10.0
    deadline_s: float = 20.0
    retries: int = 2
    backoff_s: float = 0.2

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "StoreTimeouts":
        env = os.environ if env is None else env
        return cls(connect_s=_positive(env, "DAIC_STORE_CONNECT_TIMEOUT", cls.connect_s),
                   read_s=_positive(env, "DAIC_STORE_READ_TIMEOUT", cls.read_s),
                   deadline_s=_positive(env, "DAIC_STORE_DEADLINE", cls.deadline_s),
                   retries=int(_positive(env, "DAIC_STORE_RETRIES", cls.retries, integer=True)))


class DeadlineExceeded(urllib3.exceptions.TimeoutError):
    """The operation's total deadline passed (raised between or instead of attempts)."""


_IDEMPOTENT = frozenset({"GET", "HEAD"})
_NOT_APPLIED = (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError)
_READ_FAILURES = (urllib3.exceptions.ReadTimeoutError, urllib3.exceptions.ProtocolError)


class BoundedHTTP(urllib3.PoolManager):
    """A urllib3 pool whose every request runs under the current operation's deadline.

    ``with http.operation():`` starts a deadline for the calling thread; each attempt then gets
    ``connect``/``read`` timeouts cut to the time left, and retries (our own loop; urllib3's are off)
    stop when it runs out; an answered request renews it. A request made outside ``operation()``
    gets a deadline of its own.
    """

    def __init__(self, timeouts: StoreTimeouts, **kw) -> None:
        super().__init__(maxsize=16, **kw)
        self.timeouts = timeouts
        self._local = threading.local()

    @contextmanager
    def operation(self) -> Iterator[None]:
        outer = getattr(self._local, "deadline", None)
        if outer is None:
            self._local.deadline = time.monotonic() + self.timeouts.deadline_s
        try:
            yield
        finally:
            if outer is None:
                self._local.deadline = None

    def urlopen(self, method, url, redirect=True, **kw):  # noqa: D102 - urllib3's signature
        t = self.timeouts
        deadline = getattr(self._local, "deadline", None) or time.monotonic() + t.deadline_s
        attempt = 0
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise DeadlineExceeded(f"no answer within the {t.deadline_s:g} s deadline "
                                       f"(DAIC_STORE_DEADLINE) after {attempt} attempt(s)")
            kw["timeout"] = urllib3.Timeout(connect=min(t.connect_s, left), read=min(t.read_s, left))
            kw["retries"] = False
            retry = False
            try:
                resp = super().urlopen(method, url, redirect=False, **kw)
            except _NOT_APPLIED:
                if attempt >= t.retries:
                    raise
                retry = True
            except _READ_FAILURES:
                if attempt >= t.retries or method not in _IDEMPOTENT:
                    raise
                retry = True
            else:
                transient = resp.status in (502, 503, 504) or (resp.status == 500 and method in _IDEMPOTENT)
                if not transient or attempt >= t.retries:
                    if getattr(self._local, "deadline", None) is not None:
                        self._local.deadline = time.monotonic() + t.deadline_s  # an answer: progress
                    return resp
                resp.drain_conn()
                resp.release_conn()
                retry = True
            assert retry
            attempt += 1
            time.sleep(min(t.backoff_s * 2 ** (attempt - 1), max(0.0, deadline - time.monotonic())))


_PROBE_PREFIX = ".daic-conditional-write-probe-"  # hidden from list()
_VERIFIED_ENDPOINTS: set[tuple[str, str]] = set()
_VERIFIED_GUARD = threading.Lock()


@dataclass(frozen=True)
class S3Settings:
    """Where and as whom to reach an S3 endpoint; validated on construction."""

    endpoint: str  # host:port, no scheme
    access_key: str
    secret_key: str
    secure: bool = True
    region: str = "us-east-1"
    timeouts: StoreTimeouts = field(default_factory=StoreTimeouts)

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
        return cls(endpoint=endpoint, access_key=access, secret_key=secret, secure=secure, region=region,
                   timeouts=StoreTimeouts.from_env(env))


class S3Store(ObjectStore):
    """Objects under ``prefix`` in one bucket."""

    def __init__(self, bucket: str, prefix: str = "", settings: S3Settings | None = None,
                 create_bucket: bool = False) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.settings = settings or S3Settings.from_env()
        self.url = f"s3://{bucket}/{self.prefix}".rstrip("/")
        # Every request bounded: an unreachable or frozen endpoint must fail in seconds, not minutes.
        s = self.settings
        self.http = BoundedHTTP(s.timeouts)
        self.client = Minio(s.endpoint, access_key=s.access_key, secret_key=s.secret_key,
                            secure=s.secure, region=s.region, http_client=self.http)
        with self.http.operation():
            self._check_bucket(create_bucket)

    # Error translation ------------------------------------------------------------------------

    def _fail(self, action: str, key: str | None, exc: Exception) -> StorageError:
        where = f"{self.url} (endpoint {self.settings.endpoint})"
        what = f"{action} {key!r}" if key else action
        if isinstance(exc, S3Error):
            if exc.code in _MISSING_KEY_CODES:
                return KeyNotFound(f"{where}: no object {key!r}")
            if exc.code in _PRECONDITION_CODES or getattr(exc.response, "status", None) == 412:
                return PreconditionFailed(f"{where}: {what} refused, the object changed or exists "
                                          f"({exc.code}); nothing was written")
            if exc.code == "NoSuchBucket":
                return StorageError(f"{where}: bucket {self.bucket!r} does not exist")
            if exc.code in _AUTH_CODES:
                return StorageError(f"{where}: credentials rejected ({exc.code}) while trying to {what}")
            return StorageError(f"{where}: cannot {what}: {exc.code}: {exc.message}")
        if isinstance(exc, DeadlineExceeded):
            return StorageError(f"{where}: timed out while trying to {what}: {exc}")
        if isinstance(exc, urllib3.exceptions.TimeoutError) and not isinstance(exc, urllib3.exceptions.NewConnectionError):
            return StorageError(f"{where}: timed out while trying to {what} (endpoint frozen or overloaded?): {exc}")
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

    def put_bytes(self, key: str, data: bytes, *, if_none_match: bool = False,
                  if_match: str | None = None) -> str:
        self._check_condition(if_none_match, if_match)
        name = self._name(key)
        conditional = if_none_match or if_match is not None
        try:
            with self.http.operation():
                if not conditional:
                    # One part up to 5 MiB; larger objects go multipart, sequentially so that every
                    # part runs under this thread's deadline.
                    result = self.client.put_object(self.bucket, name, io.BytesIO(data), length=len(data),
                                                    num_parallel_uploads=1)
                    return result.etag
                self._verify_conditional_writes()
                headers = {"Content-Type": "application/octet-stream"}
                if if_none_match:
                    headers["If-None-Match"] = "*"
                else:
                    headers["If-Match"] = f'"{if_match.strip(chr(34))}"'
                # minio's public put_object turns unknown headers into x-amz-meta-*; the PutObject
                # call underneath sends them as given (one request: conditional writes are single-part).
                return self.client._put_object(self.bucket, name, data, headers=headers).etag
        except StorageError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise self._fail("write", key, exc) from exc

    def _verify_conditional_writes(self) -> None:
        """Fail closed on a server that ignores If-None-Match (once per endpoint and bucket)."""
        ident = (self.settings.endpoint, self.bucket)
        with _VERIFIED_GUARD:
            if ident in _VERIFIED_ENDPOINTS:
                return
        probe = self._name(f"{_PROBE_PREFIX}{uuid.uuid4().hex}")
        headers = {"Content-Type": "application/octet-stream", "If-None-Match": "*"}
        try:
            self.client._put_object(self.bucket, probe, b"1", headers=headers)
            try:
                self.client._put_object(self.bucket, probe, b"2", headers=headers)
                honoured = False
            except S3Error as exc:
                if exc.code not in _PRECONDITION_CODES and getattr(exc.response, "status", None) != 412:
                    raise
                honoured = True
        finally:
            try:
                self.client.remove_object(self.bucket, probe)
            except Exception:  # noqa: BLE001 - best effort; the probe is a 1-byte object
                pass
        if not honoured:
            raise StorageError(
                f"{self.url} (endpoint {self.settings.endpoint}): the server ignores S3 conditional writes "
                "(If-None-Match: *), so the champion pointer cannot be updated safely; use MinIO, AWS S3 or "
                "SeaweedFS >= 3.80 (docs/cluster.md, 'Object store requirements')")
        with _VERIFIED_GUARD:
            _VERIFIED_ENDPOINTS.add(ident)

    def get_bytes(self, key: str) -> bytes:
        return self.get_with_etag(key)[0]

    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        name = self._name(key)
        try:
            with self.http.operation():
                resp = self.client.get_object(self.bucket, name)
                try:
                    declared = resp.headers.get("Content-Length")
                    if declared is not None and declared.isdigit() and int(declared) > self.max_object_bytes:
                        raise self._too_large(key, int(declared))
                    # Each socket read waits at most the read timeout: a body stalled midway fails;
                    # one byte past the bound shows a body longer than declared (or undeclared).
                    data = resp.read(self.max_object_bytes + 1)
                    if len(data) > self.max_object_bytes:
                        raise self._too_large(key, None)
                    return data, resp.headers.get("ETag", "").strip('"')
                finally:
                    resp.close()
                    resp.release_conn()
        except ObjectTooLarge:
            raise
        except Exception as exc:  # noqa: BLE001
            raise self._fail("read", key, exc) from exc

    def exists(self, key: str) -> bool:
        name = self._name(key)
        try:
            with self.http.operation():
                self.client.stat_object(self.bucket, name)
            return True
        except S3Error as exc:
            if exc.code in _MISSING_KEY_CODES:
                return False
            raise self._fail("stat", key, exc) from exc
        except Exception as exc:  # noqa: BLE001
            raise self._fail("stat", key, exc) from exc

    def list(self, prefix: str = "") -> list[str]:
        check_prefix(prefix)
        full = f"{self.prefix}/{prefix}" if self.prefix else prefix
        strip = len(self.prefix) + 1 if self.prefix else 0
        try:
            with self.http.operation():  # one deadline for the whole listing, every page included
                names = [o.object_name for o in self.client.list_objects(self.bucket, prefix=full, recursive=True)]
        except Exception as exc:  # noqa: BLE001
            raise self._fail("list", prefix or "<all>", exc) from exc
        return sorted(n[strip:] for n in names if not n.endswith("/") and _PROBE_PREFIX not in n)

    def delete(self, key: str) -> None:
        name = self._name(key)
        try:
            with self.http.operation():
                self.client.remove_object(self.bucket, name)
        except Exception as exc:  # noqa: BLE001
            raise self._fail("delete", key, exc) from exc
