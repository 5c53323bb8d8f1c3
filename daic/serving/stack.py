"""``LocalStack``: the model microservice, the sidecar and the gateway on one machine.

    with LocalStack(StackConfig(store_url="file:///tmp/store")) as stack:
        requests.post(stack.gateway_url + "/api/v1.0/predictions", json={"data": {"ndarray": ...}})

Three processes, as in a pod: ``seldon-core-microservice daic.serving.model.DaicModel`` from the
serving virtualenv (seldon-core cannot share the main environment), ``daic oracle serve`` and the
gateway (:mod:`daic.serving.gateway`) from this one. Each runs in its own process group with its
output in ``<log_dir>/<name>.log``; start-up waits on each health endpoint with a deadline and
reports the log tail of a process that died. Shutdown is ordered so nothing is lost: the gateway
first (it sends what it queued), then the model, then the sidecar (SIGTERM: it writes every
accepted event to the store before exiting).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from daic.serving import http_client
from daic.serving.affinity import check_cpus, pinned

REPO_ROOT = Path(__file__).resolve().parents[2]


def default_serving_python() -> Path:
    """``$DAIC_SERVING_PYTHON``, else ``.venv-serving/bin/python`` next to the working directory
    or the source tree."""
    if os.environ.get("DAIC_SERVING_PYTHON"):
        return Path(os.environ["DAIC_SERVING_PYTHON"])
    for base in (Path.cwd(), REPO_ROOT):
        candidate = base / ".venv-serving" / "bin" / "python"
        if candidate.exists():
            return candidate
    return REPO_ROOT / ".venv-serving" / "bin" / "python"


#: "logger" is the gateway's request-logger child process (daic.serving.request_logger).
PROCESSES: tuple[str, ...] = ("model", "sidecar", "gateway", "logger", "transformer")


@dataclass(frozen=True)
class StackConfig:
    """Ports 0 are not allowed here: the processes must know each other's ports up front."""

    store_url: str | None = None
    model_name: str = "mnist"
    model_version: str = "champion"
    deployment: str = "mnist"
    host: str = "127.0.0.1"
    gateway_port: int = 8003
    model_port: int = 9000
    model_metrics_port: int = 6000
    sidecar_port: int = 8300
    sidecar_ingest_port: int = 8301  # events, feedback and admin (127.0.0.1)
    with_sidecar: bool = True
    state_dir: Path = Path(".daic/sidecar")
    log_dir: Path = Path(".daic/logs")
    workers: int = 1
    threads: int = 4
    reload_interval_s: float = 15.0
    max_batch: int = 256
    serving_python: Path = field(default_factory=default_serving_python)
    startup_timeout_s: float = 180.0
    sidecar_options: dict[str, Any] = field(default_factory=dict)
    #: CPU affinity per process (one of PROCESSES), e.g. {"sidecar": (1,)} (daic.serving.affinity).
    cpus: dict[str, tuple[int, ...]] = field(default_factory=dict)
    #: A TRANSFORMER node in front of the model (daic.serving.manifest.TransformerNode's
    #: ``model_class``), its own seldon-core-microservice; the graph is rendered as on a cluster.
    transformer_class: str | None = None
    #: Its graph parameters (PREDICTIVE_UNIT_PARAMETERS, as Seldon passes them), e.g. the filter's.
    transformer_parameters: dict[str, str] = field(default_factory=dict)
    transformer_port: int = 9001
    transformer_metrics_port: int = 6001

    def __post_init__(self) -> None:
        ports = {"gateway_port": self.gateway_port, "model_port": self.model_port,
                 "model_metrics_port": self.model_metrics_port, "sidecar_port": self.sidecar_port,
                 "sidecar_ingest_port": self.sidecar_ingest_port}
        if self.transformer_class:
            ports.update(transformer_port=self.transformer_port, transformer_metrics_port=self.transformer_metrics_port)
        for name, port in ports.items():
            if not 1 <= int(port) <= 65535:
                raise ValueError(f"{name} must be in 1..65535, got {port}")
        if len(set(ports.values())) != len(ports):
            raise ValueError(f"ports must differ, got {ports}")
        if self.workers < 1 or self.threads < 1:
            raise ValueError("workers and threads must be >= 1")
        for name, cpus in self.cpus.items():
            if name not in PROCESSES:
                raise ValueError(f"cpus: unknown process {name!r}; expected one of {', '.join(PROCESSES)}")
            check_cpus(f"cpus[{name!r}]", cpus)

    @property
    def gateway_url(self) -> str:
        return f"http://{self.host}:{self.gateway_port}"

    @property
    def model_url(self) -> str:
        return f"http://{self.host}:{self.model_port}"

    @property
    def sidecar_url(self) -> str:
        return f"http://{self.host}:{self.sidecar_port}"

    @property
    def sidecar_ingest_url(self) -> str:
        """Where the request logger posts and admin calls go (loopback only)."""
        return f"http://127.0.0.1:{self.sidecar_ingest_port}"

    @property
    def transformer_url(self) -> str:
        return f"http://{self.host}:{self.transformer_port}"

    def graph(self) -> dict[str, Any]:
        """The predictor's graph as daic.serving.manifest renders it for a cluster (its shape)."""
        from daic.serving.manifest import DeploymentParams, TransformerNode, graph_shape, render_seldon_deployment

        transformer = None if not self.transformer_class else TransformerNode(model_class=self.transformer_class)
        doc = render_seldon_deployment(DeploymentParams(transformer=transformer))
        return graph_shape(doc["spec"]["predictors"][0]["graph"])


class StackError(RuntimeError):
    """A component did not start; the message holds the end of its log."""


@dataclass
class _Proc:
    name: str
    popen: subprocess.Popen
    log: Path

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


class LocalStack:
    """Context manager running the three processes (see the module docstring)."""

    def __init__(self, config: StackConfig | None = None) -> None:
        self.config = config or StackConfig()
        self._procs: dict[str, _Proc] = {}

    # -- URLs ---------------------------------------------------------------------------------
    gateway_url = property(lambda self: self.config.gateway_url)
    model_url = property(lambda self: self.config.model_url)
    sidecar_url = property(lambda self: self.config.sidecar_url)

    # -- commands -----------------------------------------------------------------------------
    def model_command(self) -> list[str]:
        c = self.config
        script = Path(c.serving_python).with_name("seldon-core-microservice")
        return [str(script), "daic.serving.model.DaicModel", "--service-type", "MODEL",
                "--http-port", str(c.model_port), "--metrics-port", str(c.model_metrics_port),
                "--grpc-workers", "0", "--workers", str(c.workers), "--threads", str(c.threads),
                "--log-level", "WARNING"]

    def sidecar_command(self) -> list[str]:
        c = self.config
        cmd = [sys.executable, "-m", "daic.cli", "oracle", "serve", "--host", c.host,
               "--port", str(c.sidecar_port), "--ingest-port", str(c.sidecar_ingest_port),
               "--deployment", c.deployment, "--model-name", c.model_name,
               "--state-dir", str(c.state_dir)]
        if c.store_url:
            cmd += ["--store", c.store_url]
        cmd += ["--graph", json.dumps(c.graph())]
        for key, value in c.sidecar_options.items():
            cmd += [f"--{key.replace('_', '-')}", str(value)]
        return cmd

    def gateway_command(self) -> list[str]:
        c = self.config
        graph = c.graph()
        cmd = [sys.executable, "-m", "daic.serving.gateway", "--host", c.host, "--port", str(c.gateway_port),
               "--model-url", c.model_url, "--deployment", c.deployment,
               "--logger-url", f"{c.sidecar_ingest_url}/" if c.with_sidecar else "none",
               "--logger-cpus", ",".join(map(str, c.cpus.get("logger", ()))), "--graph", json.dumps(graph)]
        if c.transformer_class:
            cmd += ["--node-url", f"{graph['name']}={c.transformer_url}"]
        return cmd

    def transformer_command(self) -> list[str]:
        c = self.config
        script = Path(c.serving_python).with_name("seldon-core-microservice")
        return [str(script), str(c.transformer_class), "--service-type", "TRANSFORMER",
                "--http-port", str(c.transformer_port), "--metrics-port", str(c.transformer_metrics_port),
                "--grpc-workers", "0", "--workers", str(c.workers), "--threads", str(c.threads),
                "--log-level", "WARNING"]

    def _transformer_env(self) -> dict[str, str]:
        c = self.config
        params = [{"name": k, "type": "STRING", "value": str(v)} for k, v in sorted(c.transformer_parameters.items())]
        env = {"PREDICTIVE_UNIT_ID": c.graph()["name"], "SELDON_DEPLOYMENT_ID": c.deployment,
               "PREDICTIVE_UNIT_PARAMETERS": json.dumps(params)}
        if c.store_url:
            env["DAIC_STORE"] = c.store_url
        return env

    def _model_env(self) -> dict[str, str]:
        from daic.serving.manifest import BEHIND_FILTER_PARAM, FILTER_MODEL_CLASS

        c = self.config
        params = [
            {"name": "model_name", "type": "STRING", "value": c.model_name},
            {"name": "model_version", "type": "STRING", "value": c.model_version},
            {"name": "reload_interval_s", "type": "FLOAT", "value": str(c.reload_interval_s)},
            {"name": "max_batch", "type": "INT", "value": str(c.max_batch)},
            # abstaining (issue 21) asks this stack's sidecar, on its loopback ingest port
            {"name": "abstain_url", "type": "STRING", "value": f"{c.sidecar_ingest_url}/assess"},
        ]
        if c.transformer_class == FILTER_MODEL_CLASS:  # as the manifest renders it: keep the filter's tags
            params.append(dict(BEHIND_FILTER_PARAM))
        env = {"PREDICTIVE_UNIT_PARAMETERS": json.dumps(params), "PREDICTIVE_UNIT_ID": "classifier",
               "SELDON_DEPLOYMENT_ID": c.deployment,
               "INCLUDE_METRICS_IN_CLIENT_RESPONSE": "false"}
        if c.store_url:
            env["DAIC_STORE"] = c.store_url
        return env

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> "LocalStack":
        c = self.config
        if not Path(c.serving_python).exists():
            raise StackError(f"serving environment not found at {c.serving_python}: run `make venv-serving` "
                             "or set DAIC_SERVING_PYTHON")
        Path(c.log_dir).mkdir(parents=True, exist_ok=True)
        try:
            if c.with_sidecar:
                self._spawn("sidecar", self.sidecar_command(), {})
            self._spawn("model", self.model_command(), self._model_env())
            if c.transformer_class:
                self._spawn("transformer", self.transformer_command(), self._transformer_env())
            self._spawn("gateway", self.gateway_command(), {})
            deadline = time.monotonic() + c.startup_timeout_s
            if c.with_sidecar:
                self._wait("sidecar", f"{c.sidecar_url}/health/ready", deadline)
            self._wait("model", f"{c.model_url}/health/status", deadline)
            if c.transformer_class:
                self._wait("transformer", f"{c.transformer_url}/health/status", deadline)
            self._wait("gateway", f"{c.gateway_url}/health/ready", deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self, name: str, cmd: list[str], extra_env: dict[str, str]) -> None:
        log = Path(self.config.log_dir) / f"{name}.log"
        env = {**os.environ, **extra_env, "PYTHONUNBUFFERED": "1"}
        with open(log, "ab") as fh:
            fh.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n".encode())
            popen = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=env, start_new_session=True, preexec_fn=pinned(self.config.cpus.get(name)))
        self._procs[name] = _Proc(name, popen, log)

    def _wait(self, name: str, url: str, deadline: float) -> None:
        proc = self._procs[name]
        delay = 0.05
        while True:
            code = proc.popen.poll()
            if code is not None:
                raise StackError(f"{name} exited with code {code} during start-up; log {proc.log}:\n{proc.tail()}")
            try:
                if http_client.send(None, "GET", url, timeout_s=2,
                                    max_bytes=http_client.SMALL_ANSWER_BYTES).status_code == 200:
                    return
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise StackError(f"{name} not ready at {url} within {self.config.startup_timeout_s:.0f}s; "
                                 f"log {proc.log}:\n{proc.tail()}")
            time.sleep(delay)  # polling interval, not synchronisation: the loop checks readiness
            delay = min(delay * 1.5, 0.5)

    def pids(self) -> dict[str, int]:
        """Process id of each component, which is also its process-group id."""
        return {name: p.popen.pid for name, p in self._procs.items()}

    def poll(self) -> dict[str, int | None]:
        """Exit code of each process (None while running)."""
        return {name: p.popen.poll() for name, p in self._procs.items()}

    def stop(self, timeout_s: float = 40.0) -> dict[str, int | None]:
        """Gateway, then model, then sidecar: SIGTERM, wait, SIGKILL what is left of the group."""
        codes = {}
        for name in ("gateway", "transformer", "model", "sidecar"):
            proc = self._procs.pop(name, None)
            if proc is None:
                continue
            codes[name] = terminate(proc.popen, timeout_s)
        return codes

    def gateway_stats(self) -> dict[str, int]:
        return http_client.send(None, "GET", self.gateway_url + "/gateway/stats", timeout_s=10,
                                max_bytes=http_client.SMALL_ANSWER_BYTES).json()

    def wait_logged(self, timeout_s: float = 60.0) -> dict[str, int]:
        """Wait until the gateway has delivered (or given up on) every event it queued: its
        logging is asynchronous, so an answered request's events may still be on their way."""
        deadline = time.monotonic() + timeout_s
        delay = 0.02
        while True:
            stats = self.gateway_stats()
            settled = sum(v for k, v in stats.items()
                          if k == "events_sent" or k.startswith(("events_rejected", "events_failed")))
            if stats.get("log_queue_depth", 0) == 0 and settled >= stats.get("events_queued", 0):
                return stats
            if time.monotonic() > deadline:
                raise StackError(f"the gateway still had events to deliver after {timeout_s:.0f}s: {stats}")
            time.sleep(delay)  # polling interval of a condition checked above
            delay = min(delay * 2, 0.5)

    def flush(self, timeout_s: float = 60.0) -> str | None:
        """Everything answered so far, in the store: wait for the gateway's log queue, then have
        the sidecar process and write what it accepted. Returns the batch key (None: nothing new)."""
        if not self.config.with_sidecar:
            raise StackError("this stack runs without the sidecar: nothing to flush")
        self.wait_logged(timeout_s)
        resp = http_client.send(None, "POST", self.config.sidecar_ingest_url + "/admin/flush", timeout_s=timeout_s,
                                max_bytes=http_client.SMALL_ANSWER_BYTES)
        resp.raise_for_status()
        return resp.json()["batch"]

    def estimate(self) -> dict:
        """The sidecar's ``GET /estimate``."""
        return http_client.send(None, "GET", self.sidecar_url + "/estimate", timeout_s=10,
                                max_bytes=http_client.SMALL_ANSWER_BYTES).json()

    def log(self, name: str) -> Path:
        return Path(self.config.log_dir) / f"{name}.log"

    def __enter__(self) -> "LocalStack":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _signal_group(popen: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(popen.pid, sig)  # the group this process leads (start_new_session=True)
    except ProcessLookupError:
        pass


def terminate(popen: subprocess.Popen, timeout_s: float = 30.0) -> int | None:
    """SIGTERM the process group led by ``popen`` (started with start_new_session=True), wait,
    then SIGKILL whatever is left of the group; returns the exit code."""
    if popen.poll() is None:
        _signal_group(popen, signal.SIGTERM)
        try:
            popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _signal_group(popen, signal.SIGKILL)
            popen.wait(timeout=10)
    _signal_group(popen, signal.SIGKILL)  # stragglers of the group (gunicorn workers, metrics server)
    return popen.returncode
