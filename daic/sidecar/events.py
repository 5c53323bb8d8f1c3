"""What Seldon Core v1's request logger posts, parsed with the CloudEvents SDK (pure).

The executor (``executor/logger/worker.go`` in seldon-core 1.x) sends each logged payload as a
CloudEvent 1.0 in HTTP *binary* mode: attributes in ``Ce-*`` headers, the Seldon JSON message
as the body with ``Content-Type: application/json``. Request and response are two events with
different ``Ce-Id`` (a fresh UUID each) that share ``Ce-Requestid`` (the Seldon-Puid):

====================== ==========================================================
``Ce-Type``            ``io.seldon.serving.inference.request`` / ``...response`` /
                       ``io.seldon.serving.feedback``
``Ce-Id``              unique per event
``Ce-Requestid``       the prediction's puid; joins request and response
``Ce-Modelid``         the graph node name
``Ce-Source``          the executor's URL
``Ce-Inferenceservicename``, ``Ce-Namespace``, ``Ce-Endpoint`` (predictor), ``Ce-Protocol``
====================== ==========================================================

Structured-mode events are accepted too (the SDK detects the mode). Anything else is an
:class:`EventError` naming the header or field, which the service turns into HTTP 400.
"""
from __future__ import annotations

import functools
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote, unquote

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
        data = _json_object(body)
        raw = body
    else:
        attributes, data = _structured(plain, body)
        raw = orjson.dumps(data)
    ce_type = attributes.get("type")
    kind = KIND_BY_TYPE.get(ce_type)
    if kind is None:
        raise EventError(f"Ce-Type {ce_type!r} is not a Seldon request-logger type; expected one of "
                         f"{', '.join(sorted(KIND_BY_TYPE))}")
    request_id = attributes.get("requestid")
    if not request_id:
        raise EventError("Ce-Requestid is missing: the sidecar joins request and response by it")
    content_type = str(attributes.get("datacontenttype") or "application/json")
    if "json" not in content_type:
        raise EventError(f"Content-Type {content_type!r} is not supported: the sidecar reads the REST "
                         "(JSON) protocol only")
    return LoggedEvent(
        kind=kind,
        event_id=str(attributes["id"]),
        request_id=str(request_id),
        time=now,
        model_id=str(attributes.get("modelid") or ""),
        body=data,
        raw=raw,
    )


_REQUIRED = ("specversion", "id", "source", "type")


def _binary_attributes(headers: Mapping[str, str]) -> dict[str, str]:
    """Attributes of a binary-mode event: ``ce-<name>`` headers, percent-decoded, plus
    ``datacontenttype`` from Content-Type; the four required attributes must be present."""
    attributes = {k[3:]: unquote(v) for k, v in headers.items() if k.startswith("ce-")}
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
                      event_id: str | None = None) -> tuple[dict[str, str], bytes]:
    """Headers and body of one binary-mode event, with the attributes Seldon's executor sets.

    The local gateway posts these so the sidecar sees what it sees in a cluster; tests use it to
    play the executor. The headers are written directly (the binding is a fixed mapping:
    ``ce-<attribute>`` with percent-encoded values, ``Content-Type`` for ``datacontenttype``)
    because building them through the SDK costs more CPU than the rest of the gateway's logging
    per event; tests check that the SDK's own encoder gives the same attributes and that the SDK
    parses these back.
    """
    if kind not in TYPE_BY_KIND:
        raise ValueError(f"kind must be one of {', '.join(TYPE_BY_KIND)}, got {kind!r}")
    headers = dict(_static_headers(kind, source, model_id, deployment, namespace, predictor))
    headers["ce-id"] = _quote(event_id) if event_id else str(uuid.uuid4())  # a UUID needs no quoting
    headers["ce-time"] = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
    headers["ce-requestid"] = _quote(request_id)
    return headers, body


@functools.lru_cache(maxsize=64)
def _static_headers(kind: str, source: str, model_id: str, deployment: str, namespace: str,
                    predictor: str) -> tuple[tuple[str, str], ...]:
    """The headers that are the same for every event of one gateway (quoted once: percent-encoding
    eleven headers per event was most of the encoder's cost)."""
    attributes = {"specversion": "1.0", "type": TYPE_BY_KIND[kind], "source": source, "modelid": model_id,
                  "inferenceservicename": deployment, "namespace": namespace, "endpoint": predictor,
                  "protocol": "seldon"}
    return (*((f"ce-{name}", _quote(value)) for name, value in attributes.items()),
            ("content-type", "application/json"))


def _quote(value: str) -> str:
    return quote(value, safe=_CE_SAFE)


# Printable ASCII except space, '"' and '%' stays as is (CloudEvents HTTP binding, 3.1.3.2).
_CE_SAFE = "".join(c for c in map(chr, range(0x21, 0x7F)) if c not in ' "%')
