"""Settings of the pseudo-oracle sidecar, validated in one place (pydantic)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from daic.serving.graph import JoinPlan, join_plan
from daic.sidecar.records import check_deployment


class SidecarConfig(BaseModel):
    """host/port: the Service port (estimate, metrics, health; feedback with the bearer token read
    from ``feedback_token_file``, if given). ingest_port: events, feedback and admin, on 127.0.0.1
    only (the Seldon logger URL points here: ``http://localhost:<ingest_port>/``). store_url: object store
    (None: ``$DAIC_STORE`` or ./.daic/store). deployment: records go to
    ``operational/<deployment>/``. model_name: registry name whose champion pointer and oracle
    references the sidecar follows. state_dir: write-ahead log and checkpoint.

    max_queue: accepted-but-unscored events above which new events get HTTP 503 (counted as
    dropped, reason ``backpressure``) instead of blocking Seldon's logger. join_timeout_s: how
    long one half of a prediction waits for the other. batch_rows / flush_interval_s: write an
    operational batch when this many inputs are buffered or this much time has passed.
    fsync_interval_s: bound on what a machine crash can lose (a killed process loses nothing).
    score_batch / score_delay_s: joined predictions are scored together once this many wait or
    this long after the first (amortises the oracles' fixed cost per call; the estimate lags
    by at most the delay). window: inputs in the online estimator's window. reference_check_s: how often to check the
    champion pointer for a new model (and its oracle reference).

    max_body_bytes: the largest event or feedback body taken (HTTP 413 above it, before anything is
    written; a request of 256 images is about 1.6 MB of JSON, its response about 0.5 MB).
    max_queue_bytes / max_pending_bytes: bounds on the bodies held in memory, waiting to be scored
    (503 above it, counted as ``backpressure``) or waiting for the rest of their prediction (the
    oldest predictions are given up, ``overflow``); the checkpoint holds at most the latter.

    graph: the predictor's Seldon inference graph as rendered (``spec.predictors[].graph``); the
    sidecar joins what the executor logs for it (daic.serving.graph). None: daic's single-node
    graph, one MODEL node named ``classifier`` with a logger.

    drain_quiet_s / drain_max_s: on SIGTERM the sidecar reports not-ready but keeps taking events
    until none has come for ``drain_quiet_s`` (the executor, stopped at the same time, still
    posts what its logger queue holds), at most ``drain_max_s``, then writes everything and exits."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(8300, ge=0, le=65535)
    ingest_port: int = Field(8301, ge=0, le=65535)
    feedback_token_file: Path | None = None
    store_url: str | None = None
    deployment: str = "mnist"
    model_name: str = "mnist"
    state_dir: Path = Path(".daic/sidecar")
    max_queue: int = Field(20_000, ge=1)
    score_batch: int = Field(256, ge=1)
    score_delay_s: float = Field(0.25, ge=0)
    join_timeout_s: float = Field(30.0, gt=0)
    max_pending: int = Field(20_000, ge=1)
    remember_ids: int = Field(50_000, ge=1)
    batch_rows: int = Field(1024, ge=1)
    flush_interval_s: float = Field(10.0, gt=0)
    fsync_interval_s: float = Field(0.05, gt=0)
    window: int = Field(1000, ge=1)
    reference_check_s: float = Field(10.0, gt=0)
    canary_idle_s: float = Field(600.0, gt=0)  # a non-champion version without predictions this long stops serving
    feedback_memory: int = Field(20_000, ge=1)
    graph: dict[str, Any] | None = None
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    max_queue_bytes: int = Field(256 * 1024 * 1024, ge=1024)
    max_pending_bytes: int = Field(128 * 1024 * 1024, ge=1024)
    drain_quiet_s: float = Field(2.0, ge=0)
    drain_max_s: float = Field(20.0, ge=0)

    @field_validator("graph")
    @classmethod
    def _graph(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            join_plan(value)  # ValueError names what the sidecar could not join
        return value

    @model_validator(mode="after")
    def _ports(self) -> "SidecarConfig":
        if self.port and self.port == self.ingest_port:
            raise ValueError(f"port and ingest_port must differ, both are {self.port}")
        return self

    def join_plan(self) -> JoinPlan:
        return JoinPlan.single() if self.graph is None else join_plan(self.graph)

    @field_validator("deployment")
    @classmethod
    def _deployment(cls, value: str) -> str:
        return check_deployment(value)

    @property
    def wal_dir(self) -> Path:
        return Path(self.state_dir) / self.deployment
