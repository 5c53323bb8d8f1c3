"""What Seldon Core v1's request logger posts, parsed without the SDK on the hot path (pure).

The v1.18.2 executor (``executor/logger/worker.go``, ``executor/predictor/predictor_process.go``)
sends each logged payload as a CloudEvent 1.0 in HTTP *binary* mode: attributes in ``Ce-*``
headers with canonical names and raw values, the payload exactly as the client or the model sent
it as the body, with its own ``Content-Type`` (absent when the client sent none). Every event has
its own ``Ce-Id`` (a fresh UUID); all events of one prediction, from every graph node with a
logger, share ``Ce-Requestid`` (the Seldon-Puid), and ``Ce-Modelid`` names the node
(daic.serving.graph says how many each node sends):

====================== ==========================================================
``Ce-Type``            ``io.seldon.serving.inference.request`` / ``...response`` /
                       ``io.seldon.serving.feedback``
``Ce-Id``              unique per event
``Ce-Requestid``       the prediction's puid (the feedback call's, for feedback)
``Ce-Modelid``         the graph node that logged it
``Ce-Source``          the executor's URL
``Ce-Inferenceservicename``, ``Ce-Namespace``, ``Ce-Endpoint`` (predictor), ``Ce-Protocol``
====================== ==========================================================

Structured-mode events are accepted too (through the SDK). Anything else, including a
``Ce-Protocol`` other than ``seldon`` or a non-JSON body, is an :class:`EventError` naming the
header or field, which the service turns into HTTP 400.
"""
from __future__ import annotations

import functools
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import orjson

CE_REQUEST = "io.seldon.serving.inference.request"
CE_RESPONSE = "io.seldon.serving.inference.response"
CE_FEEDBACK = "io.seldon.serving.feedback"
KIND_BY_TYPE = {CE_REQUEST: "request", CE_RESPONSE: "response", CE_FEEDBACK: "feedback"}
TYPE_BY_KIND = {v: k for k, v in KIND_BY_TYPE.items()}


class EventError(ValueError):
    """A logged event the sidecar cannot accept (HTTP 400)."""


@dataclass(frozen=True)
class LoggedEvent:
    """One accepted event: ``kind`` is request / response / feedback; ``body`` the parsed Seldon
    message; ``raw`` the body bytes exactly as received (what the write-ahead log keeps)."""

    kind: str
    event_id: str
    request_id: str
    time: float
    model_id: str
    body: dict
    raw: bytes

    def to_wal(self) -> dict[str, Any]:
        return {"k": self.kind, "id": self.event_id, "rid": self.request_id, "t": self.time,
                "m": self.model_id, "b": self.raw.decode("utf-8")}

    @classmethod
    def from_wal(cls, entry: Mapping[str, Any]) -> "LoggedEvent":
        raw = entry["b"].encode("utf-8")
        return cls(kind=entry["k"], event_id=entry["id"], request_id=entry["rid"], time=float(entry["t"]),
                   model_id=entry.get("m", ""), body=orjson.loads(raw), raw=raw)


def parse_cloudevent(headers: Mapping[str, str], body: bytes, *, now: float) -> LoggedEvent:
    """Parse one HTTP POST from the request logger; ``now`` (the time the sidecar accepts it)
    becomes the event's time, so records are ordered by one clock whatever the sender's.

    Binary mode (what Seldon's executor sends) is read directly from the ``Ce-*`` headers: the
    binding is a fixed mapping (CloudEvents HTTP binding 1.0, section 3.1.3) and going through the
    SDK decoded every body with the standard ``json`` module on the sidecar's event loop, which was
    the largest single CPU cost per event (see docs/benchmarks/serving.md); the body is decoded with
    ``orjson`` instead. Structured mode goes through the SDK. Tests check both paths agree.
    """
    plain = {str(k).lower(): str(v) for k, v in headers.items()}
    if any(k.startswith("ce-") for k in plain):
        attributes = _binary_attributes(plain)
        _check_readable(attributes)
        data = _json_object(body)
        raw = body
    else:
        attributes, data = _structured(plain, body)
        _check_readable(attributes)
        raw = orjson.dumps(data)
    ce_type = attributes.get("type")
    kind = KIND_BY_TYPE.get(ce_type)
    if kind is None:
        raise EventError(f"Ce-Type {ce_type!r} is not a Seldon request-logger type; expected one of "
                         f"{', '.join(sorted(KIND_BY_TYPE))}")
    request_id = attributes.get("requestid")
    if not request_id:
        raise EventError("Ce-Requestid is missing: the sidecar joins request and response by it")
    for name in ("id", "requestid", "modelid"):
        value = str(attributes.get(name) or "")
        if not value.isprintable() or _has_surrogates(value):
            raise EventError(f"Ce-{name.capitalize()} must be printable UTF-8 text, got {value[:80]!r}")
    model_id = str(attributes.get("modelid") or "")
    if not model_id:
        raise EventError("Ce-Modelid is missing: the executor names the graph node that logged the event in it, "
                         "and the sidecar joins by request id and node")
    return LoggedEvent(
        kind=kind,
        event_id=str(attributes["id"]),
        request_id=str(request_id),
        time=now,
        model_id=model_id,
        body=data,
        raw=raw,
    )


def _has_surrogates(value: str) -> bool:
    """Header bytes that were not UTF-8 reach us as lone surrogates (aiohttp decodes with
    ``surrogateescape``); they cannot be written to the log or the store."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _check_readable(attributes: Mapping[str, Any]) -> None:
    """The sidecar reads the Seldon protocol's JSON messages only: another ``Ce-Protocol`` (the
    executor sets it from the deployment's ``protocol``: ``v2``, ``kfserving``, ``tensorflow``) or
    a non-JSON Content-Type is refused at once with a 400 naming it, rather than accepted and lost
    later as unreadable. A missing Content-Type is read as JSON (the executor passes on the
    client's, which may be absent)."""
    protocol = attributes.get("protocol")
    if protocol is not None and str(protocol) != "seldon":
        raise EventError(f"Ce-Protocol {protocol!r} is not supported: the sidecar reads the Seldon protocol "
                         "(SeldonDeployment spec.protocol: seldon) only")
    content_type = str(attributes.get("datacontenttype") or "application/json")
    if "json" not in content_type.lower():
        raise EventError(f"Content-Type {content_type!r} is not supported: the sidecar reads the REST "
                         "(JSON) protocol only")


_REQUIRED = ("specversion", "id", "source", "type")


def _binary_attributes(headers: Mapping[str, str]) -> dict[str, str]:
    """Attributes of a binary-mode event: ``ce-<name>`` headers, taken as they are (the executor's
    Go SDK writes values raw, never percent-encoded, so a ``%`` in a puid is a ``%``), plus
    ``datacontenttype`` from Content-Type; the four required attributes must be present."""
    attributes = {k[3:]: v for k, v in headers.items() if k.startswith("ce-")}
    if "content-type" in headers:
        attributes["datacontenttype"] = headers["content-type"]
    missing = [name for name in _REQUIRED if not attributes.get(name)]
    if missing:
        raise EventError(f"not a valid CloudEvent: missing required attribute(s) "
                         f"{', '.join('Ce-' + m.capitalize() for m in missing)}")
    if attributes["specversion"] != "1.0":
        raise EventError(f"not a valid CloudEvent: Ce-Specversion {attributes['specversion']!r} is not supported "
                         "(expected '1.0')")
    return attributes


def _json_object(body: bytes) -> dict:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise EventError(f"event data is not valid JSON ({exc}); expected a Seldon message") from None
    if not isinstance(data, dict):
        raise EventError("event data is not a JSON object; expected a Seldon message")
    return data


def _structured(headers: Mapping[str, str], body: bytes) -> tuple[dict, dict]:
    """A structured-mode event (attributes and data in one JSON document), through the SDK."""
    from cloudevents.core.bindings.http import HTTPMessage, from_http
    from cloudevents.core.exceptions import BaseCloudEventException
    from cloudevents.core.formats.json import JSONFormat

    try:
        event = from_http(HTTPMessage(headers=dict(headers), body=body), JSONFormat())
    except (BaseCloudEventException, ValueError, TypeError, KeyError) as exc:
        raise EventError(f"not a valid CloudEvent: {exc}") from None
    data = event.get_data()
    if not isinstance(data, dict):
        raise EventError("event data is not a JSON object; expected a Seldon message")
    return event.get_attributes(), data


def encode_cloudevent(kind: str, request_id: str, body: bytes, *, source: str, model_id: str,
                      deployment: str = "", namespace: str = "", predictor: str = "",
                      event_id: str | None = None, content_type: str | None = "application/json",
                      protocol: str = "seldon") -> tuple[dict[str, str], bytes]:
    """Headers and body of one binary-mode event, as the v1.18.2 executor's logger sends it.

    ``executor/logger/worker.go`` builds the event with the CloudEvents Go SDK v1.2.0, whose HTTP
    binary codec (``pkg/cloudevents/transport/http/codec_v1.go``) writes each attribute with
    ``http.Header.Set``: canonical names (``Ce-Requestid``), values as they are (no
    percent-encoding), ``Content-Type`` only when the payload had one (the client's or the
    model's, passed through), and the body exactly as the client or the model sent it. The local
    gateway posts these so the sidecar sees what it sees in a cluster; tests use it to play the
    executor. ``request_id`` is the Seldon-Puid as the client gave it.
    """
    if kind not in TYPE_BY_KIND:
        raise ValueError(f"kind must be one of {', '.join(TYPE_BY_KIND)}, got {kind!r}")
    headers = {"Ce-Specversion": "1.0", "Ce-Type": TYPE_BY_KIND[kind], "Ce-Source": source,
               "Ce-Id": event_id or str(uuid.uuid4()),
               "Ce-Time": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")}
    if content_type:
        headers["Content-Type"] = content_type
    headers.update(_static_headers(model_id, deployment, namespace, predictor, protocol))
    headers["Ce-Requestid"] = request_id
    return dict(sorted(headers.items())), body  # Go's net/http writes header names sorted


@functools.lru_cache(maxsize=64)
def _static_headers(model_id: str, deployment: str, namespace: str, predictor: str,
                    protocol: str) -> tuple[tuple[str, str], ...]:
    """The extension attributes that are the same for every event of one graph node."""
    return (("Ce-Modelid", model_id), ("Ce-Inferenceservicename", deployment), ("Ce-Namespace", namespace),
            ("Ce-Endpoint", predictor), ("Ce-Protocol", protocol))
