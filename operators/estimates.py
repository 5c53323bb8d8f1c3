"""Read the online accuracy estimate: the sidecar's ``GET /estimate`` or a Prometheus query.

The sidecar's answer (contract in docs/operator.md) is the window estimate the pseudo-oracle
computes; only ``accuracy`` and ``n`` are required, unknown fields are ignored so the sidecar can
grow. A read never raises: failures come back as an ``EstimateError`` observation, which the
reconcile function turns into a Degraded phase once the estimate is stale.
"""
from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any, Protocol

import requests
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from daic.operators.observations import EstimateError, EstimateReading
from daic.operators.spec import EstimateSource as SourceKind
from daic.operators.spec import EstimateSpec


class EstimateSource(Protocol):
    def read(self, now: datetime) -> EstimateReading | EstimateError: ...


class SidecarPayload(BaseModel):
    """The JSON body of the sidecar's ``GET /estimate``."""

    model_config = ConfigDict(extra="ignore")

    accuracy: float | None = Field(ge=0, le=1)
    n: int = Field(ge=0)
    lower: float | None = Field(default=None, ge=0, le=1)
    upper: float | None = Field(default=None, ge=0, le=1)
    drift_alarm: bool = False
    trusted: bool = True
    model_version: str | None = None
    reference_accuracy: float | None = Field(default=None, ge=0, le=1)
    error_sd: float | None = Field(default=None, ge=0)  # the estimate's error scale (daic >= 0.2 sidecars)
    change_alarm: bool = False  # the sequential change detector's alarm (daic >= 0.3 sidecars)
    timestamp: datetime | float | None = None  # end of the window (RFC 3339 or Unix seconds)

    @field_validator("accuracy", "lower", "upper", "reference_accuracy", "error_sd", mode="before")
    @classmethod
    def _nan_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, float) and math.isnan(value) else value


def parse_estimate(payload: Any, now: datetime) -> EstimateReading | EstimateError:
    """Validate one sidecar answer; errors name the offending field."""
    try:
        body = SidecarPayload.model_validate(payload)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())
        return EstimateError(f"malformed estimate: {problems}", now)
    if body.accuracy is None:
        return EstimateError(f"the sidecar has no estimate yet (window holds {body.n} predictions)", now)
    stamp = body.timestamp
    if isinstance(stamp, (int, float)):
        stamp = datetime.fromtimestamp(float(stamp), tz=timezone.utc)
    observed = stamp.astimezone(timezone.utc) if isinstance(stamp, datetime) and stamp.tzinfo else (
        stamp.replace(tzinfo=timezone.utc) if isinstance(stamp, datetime) else now)
    return EstimateReading(accuracy=body.accuracy, n=body.n, observed_at=observed, lower=body.lower,
                           upper=body.upper, drift_alarm=body.drift_alarm, trusted=body.trusted,
                           model_version=body.model_version, reference_accuracy=body.reference_accuracy,
                           error_sd=body.error_sd, change_alarm=body.change_alarm)


class SidecarEstimate:
    """The pseudo-oracle sidecar's REST endpoint."""

    def __init__(self, url: str, timeout: float = 5.0, session: requests.Session | None = None):
        self.url, self.timeout = url, timeout
        self.session = session or requests.Session()

    def read(self, now: datetime) -> EstimateReading | EstimateError:
        try:
            resp = self.session.get(self.url, timeout=self.timeout)
        except requests.RequestException as exc:
            return EstimateError(f"GET {self.url}: {exc}", now)
        if resp.status_code != 200:
            return EstimateError(f"GET {self.url}: HTTP {resp.status_code} {resp.text[:200]}", now)
        try:
            payload = resp.json()
        except ValueError:
            return EstimateError(f"GET {self.url}: response is not JSON: {resp.text[:200]!r}", now)
        return parse_estimate(payload, now)


class PrometheusEstimate:
    """An instant PromQL query for the accuracy (and optionally the window size and drift alarm)."""

    def __init__(self, base_url: str, query: str, count_query: str | None = None,
                 drift_query: str | None = None, timeout: float = 5.0,
                 session: requests.Session | None = None):
        self.base_url = base_url.rstrip("/")
        self.query, self.count_query, self.drift_query = query, count_query, drift_query
        self.timeout = timeout
        self.session = session or requests.Session()

    def _scalar(self, query: str) -> tuple[float, datetime]:
        resp = self.session.get(f"{self.base_url}/api/v1/query", params={"query": query}, timeout=self.timeout)
        resp.raise_for_status()
        body = resp.json()
        if body.get("status") != "success":
            raise ValueError(f"query {query!r}: {body.get('error', body)}")
        data = body.get("data", {})
        result = data.get("result")
        if data.get("resultType") == "scalar":
            stamp, value = result
        elif data.get("resultType") == "vector" and result:
            if len(result) > 1:
                raise ValueError(f"query {query!r} returned {len(result)} series; it must select one")
            stamp, value = result[0]["value"]
        else:
            raise ValueError(f"query {query!r} returned no sample")
        return float(value), datetime.fromtimestamp(float(stamp), tz=timezone.utc)

    def read(self, now: datetime) -> EstimateReading | EstimateError:
        try:
            accuracy, stamp = self._scalar(self.query)
            n = int(self._scalar(self.count_query)[0]) if self.count_query else 0
            alarm = self._scalar(self.drift_query)[0] > 0 if self.drift_query else False
        except (requests.RequestException, ValueError, KeyError, TypeError, IndexError) as exc:
            return EstimateError(f"Prometheus {self.base_url}: {exc}", now)
        if math.isnan(accuracy) or not 0.0 <= accuracy <= 1.0:
            return EstimateError(f"Prometheus query {self.query!r} gave {accuracy}, not an accuracy in [0, 1]", now)
        if not self.count_query:
            n = 2**31 - 1  # no window size known: the minimum-window rule cannot apply
        return EstimateReading(accuracy=accuracy, n=n, observed_at=stamp, drift_alarm=alarm)


def estimate_source(spec: EstimateSpec, session: requests.Session | None = None) -> EstimateSource:
    if spec.source is SourceKind.sidecar:
        return SidecarEstimate(str(spec.url), spec.timeout_seconds, session)
    return PrometheusEstimate(str(spec.prometheus_url), str(spec.query), spec.count_query,
                              spec.drift_query, spec.timeout_seconds, session)


def canary_source(spec: EstimateSpec, session: requests.Session | None = None) -> EstimateSource | None:
    """The canary's own estimate, when the spec names where to read it."""
    if spec.source is SourceKind.sidecar and spec.canary_url:
        return SidecarEstimate(spec.canary_url, spec.timeout_seconds, session)
    if spec.source is SourceKind.prometheus and spec.canary_query:
        return PrometheusEstimate(str(spec.prometheus_url), spec.canary_query, None, None,
                                   spec.timeout_seconds, session)
    return None
