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
from daic.operators.spec import EstimateSpec, selector_of
from daic.serving import http_client


#: what of a sidecar's unscored_reason reaches the status (it is shown, not parsed)
MAX_REASON_CHARS = 500


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
    # why the serving version's newest inputs were recorded unscored (the estimate stands still)
    unscored_reason: str | None = None

    @field_validator("unscored_reason", mode="before")
    @classmethod
    def _bounded_reason(cls, value: Any) -> Any:
        if isinstance(value, str) and len(value) > MAX_REASON_CHARS:
            return value[:MAX_REASON_CHARS - 3] + "..."
        return value

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
        unscored = f"; its inputs are recorded unscored: {body.unscored_reason}" if body.unscored_reason else ""
        return EstimateError(f"the sidecar has no estimate yet (window holds {body.n} predictions){unscored}", now)
    stamp = body.timestamp
    if isinstance(stamp, (int, float)):
        stamp = datetime.fromtimestamp(float(stamp), tz=timezone.utc)
    observed = stamp.astimezone(timezone.utc) if isinstance(stamp, datetime) and stamp.tzinfo else (
        stamp.replace(tzinfo=timezone.utc) if isinstance(stamp, datetime) else now)
    return EstimateReading(accuracy=body.accuracy, n=body.n, observed_at=observed, lower=body.lower,
                           upper=body.upper, drift_alarm=body.drift_alarm, trusted=body.trusted,
                           model_version=body.model_version, reference_accuracy=body.reference_accuracy,
                           error_sd=body.error_sd, change_alarm=body.change_alarm,
                           unscored_reason=body.unscored_reason)


class SidecarEstimate:
    """The pseudo-oracle sidecar's REST endpoint."""

    def __init__(self, url: str, timeout: float = 5.0, session: requests.Session | None = None,
                 max_age_s: float | None = None):
        self.url, self.timeout, self.max_age_s = url, timeout, max_age_s
        self.session = session or requests.Session()

    def read(self, now: datetime) -> EstimateReading | EstimateError:
        try:
            resp = http_client.send(self.session, "GET", self.url, timeout_s=self.timeout,
                                    max_bytes=http_client.SMALL_ANSWER_BYTES)
        except requests.RequestException as exc:
            return EstimateError(f"GET {self.url}: {exc}", now)
        if resp.status_code != 200:
            return EstimateError(f"GET {self.url}: HTTP {resp.status_code} {resp.text[:200]}", now)
        try:
            payload = resp.json()
        except ValueError:
            return EstimateError(f"GET {self.url}: response is not JSON: {resp.text[:200]!r}", now)
        reading = parse_estimate(payload, now)
        if isinstance(reading, EstimateError):
            return reading
        return _stale(reading, now, self.max_age_s, f"GET {self.url}") or reading


def _stale(reading: EstimateReading, now: datetime, max_age_s: float | None, where: str) -> EstimateError | None:
    """A reading whose own time (its newest input) is older than ``max_age_s`` is refused: it is
    no new evidence, whatever the time it was read (estimate.staleAfterSeconds)."""
    if max_age_s is None:
        return None
    age = (now - reading.observed_at).total_seconds()
    if age > max_age_s:
        return EstimateError(f"{where}: the estimate's newest input is from {reading.observed_at.isoformat()}, "
                             f"{age:.0f} s ago (more than estimate.staleAfterSeconds = {max_age_s:.0f} s): "
                             "no new evidence", now)
    return None


#: The sidecar's series the selector form reads (daic.sidecar.metrics), by the reading's field.
DAIC_SERIES = {
    "accuracy": "daic_estimated_accuracy", "n": "daic_window_size", "lower": "daic_estimated_accuracy_lower",
    "upper": "daic_estimated_accuracy_upper", "error_sd": "daic_estimate_error_sd",
    "timestamp": "daic_estimate_timestamp_seconds", "trusted": "daic_estimate_trusted",
    "drift_alarm": "daic_drift_alarm", "change_alarm": "daic_change_alarm",
    "reference_accuracy": "daic_reference_accuracy",
}


#: The largest Prometheus answer read: a selector's instant vector holds one sample per replica and
#: series, a few hundred bytes each.
MAX_PROMETHEUS_ANSWER_BYTES = 8 * 2**20


class PrometheusError(ValueError):
    """Prometheus answered, but not with what the source needs (its own error text included)."""


class PrometheusEstimate:
    """The online estimate from Prometheus, in one of two forms.

    **Selector** (``estimate.selector``, or a ``query`` that is just ``daic_estimated_accuracy{...}``):
    label matchers choosing the sidecars of one deployment. The source reads every series the
    sidecar exports for the version serving in ``role`` (``champion``; ``canary`` for the canary),
    one instant query, and pools the replicas it finds (each replica = one label set) as
    docs/operator.md ("Prometheus source") documents: ``n = Σ nᵢ``; accuracy, band and error scale
    weighted by window, ``Σ nᵢ·xᵢ / Σ nᵢ`` (the error scale so pooled is conservative: replicas'
    errors are mostly the same bias); trusted only if every replica is; a drift or change alarm if
    any replica's; the reading's time is the newest input of any replica
    (``daic_estimate_timestamp_seconds``), so with no new traffic the reading does not change.
    Replicas naming different model versions (a champion change reaching them one by one) are
    refused until they agree; a selector matching several deployments is refused.

    **Custom** (any other ``query``): PromQL of your own for the accuracy, with ``countQuery`` for
    the window size (required) and ``driftQuery`` (> 0: alarm); each must return one sample.
    Such an expression has no time of its own: each read is stamped with Prometheus's evaluation
    time and counts as new evidence, and trusted, the error scale and the version are unknown.

    Prometheus's own error text (bad PromQL, timeouts) is part of every error.
    """

    def __init__(self, base_url: str, query: str | None = None, count_query: str | None = None,
                 drift_query: str | None = None, timeout: float = 5.0,
                 session: requests.Session | None = None, *, selector: str | None = None,
                 role: str = "champion", max_age_s: float | None = None):
        self.base_url = base_url.rstrip("/")
        self.selector = selector if selector is not None else selector_of(query)
        self.query, self.count_query, self.drift_query = query, count_query, drift_query
        self.role, self.max_age_s = role, max_age_s
        self.timeout = timeout
        self.session = session or requests.Session()

    def _query(self, query: str) -> tuple[str, Any]:
        try:
            resp = http_client.send(self.session, "GET", f"{self.base_url}/api/v1/query", params={"query": query},
                                    timeout_s=self.timeout, max_bytes=MAX_PROMETHEUS_ANSWER_BYTES)
        except requests.RequestException as exc:
            raise PrometheusError(f"GET {self.base_url}/api/v1/query: {exc}") from None
        try:
            body = resp.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or resp.status_code != 200 or body.get("status") != "success":
            detail = (f"{body.get('errorType', 'error')}: {body.get('error')}" if isinstance(body, dict)
                      and body.get("error") else resp.text[:300])
            raise PrometheusError(f"query {query!r}: HTTP {resp.status_code}: {detail}")
        data = body.get("data")
        if not isinstance(data, dict):
            raise PrometheusError(f"query {query!r}: the answer has no data")
        return data.get("resultType"), data.get("result")

    def _scalar(self, query: str) -> tuple[float, datetime]:
        kind, result = self._query(query)
        try:
            if kind == "scalar":
                stamp, value = result
            elif kind == "vector" and result:
                if len(result) > 1:
                    raise PrometheusError(
                        f"query {query!r} returned {len(result)} series; a custom query must aggregate them "
                        "to one (or use estimate.selector, which pools replicas by window)")
                stamp, value = result[0]["value"]
            else:
                raise PrometheusError(f"query {query!r} returned no sample")
            return float(value), datetime.fromtimestamp(float(stamp), tz=timezone.utc)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            if isinstance(exc, PrometheusError):
                raise
            raise PrometheusError(f"query {query!r}: unexpected answer ({exc})") from None

    def selector_query(self) -> str:
        """The one instant query of the selector form."""
        names = "|".join(sorted(DAIC_SERIES.values()))
        inner = self.selector.strip()[1:-1].strip().rstrip(",")
        return "{" + ", ".join(x for x in (f'__name__=~"{names}"', inner, f'role="{self.role}"') if x) + "}"

    def read(self, now: datetime) -> EstimateReading | EstimateError:
        where = f"Prometheus {self.base_url}"
        try:
            reading = self._read_selector(now) if self.selector is not None else self._read_custom()
        except PrometheusError as exc:
            return EstimateError(f"{where}: {exc}", now)
        if isinstance(reading, str):
            return EstimateError(f"{where}: {reading}", now)
        return _stale(reading, now, self.max_age_s, where) or reading

    def _read_custom(self) -> EstimateReading | str:
        if not self.count_query:
            return ("a custom estimate.query needs estimate.countQuery (the window size): without it the "
                    "minimum-window rule cannot apply; or use estimate.selector")
        accuracy, stamp = self._scalar(str(self.query))
        n = self._scalar(self.count_query)[0]
        alarm = self._scalar(self.drift_query)[0] > 0 if self.drift_query else False
        if math.isnan(accuracy) or not 0.0 <= accuracy <= 1.0:
            return f"query {self.query!r} gave {accuracy}, not an accuracy in [0, 1]"
        if math.isnan(n) or n < 0:
            return f"query {self.count_query!r} gave {n}, not a window size"
        return EstimateReading(accuracy=accuracy, n=int(n), observed_at=stamp, drift_alarm=alarm)

    def _read_selector(self, now: datetime) -> EstimateReading | str:
        query = self.selector_query()
        kind, result = self._query(query)
        if kind != "vector" or not isinstance(result, list):
            raise PrometheusError(f"query {query!r}: expected a vector, got {kind}")
        field_of = {name: key for key, name in DAIC_SERIES.items()}
        replicas: dict[tuple, dict[str, Any]] = {}
        for series in result:
            labels = dict(series.get("metric", {}))
            key = field_of.get(labels.pop("__name__", ""))
            if key is None:
                continue
            try:
                value = float(series["value"][1])
            except (KeyError, TypeError, ValueError, IndexError):
                raise PrometheusError(f"query {query!r}: unreadable sample {series!r}") from None
            replicas.setdefault(tuple(sorted(labels.items())), {"labels": labels})[key] = value
        return pool_replicas(list(replicas.values()), self.role, self.selector)


def pool_replicas(replicas: list[dict[str, Any]], role: str, selector: str) -> EstimateReading | str:
    """One reading from the replicas' series (each a dict of DAIC_SERIES fields plus ``labels``),
    or the reason there is none. The aggregation PrometheusEstimate documents."""
    usable = [r for r in replicas if r.get("n", 0) > 0 and r.get("accuracy") is not None
              and not math.isnan(r["accuracy"])]
    if not usable:
        return (f"no {role} estimate for {selector}: {len(replicas)} replica(s) found"
                + (", none with inputs in its window" if replicas else
                   " (is the sidecar scraped, and does it serve a version in that role?)"))
    targets = sorted({(str(r["labels"].get("namespace", "")), str(r["labels"].get("deployment", ""))) for r in usable})
    if len(targets) > 1:
        named = ", ".join("/".join(x for x in t if x) for t in targets)
        return (f"{selector} matches the sidecars of {len(targets)} deployments ({named}); the estimate of one "
                "deployment pools only its replicas: narrow the selector (deployment=..., namespace=...)")
    versions = sorted({str(r["labels"].get("model_version")) for r in usable})
    if len(versions) > 1:
        found = [str(r["labels"].get("model_version")) for r in usable]
        counts = ", ".join(f"{v} on {found.count(v)}" for v in versions)
        return (f"the {role} series of {selector} name {len(versions)} model versions ({counts} replica(s)): "
                "a champion change is reaching the replicas; waiting until they agree")
    n = sum(r["n"] for r in usable)

    def pooled(key: str) -> float | None:
        if any(r.get(key) is None or math.isnan(r[key]) for r in usable):
            return None
        return sum(r["n"] * r[key] for r in usable) / n

    stamps = [r["timestamp"] for r in usable if r.get("timestamp") is not None and math.isfinite(r["timestamp"])]
    if not stamps:
        return (f"the {role} series of {selector} carry no daic_estimate_timestamp_seconds "
                "(a sidecar from before issue 23?)")
    references = [r["reference_accuracy"] for r in usable if r.get("reference_accuracy") is not None]
    accuracy = min(1.0, max(0.0, pooled("accuracy") or 0.0))
    return EstimateReading(
        accuracy=accuracy, n=int(n), observed_at=datetime.fromtimestamp(max(stamps), tz=timezone.utc),
        lower=pooled("lower"), upper=pooled("upper"), error_sd=pooled("error_sd"),
        trusted=all(r.get("trusted", 1.0) > 0 for r in usable),
        drift_alarm=any(r.get("drift_alarm", 0.0) > 0 for r in usable),
        change_alarm=any(r.get("change_alarm", 0.0) > 0 for r in usable),
        model_version=versions[0], reference_accuracy=max(references) if references else None)


def estimate_source(spec: EstimateSpec, session: requests.Session | None = None) -> EstimateSource:
    if spec.source is SourceKind.sidecar:
        return SidecarEstimate(str(spec.url), spec.timeout_seconds, session, max_age_s=spec.stale_after_seconds)
    return PrometheusEstimate(str(spec.prometheus_url), spec.query, spec.count_query, spec.drift_query,
                              spec.timeout_seconds, session, selector=spec.selector,
                              max_age_s=spec.stale_after_seconds)


def canary_source(spec: EstimateSpec, session: requests.Session | None = None) -> EstimateSource | None:
    """The canary's own estimate: ``canaryUrl``; with a selector, the same sidecars' series in
    role ``canary``; with a custom query, ``canaryQuery`` and ``canaryCountQuery``."""
    if spec.source is SourceKind.sidecar:
        return (SidecarEstimate(spec.canary_url, spec.timeout_seconds, session, max_age_s=spec.stale_after_seconds)
                if spec.canary_url else None)
    selector = spec.selector if spec.selector is not None else selector_of(spec.query)
    if selector is not None:
        return PrometheusEstimate(str(spec.prometheus_url), timeout=spec.timeout_seconds, session=session,
                                  selector=selector, role="canary", max_age_s=spec.stale_after_seconds)
    if spec.canary_query:
        return PrometheusEstimate(str(spec.prometheus_url), spec.canary_query, spec.canary_count_query, None,
                                  spec.timeout_seconds, session, max_age_s=spec.stale_after_seconds)
    return None
