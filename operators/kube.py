"""The Kubernetes API side of the operator: client configuration and status writes.

The status is written through the ``/status`` subresource as a JSON merge patch carrying the
resourceVersion the pass started from, so a pass that raced another write (an edit, a second
pass) fails with 409 instead of overwriting newer state; the next pass starts over from a fresh
read. ``None`` fields are sent as ``null`` so the merge patch removes them; inside lists (merge
patches replace lists whole) they are dropped, since the CRD schema has no nullable fields.
"""
from __future__ import annotations

import os
from typing import Any

from daic.operators.spec import GROUP, PLURAL, VERSION
from daic.operators.status import CycleStatus

# (connect, read) seconds for every call the ``kubernetes`` client makes for the operator: without
# ``_request_timeout`` it waits for ever on an API server that accepted the connection and hangs.
API_TIMEOUT: tuple[float, float] = (5.0, 30.0)


def load_client_config() -> None:
    """In-cluster service account when running in a pod, else the kubeconfig.

    ``$KUBECONFIG`` is read now, not when the ``kubernetes`` package was imported (its default).
    """
    import kubernetes

    try:
        kubernetes.config.load_incluster_config()
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config(config_file=os.environ.get("KUBECONFIG") or None)


def connection_info(trust_env: bool = False) -> Any:
    """kopf's credentials from the ``kubernetes`` client configuration (as kopf.login_via_client,
    but honouring the current $KUBECONFIG)."""
    import kopf
    import kubernetes

    load_client_config()
    config = kubernetes.client.Configuration.get_default_copy()
    header = config.get_api_key_with_prefix("BearerToken") or config.get_api_key_with_prefix("authorization")
    parts = header.split(" ", 1) if header else []
    scheme, token = (None, None) if not parts else (None, parts[0]) if len(parts) == 1 else (parts[0], parts[1])
    return kopf.ConnectionInfo(
        server=config.host, ca_path=config.ssl_ca_cert, insecure=not config.verify_ssl,
        username=config.username or None, password=config.password or None, scheme=scheme, token=token,
        certificate_path=config.cert_file, private_key_path=config.key_file, trust_env=trust_env)


def _drop_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


def _lists_without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _lists_without_nulls(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


def status_patch(status: CycleStatus, resource_version: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"status": _lists_without_nulls(status.to_wire())}
    if resource_version is not None:
        body["metadata"] = {"resourceVersion": resource_version}
    return body


class StatusWriter:
    """Persists a CycleStatus on the AssessmentCycle's status subresource."""

    def __init__(self, api: Any, namespace: str, name: str, resource_version: str | None,
                 timeout: tuple[float, float] = API_TIMEOUT):
        """``api``: a ``kubernetes.client.CustomObjectsApi``."""
        self.api, self.namespace, self.name, self.resource_version = api, namespace, name, resource_version
        self.timeout = timeout

    def __call__(self, status: CycleStatus) -> None:
        self.api.patch_namespaced_custom_object_status(
            GROUP, VERSION, self.namespace, PLURAL, self.name, status_patch(status, self.resource_version),
            _request_timeout=self.timeout)
