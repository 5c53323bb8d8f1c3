"""etcd and kube-apiserver on loopback, started and stopped like kubebuilder's envtest.

``ControlPlane`` picks free ports, makes certificates (:mod:`.certs`), starts etcd and then
kube-apiserver with RBAC authorisation, service-account token issuing (so TokenRequest works
without a controller-manager), an audit log of every request (so a test can see exactly which
requests an identity made) and the ``ServiceAccount`` admission plugin off (it would wait for a
token controller that does not run here). It waits for ``/readyz`` with a deadline and writes an
admin kubeconfig (client certificate in ``system:masters``). Process output goes to files in the
work folder; on a failed start the error names them.

The fault methods are what the fault tests need: ``restart_apiserver`` (optionally with etcd
compacted while the API server is down, so a client's watch resumes from a revision that no
longer exists and gets 410 Gone) and ``compact_etcd``.
"""
from __future__ import annotations

import base64
import json
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from .binaries import Binaries
from .certs import Pki

READY_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 20.0
SERVICE_CIDR = "10.96.0.0/16"
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"

# Every request's metadata; for the operator's status writes also the body sent and the object stored,
# so a test can see whether the server pruned a field the operator wrote (it does so silently).
AUDIT_POLICY = """apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: RequestResponse
    resources: [{group: daic.dev, resources: [assessmentcycles/status]}]
  - level: Metadata
"""


class ControlPlaneError(RuntimeError):
    """A process did not start or become ready; the message names its log file."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def die_with_parent() -> None:
    """preexec_fn: the child gets SIGKILL when the process that started it dies, however it dies
    (Linux prctl PR_SET_PDEATHSIG), so a killed test run leaves no server behind."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
    except OSError:
        pass


def terminate(proc: subprocess.Popen, timeout_s: float) -> int:
    """SIGTERM, then SIGKILL after ``timeout_s``; the exit status (already exited: as it is)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout_s)
    return proc.returncode


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class _Process:
    """One child process with its output in a log file (appended to across restarts)."""

    def __init__(self, name: str, argv: list[str], log: Path):
        self.name, self.argv, self.log = name, argv, log
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            out.write(f"\n===== {self.name} started {time.strftime('%H:%M:%S')}\n".encode())
            out.flush()
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True,
                                         preexec_fn=die_with_parent)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is None:
            return
        terminate(self.proc, STOP_TIMEOUT_S)
        self.proc = None


class ControlPlane:
    """A test control plane in ``workdir``; use as a context manager (stops everything on exit)."""

    def __init__(self, workdir: Path, binaries: Binaries | None = None):
        self.workdir = Path(workdir)
        self.binaries = binaries or Binaries.default()
        self.pki: Pki | None = None
        self.etcd_port = self.etcd_peer_port = self.port = 0
        self._etcd: _Process | None = None
        self._apiserver: _Process | None = None
        self.kubeconfig = self.workdir / "admin.kubeconfig"
        self.audit_log = self.workdir / "audit.log"

    # -- lifecycle ------------------------------------------------------------------------------

    def __enter__(self) -> "ControlPlane":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def start(self) -> None:
        missing = self.binaries.missing()
        if missing:
            raise ControlPlaneError(f"missing {', '.join(map(str, missing))}: run `make control-plane`")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.pki = Pki.create(self.workdir / "pki")
        (self.workdir / "audit-policy.yaml").write_text(AUDIT_POLICY)
        self.etcd_port, self.etcd_peer_port, self.port = free_port(), free_port(), free_port()
        self._start_etcd()
        self._start_apiserver()
        self._write_kubeconfig()

    def stop(self) -> None:
        for proc in (self._apiserver, self._etcd):
            if proc is not None:
                proc.stop()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def etcd_url(self) -> str:
        return f"http://127.0.0.1:{self.etcd_port}"

    def logs(self) -> list[Path]:
        return [p for p in (self.workdir / "etcd.log", self.workdir / "kube-apiserver.log") if p.exists()]

    # -- etcd -----------------------------------------------------------------------------------

    def _start_etcd(self) -> None:
        peer = f"http://127.0.0.1:{self.etcd_peer_port}"
        argv = [str(self.binaries.etcd), "--name=default", f"--data-dir={self.workdir / 'etcd-data'}",
                f"--listen-client-urls={self.etcd_url}", f"--advertise-client-urls={self.etcd_url}",
                f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=default={peer}", "--unsafe-no-fsync=true", "--log-level=warn"]
        self._etcd = _Process("etcd", argv, self.workdir / "etcd.log")
        self._etcd.start()
        self._wait(self._etcd, lambda: self._etcd_json("/health", None).get("health") == "true")

    def _etcd_json(self, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        """etcd's v3 JSON gateway (POST for the kv and maintenance calls, GET /health)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.etcd_url + path, data=data, method="GET" if data is None else "POST")
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def etcd_revision(self) -> int:
        return int(self._etcd_json("/v3/maintenance/status", {})["header"]["revision"])

    def compact_etcd(self, writes: int = 5) -> int:
        """Advance etcd's revision by ``writes`` puts to a key outside the API server's prefix, then
        compact (physically) up to the new revision; returns it. A watch from an older
        resourceVersion then fails with 410 Gone."""
        key = base64.b64encode(b"/daic-test/compaction-marker").decode()
        for i in range(writes):
            self._etcd_json("/v3/kv/put", {"key": key, "value": base64.b64encode(str(i).encode()).decode()})
        revision = self.etcd_revision()
        self._etcd_json("/v3/kv/compaction", {"revision": str(revision), "physical": True})
        return revision

    # -- kube-apiserver -------------------------------------------------------------------------

    def _apiserver_argv(self) -> list[str]:
        pki = self.pki
        assert pki is not None
        return [
            str(self.binaries.kube_apiserver),
            f"--etcd-servers={self.etcd_url}",
            "--bind-address=127.0.0.1", f"--secure-port={self.port}", f"--advertise-address=127.0.0.1",
            f"--cert-dir={self.workdir / 'apiserver-certs'}",
            f"--tls-cert-file={pki.serving_cert}", f"--tls-private-key-file={pki.serving_key}",
            f"--client-ca-file={pki.ca_cert}",
            "--authorization-mode=RBAC",
            f"--service-account-issuer={SA_ISSUER}",
            f"--service-account-key-file={pki.sa_pub}",
            f"--service-account-signing-key-file={pki.sa_key}",
            f"--api-audiences={SA_ISSUER}",
            "--disable-admission-plugins=ServiceAccount",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--endpoint-reconciler-type=none",  # no kubernetes Service endpoints for a loopback address
            "--allow-privileged=true",
            f"--audit-policy-file={self.workdir / 'audit-policy.yaml'}",
            f"--audit-log-path={self.audit_log}", "--audit-log-format=json", "--audit-log-mode=blocking",
            "--audit-log-maxsize=200",
            "--v=1",
        ]

    def _start_apiserver(self) -> None:
        self._apiserver = _Process("kube-apiserver", self._apiserver_argv(), self.workdir / "kube-apiserver.log")
        self._apiserver.start()
        self._wait(self._apiserver, self.ready)

    def _ssl(self) -> ssl.SSLContext:
        assert self.pki is not None
        ctx = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        ctx.load_cert_chain(str(self.pki.admin_cert), str(self.pki.admin_key))
        return ctx

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/readyz", timeout=5, context=self._ssl()) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def _wait(self, proc: _Process, ready) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if not proc.alive():
                raise ControlPlaneError(f"{proc.name} exited; log {proc.log}:\n{_tail(proc.log)}")
            try:
                if ready():
                    return
            except (urllib.error.URLError, OSError, ValueError, KeyError):
                pass
            time.sleep(0.2)
        raise ControlPlaneError(f"{proc.name} not ready after {READY_TIMEOUT_S:.0f} s; log {proc.log}:\n"
                                f"{_tail(proc.log)}")

    def stop_apiserver(self) -> None:
        assert self._apiserver is not None
        self._apiserver.stop()

    def start_apiserver(self) -> None:
        assert self._apiserver is not None
        self._apiserver.start()
        self._wait(self._apiserver, self.ready)

    def restart_apiserver(self, compact: bool = False) -> int | None:
        """Stop kube-apiserver, optionally compact etcd while it is down, start it on the same port.

        Returns the compacted revision (or None)."""
        self.stop_apiserver()
        revision = self.compact_etcd() if compact else None
        self.start_apiserver()
        return revision

    # -- clients --------------------------------------------------------------------------------

    def _write_kubeconfig(self) -> None:
        assert self.pki is not None
        self.kubeconfig.write_text(kubeconfig(self.url, self.pki.ca_cert, "admin", {
            "client-certificate": str(self.pki.admin_cert), "client-key": str(self.pki.admin_key)}))
        self.kubeconfig.chmod(0o600)


def kubeconfig(server: str, ca_cert: Path | str | None, user: str, credentials: dict[str, str],
               namespace: str = "default", ca_data: str | None = None) -> str:
    """A one-context kubeconfig (JSON, which is YAML)."""
    cluster: dict[str, Any] = {"server": server}
    if ca_data:
        cluster["certificate-authority-data"] = ca_data
    elif ca_cert:
        cluster["certificate-authority"] = str(ca_cert)
    return json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        "clusters": [{"name": "test", "cluster": cluster}],
        "users": [{"name": user, "user": credentials}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": user, "namespace": namespace}}],
    }, indent=1)


def audit_events(path: Path) -> list[dict[str, Any]]:
    """The audit log's events (one JSON object per line)."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            out.append(json.loads(line))
    return out
