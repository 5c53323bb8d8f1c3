"""The Kubernetes API as the cluster steps (train's RayJob, deploy's SeldonDeployment) talk to it:
bounded calls, and which failures are worth trying again.

Without ``_request_timeout`` the ``kubernetes`` client waits for ever on an API server that accepted
the connection and hangs, so every call carries :data:`API_TIMEOUT` (the operator's bound, see
operators/kube.py). An API server has bad moments (a restart, a 503 from an overloaded aggregator, a
429 from priority and fairness, a load balancer resetting connections); a step that has waited
minutes for a canary or an hour for a RayJob should try again through them, not fail.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

log = logging.getLogger(__name__)

#: (connect, read) seconds for each Kubernetes API call.
API_TIMEOUT: tuple[float, float] = (5.0, 30.0)
#: How long deploy keeps trying one Seldon read or patch through transient faults.
RETRY_FOR_S = 120.0

T = TypeVar("T")


def custom_objects_api():
    """A CustomObjectsApi from the pod's service account, else from ~/.kube/config; urllib3 retries
    only a refused connection, once (the callers retry on their own schedule, within their deadline,
    instead of each hung read being waited out four times)."""
    import urllib3
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    configuration = client.Configuration.get_default_copy()
    configuration.retries = urllib3.Retry(total=1, connect=1, read=0, status=0, redirect=2)
    return client.CustomObjectsApi(client.ApiClient(configuration))


def body_excerpt(exc: Any) -> str:
    body = exc.body.decode(errors="replace") if isinstance(exc.body, bytes) else str(exc.body or "")
    return f": {body[:200]}" if body.strip() else ""


def transient(exc: BaseException, also: tuple[int, ...] = ()) -> str | None:
    """One line describing ``exc`` when trying again may help (5xx, 429, the statuses in ``also``, a
    connection refused, reset or timed out); None when it will not (4xx, a bug)."""
    import urllib3
    from kubernetes.client.exceptions import ApiException

    if isinstance(exc, ApiException):
        if exc.status == 429 or (exc.status or 0) >= 500 or exc.status in also:
            return f"HTTP {exc.status} {exc.reason or ''}".strip() + body_excerpt(exc)
        return None
    if isinstance(exc, (urllib3.exceptions.HTTPError, OSError)):  # OSError: ConnectionError, socket.timeout
        cause = getattr(exc, "reason", None) or exc
        return f"{type(cause).__name__}: {cause}"
    return None


def through_faults(call: Callable[[], T], what: str, retry_for_s: float = RETRY_FOR_S, also: tuple[int, ...] = (),
                   clock: Callable[[], float] | None = None,
                   sleep: Callable[[float], None] = time.sleep) -> T:
    """``call()``, tried again after transient faults (backoff 1 s doubling to 10 s) for at most
    ``retry_for_s``; then a TimeoutError naming the last fault. Other failures propagate at once."""
    clock = clock or time.monotonic
    deadline = clock() + retry_for_s
    delay = 1.0
    while True:
        try:
            return call()
        except Exception as exc:
            why = transient(exc, also)
            if why is None:
                raise
            left = deadline - clock()
            if left <= 0:
                raise TimeoutError(f"{what}: the Kubernetes API kept failing for {retry_for_s:g}s; "
                                   f"the last: {why}") from exc
            log.warning("%s failed (%s); trying again in %gs", what, why, min(delay, left))
            sleep(min(delay, left))
            delay = min(delay * 2, 10.0)
