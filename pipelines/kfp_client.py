"""A ``kfp.Client`` whose every request is bounded, and KFP's failures as one sentence.

``kfp.Client`` sends none of its calls with a timeout, its generated REST client retries reads
three times, and on creation it asks healthz up to five times, five seconds apart: a Kubeflow
Pipelines API that accepts a connection and never answers would hold the caller for ever (the
operator's worker thread, ``daic pipeline submit``). ``bounded_kfp_client`` gives each request a
(connect, read) timeout, retries only refused connections, once, and asks healthz once.
"""
from __future__ import annotations

from typing import Any

KFP_TIMEOUT: tuple[float, float] = (5.0, 30.0)  # (connect, read) seconds per KFP API request


def bounded_kfp_client(host: str, namespace: str | None, timeout: tuple[float, float] | None = None) -> Any:
    """A ``kfp.Client`` whose every API request has ``timeout`` (default :data:`KFP_TIMEOUT`; see the
    module docstring)."""
    import kfp
    import urllib3

    timeout = timeout or KFP_TIMEOUT

    class BoundedKfpClient(kfp.Client):
        def _load_config(self, *args: Any, **kwargs: Any) -> Any:
            config = super()._load_config(*args, **kwargs)
            config.retries = urllib3.Retry(total=1, connect=1, read=0, status=0, redirect=2)
            return config

        def get_kfp_healthz(self, sleep_duration: int = 5) -> Any:
            _bound(self._healthz_api.api_client, timeout)
            return self._healthz_api.healthz_service_get_healthz()

    client = BoundedKfpClient(host=host, namespace=namespace)
    _bound(client._run_api.api_client, timeout)  # one API client serves every *_api of kfp.Client
    return client


def _bound(api_client: Any, timeout: tuple[float, float]) -> None:
    """Give every request of a generated (swagger) API client a default ``_request_timeout``."""
    rest = api_client.rest_client
    if getattr(rest, "_daic_bounded", False):
        return
    unbounded = rest.request

    def request(*args: Any, _request_timeout: Any = None, **kwargs: Any) -> Any:
        return unbounded(*args, _request_timeout=_request_timeout or timeout, **kwargs)

    rest.request, rest._daic_bounded = request, True


def describe_failure(host: str, exc: BaseException) -> str | None:
    """One sentence for a failure talking to KFP at ``host`` (unreachable, timed out, an HTTP error
    status), or None when ``exc`` is not one (a bug, which should show its traceback)."""
    import urllib3

    try:
        from kfp_server_api.exceptions import ApiException
    except ImportError:  # pragma: no cover - kfp always brings it
        ApiException = ()  # type: ignore[assignment]
    if isinstance(exc, ApiException):
        reason = f"HTTP {exc.status} {exc.reason or ''}".strip()
        body = (exc.body.decode(errors="replace") if isinstance(exc.body, bytes) else str(exc.body or ""))[:300]
        return f"Kubeflow Pipelines at {host} answered {reason}" + (f": {body}" if body.strip() else "")
    if isinstance(exc, (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError)):
        cause = getattr(exc, "reason", None) or exc
        return f"cannot reach Kubeflow Pipelines at {host}: {type(cause).__name__}: {cause}"
    return None
