"""What the real-Prometheus tests share: a Prometheus server (Debian's ``prometheus`` package, which
``make test`` installs) and pseudo-oracle sidecars (``daic oracle serve``), both real processes on
loopback, free ports, temporary directories, bounded readiness waits, stopped at the end.

Prometheus scrapes every second the targets written to its file_sd directory (one file per
sidecar, labelled like the ServiceMonitor's job ``mnist-default-oracle``) and evaluates the
rules of manifests/monitoring/prometheusrule.yaml. Waits poll Prometheus's API for the state a
test needs (bounded), never sleep for a scrape.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import yaml

from daic.serving.protocol import build_response
from daic.serving.stack import terminate
from daic.sidecar.events import encode_cloudevent
from test_serving_support import free_port, seldon_request, wait_http_ready, wait_until

ROOT = Path(__file__).resolve().parents[1]
RULE = ROOT / "manifests" / "monitoring" / "prometheusrule.yaml"
JOB = "mnist-default-oracle"


class Prometheus:
    """``prometheus`` on 127.0.0.1:<free port>, its data in ``base``."""

    def __init__(self, base: Path):
        binary = shutil.which("prometheus")
        if not binary:
            pytest.fail("prometheus is not installed: `make test` installs Debian's prometheus package")
        self.binary, self.base = binary, base
        self.targets = base / "targets"
        self.targets.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = base / "prometheus.log"
        rules = base / "daic-oracle.rules.yaml"
        rules.write_text(yaml.safe_dump(yaml.safe_load(RULE.read_text())["spec"]))
        (base / "prometheus.yml").write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(rules)],
            "scrape_configs": [{"job_name": JOB, "file_sd_configs": [
                {"files": [str(self.targets / "*.json")], "refresh_interval": "1s"}]}],
        }))
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Prometheus":
        cmd = [self.binary, f"--config.file={self.base / 'prometheus.yml'}",
               f"--storage.tsdb.path={self.base / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}",
               "--log.level=warn"]
        with open(self.log, "ab") as fh:
            self.proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        wait_http_ready(self.proc, self.url + "/-/ready", self.log, 60, "Prometheus to become ready")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc)
            self.proc = None

    def add_target(self, name: str, port: int) -> None:
        tmp = self.targets / f".{name}.tmp"
        tmp.write_text(json.dumps([{"targets": [f"127.0.0.1:{port}"], "labels": {"namespace": "test"}}]))
        tmp.replace(self.targets / f"{name}.json")  # atomic: Prometheus never reads half a file

    def query(self, expr: str) -> list[dict[str, Any]]:
        resp = requests.get(self.url + "/api/v1/query", params={"query": expr}, timeout=10)
        body = resp.json()
        assert body["status"] == "success", body
        return body["data"]["result"]

    def values(self, expr: str) -> dict[tuple, float]:
        """{sorted label items (without __name__): value} of an instant vector query."""
        return {tuple(sorted((k, v) for k, v in s["metric"].items() if k != "__name__")): float(s["value"][1])
                for s in self.query(expr)}

    def wait_for(self, expr: str, predicate, what: str, timeout_s: float = 30.0):
        """Poll ``expr`` until ``predicate(values)`` holds; returns the values."""
        return wait_until(lambda: (lambda v: v if predicate(v) else None)(self.values(expr)) or None,
                          timeout_s, f"Prometheus: {what} ({expr}); last: {self.values(expr)}", interval_s=0.2)


class Sidecar:
    """``daic oracle serve`` for ``deployment``; events and admin on its loopback ingest port,
    /metrics and /estimate on its service port. Automatic flushes and champion checks are off:
    the test's /admin/flush and /admin/reload decide when it processes and follows the registry."""

    def __init__(self, base: Path, store, deployment: str, name: str):
        self.base, self.store, self.deployment, self.name = base, store, deployment, name
        self.port, self.ingest_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ingest = f"http://127.0.0.1:{self.ingest_port}"
        self.state = base / f"state-{name}"
        self.log = base / f"sidecar-{name}.log"
        self.proc: subprocess.Popen | None = None
        self.sent = 0

    def start(self) -> "Sidecar":
        cmd = [sys.executable, "-m", "daic.cli", "oracle", "serve", "--port", str(self.port),
               "--ingest-port", str(self.ingest_port), "--store", self.store.url, "--state-dir", str(self.state),
               "--deployment", self.deployment, "--flush-interval", "3600", "--batch-rows", "100000",
               "--reference-check", "3600", "--drain-quiet", "0", "--drain-max", "0"]
        with open(self.log, "ab") as fh:
            self.proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1"})
        wait_http_ready(self.proc, self.url + "/health/ready", self.log, 120, f"sidecar {self.name} to become ready")
        return self

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        code = terminate(self.proc)
        self.proc = None
        return code

    def predict(self, served: dict, version: str, images: np.ndarray, batch: int = 10) -> None:
        """Post request and response events of predictions of ``images`` by ``version``, as the
        executor logs them, then flush: when this returns, they are scored and in the estimate."""
        for start in range(0, len(images), batch):
            chunk = images[start:start + batch]
            request = seldon_request(chunk)
            decoded = np.asarray(json.loads(request)["data"]["ndarray"], dtype=np.float32)
            outputs = served[version].outputs(decoded)  # with the served self-agreement
            response = json.dumps(build_response(**outputs, model="mnist", version=version)).encode()
            rid = f"{self.name}-{self.sent}"
            self.sent += 1
            for kind, body in (("request", request), ("response", response)):
                headers, data = encode_cloudevent(kind, rid, body, source="http://executor", model_id="classifier")
                resp = requests.post(self.ingest + "/", data=data, headers=headers, timeout=30)
                assert resp.status_code == 200, resp.text
        requests.post(self.ingest + "/admin/flush", timeout=120).raise_for_status()

    def reload(self) -> dict:
        resp = requests.post(self.ingest + "/admin/reload", timeout=120)
        resp.raise_for_status()
        return resp.json()

    def estimate(self) -> dict:
        return requests.get(self.url + "/estimate", timeout=10).json()

    def metrics(self) -> str:
        return requests.get(self.url + "/metrics", timeout=10).text
