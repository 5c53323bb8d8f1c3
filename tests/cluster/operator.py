"""The kopf operator as a separate process, as its Deployment runs it (manifests/operator).

``kopf run --standalone --namespace NS -m daic.operators.main`` with a kubeconfig that carries a
ServiceAccount token, so every request it makes is authorised by RBAC as that account. It is
ready when kopf's liveness endpoint answers. ``kill()`` sends SIGKILL (no cleanup, as a node
failure or an OOM kill); ``stop()`` SIGTERM (kopf's graceful exit). The log file is kept; a
failed test prints its tail.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from .control_plane import die_with_parent, free_port, terminate

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0


class OperatorProcess:
    def __init__(self, kubeconfig: Path, namespace: str, store_url: str, log: Path,
                 interval: float = 0.5, extra_env: dict[str, str] | None = None):
        self.kubeconfig, self.namespace, self.store_url, self.log = kubeconfig, namespace, store_url, log
        self.interval, self.extra_env = interval, extra_env or {}
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.starts = 0

    def start(self) -> "OperatorProcess":
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}  # never in-cluster
        env.update(KUBECONFIG=str(self.kubeconfig), DAIC_OPERATOR_INTERVAL=str(self.interval),
                   DAIC_STORE=self.store_url, PYTHONUNBUFFERED="1", **self.extra_env)
        argv = [sys.executable, "-m", "kopf", "run", "--standalone",
                f"--namespace={self.namespace}", f"--liveness=http://127.0.0.1:{self.port}/healthz",
                "-m", "daic.operators.main"]
        self.starts += 1
        with open(self.log, "ab") as out:
            out.write(f"\n===== operator start {self.starts} {time.strftime('%H:%M:%S')}\n".encode())
            out.flush()
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=env, start_new_session=True, preexec_fn=die_with_parent)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the operator exited ({self.proc.returncode}):\n{self.tail()}")
            if self.healthz() is not None:
                return self
            time.sleep(0.2)
        raise AssertionError(f"the operator's liveness endpoint did not answer in {READY_TIMEOUT_S:.0f} s:\n"
                             f"{self.tail()}")

    def healthz(self) -> dict[str, Any] | None:
        import json

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2) as resp:
                return json.loads(resp.read())
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to write anything."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(STOP_TIMEOUT_S)

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        return terminate(self.proc, STOP_TIMEOUT_S)

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def tail(self, lines: int = 60) -> str:
        return f"(operator log {self.log})\n" + "\n".join(self.text().splitlines()[-lines:])

    def __enter__(self) -> "OperatorProcess":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
