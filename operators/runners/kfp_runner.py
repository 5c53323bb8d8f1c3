"""Kubeflow Pipelines runs through ``kfp.Client`` (the KFP v2beta1 REST API).

A run is found by its display name inside the cycle's experiment, which makes ``submit``
idempotent: the operator never creates a second run for a name that exists. (Two operator
replicas racing could still both create one between the look-up and the create; the operator runs
as a single replica with peering off, see docs/operator.md.) When a run has succeeded its result
record is read from the object store at ``cycles/<run_name>/result.json``, where the pipeline's
last step writes it (contract in docs/operator.md).

Every request to the KFP API is bounded (``daic.pipelines.kfp_client.bounded_kfp_client``: a
(connect, read) timeout per request, one retry of a refused connection, healthz asked once), so a
KFP that accepts a connection and never answers cannot hold an operator worker thread for ever.
"""
from __future__ import annotations

import json
import logging
import os
from importlib import resources
from pathlib import Path
from typing import Any

from daic.operators.observations import RunPhase, RunState
from daic.operators.runners import RESULT_KEY
from daic.pipelines.kfp_client import KFP_TIMEOUT, bounded_kfp_client
from daic.storage import KeyNotFound, ObjectStore

log = logging.getLogger(__name__)

IN_CLUSTER_HOST = "http://ml-pipeline.kubeflow.svc.cluster.local:8888"

_STATES = {
    "RUNTIME_STATE_UNSPECIFIED": RunPhase.pending,
    "PENDING": RunPhase.pending,
    "PAUSED": RunPhase.pending,
    "RUNNING": RunPhase.running,
    "CANCELING": RunPhase.running,
    "SUCCEEDED": RunPhase.succeeded,
    "SKIPPED": RunPhase.succeeded,
    "FAILED": RunPhase.failed,
    "CANCELED": RunPhase.canceled,
}


def resolve_package(package: str) -> str:
    """A compiled pipeline path: absolute as given, relative inside ``daic.pipelines/compiled``."""
    path = Path(package)
    if not path.is_absolute():
        path = Path(str(resources.files("daic.pipelines"))) / "compiled" / package
    if not path.is_file():
        raise FileNotFoundError(f"compiled pipeline {package!r} not found (looked at {path}); "
                                "run `make compile-pipelines` or set spec.pipeline.package")
    return str(path)


class KfpRunner:
    def __init__(self, store: ObjectStore, *, host: str | None = None, experiment: str = "daic",
                 package: str | None = "assess_and_improve.yaml", pipeline_id: str | None = None,
                 version_id: str | None = None, namespace: str | None = None, client: Any = None,
                 timeout: tuple[float, float] = KFP_TIMEOUT):
        self._client, self.store, self.timeout = client, store, timeout
        self.host = host or os.environ.get("KFP_HOST") or IN_CLUSTER_HOST
        self.experiment, self.namespace = experiment, namespace
        self.package, self.pipeline_id, self.version_id = package, pipeline_id, version_id
        self._experiment_id: str | None = None

    @property
    def client(self) -> Any:
        """Made on first use: ``kfp.Client()`` already calls the API (healthz), which may be down."""
        if self._client is None:
            self._client = bounded_kfp_client(self.host, self.namespace, self.timeout)
        return self._client

    def experiment_id(self) -> str:
        if self._experiment_id is None:
            exp = self.client.create_experiment(name=self.experiment, namespace=self.namespace)
            self._experiment_id = exp.experiment_id
        return self._experiment_id

    def _find(self, run_name: str) -> Any | None:
        flt = json.dumps({"predicates": [{"operation": "EQUALS", "key": "display_name",
                                          "stringValue": run_name}]})
        resp = self.client.list_runs(experiment_id=self.experiment_id(), filter=flt, page_size=10,
                                     sort_by="created_at")
        runs = [r for r in (resp.runs or []) if r.display_name == run_name]
        if len(runs) > 1:
            log.warning("%d KFP runs are named %s; following the oldest (%s)", len(runs), run_name, runs[0].run_id)
        return runs[0] if runs else None

    def submit(self, run_name: str, params: dict[str, Any]) -> None:
        if self._find(run_name) is not None:
            return
        package = resolve_package(self.package) if not self.pipeline_id and self.package else None
        self.client.run_pipeline(experiment_id=self.experiment_id(), job_name=run_name,
                                 pipeline_package_path=package, params=params,
                                 pipeline_id=self.pipeline_id, version_id=self.version_id,
                                 enable_caching=False)

    def get(self, run_name: str) -> RunState:
        run = self._find(run_name)
        if run is None:
            return RunState(run_name, RunPhase.not_found)
        phase = _STATES.get(str(run.state or "RUNTIME_STATE_UNSPECIFIED"), RunPhase.unknown)
        stage = _running_task(run)
        error = getattr(getattr(run, "error", None), "message", None) or None
        if phase is not RunPhase.succeeded:
            return RunState(run_name, phase, stage, error=error)
        key = RESULT_KEY.format(run_name=run_name)
        try:
            result = self.store.get_json(key)
        except KeyNotFound:
            return RunState(run_name, RunPhase.failed, stage,
                            error=f"run succeeded but wrote no result at {self.store.url}/{key}")
        return RunState(run_name, phase, stage, result=result)

    def cancel(self, run_name: str) -> None:
        run = self._find(run_name)
        if run is None or _STATES.get(str(run.state), RunPhase.unknown).terminal:
            return
        self.client.terminate_run(run.run_id)


def _running_task(run: Any) -> str | None:
    details = getattr(run, "run_details", None)
    tasks = getattr(details, "task_details", None) or []
    running = [t for t in tasks if str(getattr(t, "state", "")) == "RUNNING" and getattr(t, "display_name", None)]
    running = [t for t in running if not str(t.display_name).startswith(("root", "condition", "exit-handler"))]
    if not running:
        return None
    latest = max(running, key=lambda t: str(getattr(t, "create_time", "") or ""))
    return str(latest.display_name)
