"""Submit a KubeRay ``RayJob`` and wait for it: the train step's cluster path.

The RayJob manifest is rendered by the training side (it knows the entrypoint, the image and how
workers are sized); this module only talks to the Kubernetes API with the ``kubernetes`` client's
``CustomObjectsApi``: create the object (an existing one of the same name is reused, so a retried
step does not start a second job), then read its status until KubeRay reports the job finished.
KubeRay fields: ``status.jobDeploymentStatus`` (``Initializing``, ``Running``, ``Complete``,
``Failed`` ...) and ``status.jobStatus`` (Ray's own: ``PENDING``, ``RUNNING``, ``SUCCEEDED``,
``FAILED``, ``STOPPED``).

**Bounded**: every API call carries a (connect, read) ``_request_timeout`` (``deploy.kube.API_TIMEOUT``;
without one the client waits for ever on an API server that accepted the connection and hangs, and
the step's own ``timeout_s`` is never reached). A job runs for an hour or more, so one bad moment of
the API server must not fail it: a transient fault (5xx, 429, a refused, reset or timed-out
connection) is logged and the create or read is tried again at the next poll, until ``timeout_s``
after the step began; then :class:`TimeoutError` names the last error. What trying again will not
fix fails at once with :class:`RayJobApiError`: 401/403 (credentials, RBAC), a 404 while waiting
(the job was deleted under us), any other 4xx (a rejected manifest, no RayJob CRD). The deadline can
be overrun by at most one call's timeout.
"""
from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable
from typing import Any

from daic.components.deploy.kube import API_TIMEOUT, body_excerpt, transient

log = logging.getLogger(__name__)

GROUP, VERSION, PLURAL = "ray.io", "v1", "rayjobs"
SUCCEEDED = "SUCCEEDED"
FAILED_JOB = {"FAILED", "STOPPED"}
FINISHED_DEPLOYMENT = {"Complete", "Failed"}
#: KubeRay names the RayCluster of a RayJob ``<job>-<5 chars>`` and its head Service after that, so a
#: RayJob name may be at most 47 characters (KubeRay's validation), not the usual 63.
MAX_NAME = 47
_PREFIX = "retrain-"
_NOT_DNS = re.compile(r"[^a-z0-9-]+")
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def rayjob_name(cycle: str) -> str:
    """The RayJob name of a cycle's retraining: ``retrain-<cycle>``, a DNS-1035 label of <= 47 chars.

    The same cycle always gets the same name (a retried step finds its job instead of starting a
    second one). A cycle id that is not already a short lower-case label (upper case, '.', '_', or
    too long) is slugged, cut, and suffixed with 8 hex digits of its SHA-256, so two cycle ids never
    share a name by being cut or lower-cased alike.
    """
    if not cycle:
        raise ValueError("cycle id is empty: cannot name the RayJob")
    plain = _PREFIX + cycle
    if len(plain) <= MAX_NAME and _DNS1035.match(plain):
        return plain
    digest = hashlib.sha256(cycle.encode()).hexdigest()[:8]
    room = MAX_NAME - len(_PREFIX) - 1 - len(digest)
    slug = _NOT_DNS.sub("-", cycle.lower())[:room].strip("-")
    return f"{_PREFIX}{slug}-{digest}" if slug else f"{_PREFIX}{digest}"


class RayJobFailed(RuntimeError):
    """The RayJob finished without success; the message carries KubeRay's status."""


class RayJobApiError(RuntimeError):
    """The Kubernetes API refused a call in a way trying again will not fix (see the module docstring)."""


def _refusal(exc: Any, namespace: str, name: str, doing: str) -> RayJobApiError:
    if exc.status in (401, 403):
        hint = ("the step's credentials were refused" if exc.status == 401 else
                "the step's service account may not do this (RBAC: rayjobs.ray.io create/get)")
        return RayJobApiError(f"Kubernetes API answered {exc.status} {exc.reason or ''} to {doing} RayJob "
                              f"{namespace}/{name}: {hint}{body_excerpt(exc)}")
    return RayJobApiError(f"Kubernetes API answered {exc.status} {exc.reason or ''} to {doing} RayJob "
                          f"{namespace}/{name}{body_excerpt(exc)}")


def submit_rayjob(api, namespace: str, manifest: dict[str, Any], timeout_s: float, poll_s: float = 10.0,
                  clock: Callable[[], float] = time.monotonic,
                  sleep: Callable[[float], None] = time.sleep,
                  request_timeout: tuple[float, float] = API_TIMEOUT) -> dict[str, Any]:
    """Create (or find) the RayJob and wait until it succeeds, at most ``timeout_s``; returns its
    final status. Transient API faults are waited through (see the module docstring)."""
    from kubernetes.client.exceptions import ApiException

    name = manifest["metadata"]["name"]
    if manifest.get("kind") != "RayJob" or manifest.get("apiVersion") != f"{GROUP}/{VERSION}":
        raise ValueError(f"not a {GROUP}/{VERSION} RayJob: {manifest.get('apiVersion')} {manifest.get('kind')}")
    deadline = clock() + timeout_s
    created = False
    last_error, failures = "", 0
    job = deployment = None
    while True:
        try:
            if not created:
                try:
                    api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, manifest,
                                                        _request_timeout=request_timeout)
                    log.info("created RayJob %s/%s", namespace, name)
                except ApiException as exc:
                    if exc.status != 409:
                        raise
                    log.info("RayJob %s/%s exists already: waiting for it", namespace, name)
                created = True
            obj = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name,
                                                   _request_timeout=request_timeout)
        except Exception as exc:  # noqa: BLE001 - sorted into transient (wait) and refusal (raise) below
            doing = "read" if created else "create"
            if isinstance(exc, ApiException) and exc.status == 404 and created:
                raise RayJobApiError(f"RayJob {namespace}/{name} was deleted while the step waited for it "
                                     f"(last seen: jobStatus={job}, jobDeploymentStatus={deployment})") from exc
            what = transient(exc)
            if what is None:
                if isinstance(exc, ApiException):
                    raise _refusal(exc, namespace, name, doing) from exc
                raise
            failures += 1
            last_error = f"{doing}: {what}"
            log.warning("RayJob %s/%s: could not %s it (%s); trying again until the deadline", namespace, name,
                        doing, what)
        else:
            status = obj.get("status") or {}
            job, deployment = status.get("jobStatus"), status.get("jobDeploymentStatus")
            if job == SUCCEEDED:
                return status
            if job in FAILED_JOB or deployment == "Failed":
                raise RayJobFailed(f"RayJob {namespace}/{name} failed: jobStatus={job}, "
                                   f"jobDeploymentStatus={deployment}, message={status.get('message', '')!r}")
        left = deadline - clock()
        if left <= 0:
            errors = f"; {failures} API call(s) failed, the last: {last_error}" if failures else ""
            raise TimeoutError(f"RayJob {namespace}/{name} did not finish within {timeout_s:g}s "
                               f"(jobStatus={job}, jobDeploymentStatus={deployment}{errors})")
        sleep(min(poll_s, left))
