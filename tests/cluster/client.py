"""What a test does with the cluster: admin clients, kubectl, namespaces, service-account
identities (TokenRequest tokens), SubjectAccessReviews and the audit log.

The same class serves the test control plane (:class:`~.control_plane.ControlPlane`) and a cluster
named by ``DAIC_TEST_KUBECONFIG``; what only the test control plane has (its audit log, restarts,
etcd) is reached through ``control_plane``, which is None for a user's cluster.
"""
from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any


from .control_plane import ControlPlane, audit_events, kubeconfig

KUBECTL_TIMEOUT_S = 120.0
CRD_TIMEOUT_S = 60.0


def find_kubectl() -> Path:
    from daic.deploy.render import find_kubectl as find

    return find()


class Kube:
    def __init__(self, admin_kubeconfig: Path, workdir: Path, control_plane: ControlPlane | None = None):
        self.kubeconfig = Path(admin_kubeconfig)
        self.workdir = Path(workdir)
        self.control_plane = control_plane
        self._api_client: Any = None
        self.notes: list[str] = []   # what differs from a production cluster (stand-ins), for reports

    # -- clients --------------------------------------------------------------------------------

    def api_client(self) -> Any:
        """A ``kubernetes.client.ApiClient`` as the admin (a new one after ``reset_clients``)."""
        if self._api_client is None:
            import kubernetes

            self._api_client = kubernetes.config.new_client_from_config(config_file=str(self.kubeconfig))
        return self._api_client

    def reset_clients(self) -> None:
        self._api_client = None

    def custom(self) -> Any:
        import kubernetes

        return kubernetes.client.CustomObjectsApi(self.api_client())

    def core(self) -> Any:
        import kubernetes

        return kubernetes.client.CoreV1Api(self.api_client())

    def kubectl(self, *args: str, check: bool = True, kubeconfig: Path | None = None,
                input: str | None = None) -> subprocess.CompletedProcess:
        argv = [str(find_kubectl()), f"--kubeconfig={kubeconfig or self.kubeconfig}", *args]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=KUBECTL_TIMEOUT_S,
                              input=input, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
        return proc

    def apply_objects(self, objects: list[dict[str, Any]], namespace: str | None = None) -> None:
        """Server-side apply as the admin, with strict field validation. Sent as JSON: YAML written
        by PyYAML leaves keys such as ``n`` and ``y`` unquoted, which kubectl's YAML 1.1 reader
        turns into booleans (a CRD property ``n`` became ``"false"``)."""
        args = ["apply", "--server-side", "--validate=strict", "--force-conflicts", "-f", "-"]
        if namespace:
            args = ["-n", namespace, *args]
        self.kubectl(*args, input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))

    def has_crd(self, name: str) -> bool:
        return self.kubectl("get", f"crd/{name}", "--ignore-not-found", "-o", "name").stdout.strip() != ""

    def install_crds(self, crds: list[dict[str, Any]]) -> None:
        self.apply_objects(crds)
        import kubernetes

        api = kubernetes.client.ApiextensionsV1Api(self.api_client())
        deadline = time.monotonic() + CRD_TIMEOUT_S
        waiting = [c["metadata"]["name"] for c in crds]
        while waiting:
            conditions = {name: {c.type: c.status for c in
                                 (api.read_custom_resource_definition(name).status.conditions or [])}
                          for name in waiting}
            waiting = [name for name, c in conditions.items() if c.get("Established") != "True"]
            if waiting and time.monotonic() > deadline:
                raise AssertionError(f"CRDs not Established after {CRD_TIMEOUT_S:.0f} s: {conditions}")
            if waiting:
                time.sleep(0.1)

    # -- namespaces and identities --------------------------------------------------------------

    def namespace(self, prefix: str = "t") -> str:
        """A new namespace with a unique name (never deleted on the test control plane: no
        namespace controller runs to finalise it)."""
        name = f"{prefix}-{uuid.uuid4().hex[:6]}"
        self.core().create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        return name

    def token(self, namespace: str, service_account: str, seconds: int = 3600) -> str:
        """A bound token for the ServiceAccount (TokenRequest API, as the kubelet asks for one)."""
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                "spec": {"expirationSeconds": seconds}}
        result = self.core().create_namespaced_service_account_token(service_account, namespace, body)
        return result.status.token

    def service_account_kubeconfig(self, namespace: str, service_account: str) -> Path:
        """A kubeconfig that authenticates as ``system:serviceaccount:NAMESPACE:NAME``."""
        cfg = self.api_client().configuration
        path = self.workdir / f"sa-{namespace}-{service_account}.kubeconfig"
        path.write_text(kubeconfig(cfg.host, cfg.ssl_ca_cert, service_account,
                                   {"token": self.token(namespace, service_account)}, namespace=namespace))
        path.chmod(0o600)
        return path

    def can(self, namespace: str, service_account: str, verb: str, resource: str, group: str = "",
            subresource: str = "", name: str = "", in_namespace: str | None = None) -> tuple[bool, str]:
        """The server's answer (a SubjectAccessReview) to: may this ServiceAccount do this?"""
        user = f"system:serviceaccount:{namespace}:{service_account}"
        attrs = {"namespace": in_namespace if in_namespace is not None else namespace, "verb": verb,
                 "group": group, "resource": resource}
        if subresource:
            attrs["subresource"] = subresource
        if name:
            attrs["name"] = name
        body = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                "spec": {"user": user, "resourceAttributes": attrs,
                         "groups": ["system:serviceaccounts", f"system:serviceaccounts:{namespace}",
                                    "system:authenticated"]}}
        import kubernetes

        review = kubernetes.client.AuthorizationV1Api(self.api_client()).create_subject_access_review(body)
        return bool(review.status.allowed), review.status.reason or ""

    # -- audit log (test control plane only) ----------------------------------------------------

    def requests_by(self, user: str) -> list[dict[str, Any]]:
        """Audit events (stage ResponseComplete) of every request ``user`` made, in order."""
        assert self.control_plane is not None, "the audit log exists only on the test control plane"
        return [e for e in audit_events(self.control_plane.audit_log)
                if e.get("user", {}).get("username") == user and e.get("stage") == "ResponseComplete"]


def request_key(event: dict[str, Any]) -> tuple[str, str, str]:
    """(apiGroup, resource[/subresource], verb) of an audit event."""
    ref = event.get("objectRef") or {}
    resource = ref.get("resource", "") + (f"/{ref['subresource']}" if ref.get("subresource") else "")
    return ref.get("apiGroup", ""), resource, event["verb"]



class History:
    """Every version of one kind of object in one namespace, in order, as a watch delivers them.

    A list gives the starting point; the watch then sees each write (no polling, so no write is
    missed however fast two of them follow each other). Use as a context manager."""

    def __init__(self, kube: Kube, group: str, version: str, namespace: str, plural: str):
        import threading

        self.kube, self.args = kube, (group, version, namespace, plural)
        self.events: list[tuple[str, dict[str, Any]]] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.error: BaseException | None = None

    def __enter__(self) -> "History":
        import kubernetes

        self._api = kubernetes.client.CustomObjectsApi(
            kubernetes.config.new_client_from_config(config_file=str(self.kube.kubeconfig)))
        listing = self._api.list_namespaced_custom_object(*self.args)
        with self._lock:
            self.events += [("EXISTING", item) for item in listing["items"]]
        self._rv = listing["metadata"]["resourceVersion"]
        self._thread.start()
        return self

    def _run(self) -> None:
        import kubernetes

        try:
            while not self._stop.is_set():
                watch = kubernetes.watch.Watch()
                for event in watch.stream(self._api.list_namespaced_custom_object, *self.args,
                                          resource_version=self._rv, timeout_seconds=2):
                    obj = event["object"]
                    self._rv = obj["metadata"]["resourceVersion"]
                    with self._lock:
                        self.events.append((event["type"], obj))
                    if self._stop.is_set():
                        watch.stop()
        except BaseException as exc:  # noqa: BLE001 - reported by versions()
            self.error = exc

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(10)

    def versions(self, name: str) -> list[dict[str, Any]]:
        """Every version of object ``name`` seen so far, oldest first."""
        assert self.error is None, f"the watch failed: {self.error!r}"
        with self._lock:
            return [obj for kind, obj in self.events if obj["metadata"]["name"] == name and kind != "DELETED"]
