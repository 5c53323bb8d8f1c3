"""CloudEvents parsing (Seldon request-logger shape) and the request/response join."""
from __future__ import annotations

import json

import pytest

from daic.sidecar.events import EventError, LoggedEvent, encode_cloudevent, parse_cloudevent
from daic.sidecar.join import JoinBuffer

BODY = json.dumps({"data": {"ndarray": [[0.0] * 784]}}).encode()


def _event(kind, rid, t=0.0, eid=None):
    headers, body = encode_cloudevent(kind, rid, BODY, source="http://executor", model_id="classifier",
                                      event_id=eid)
    return parse_cloudevent(headers, body, now=t)


def test_executor_headers_parse_case_insensitively():
    # Seldon's Go SDK writes canonical header names ("Ce-Requestid"); aiohttp gives them as sent.
    headers = {"Ce-Id": "e1", "Ce-Specversion": "1.0", "Ce-Type": "io.seldon.serving.inference.response",
               "Ce-Source": "http://0.0.0.0:8000", "Ce-Requestid": "puid-1", "Ce-Modelid": "classifier",
               "Ce-Inferenceservicename": "mnist", "Ce-Namespace": "ml", "Ce-Endpoint": "default",
               "Ce-Protocol": "seldon", "Ce-Time": "2025-01-01T00:00:00Z", "Content-Type": "application/json"}
    event = parse_cloudevent(headers, BODY, now=123.0)
    assert (event.kind, event.event_id, event.request_id, event.model_id) == ("response", "e1", "puid-1", "classifier")
    assert event.body == json.loads(BODY) and event.raw == BODY and event.time == 123.0


def test_wal_round_trip_keeps_the_bytes():
    event = _event("request", "r1", 5.0)
    back = LoggedEvent.from_wal(json.loads(json.dumps(event.to_wal())))
    assert back == event


@pytest.mark.parametrize("mutate, words", [
    (lambda h: h.update({"ce-type": "com.example"}), "not a Seldon request-logger type"),
    (lambda h: h.pop("ce-requestid"), "Ce-Requestid is missing"),
    (lambda h: h.update({"content-type": "application/protobuf"}), "REST"),
    (lambda h: h.pop("ce-source"), "not a valid CloudEvent"),
    (lambda h: h.update({"ce-specversion": "0.3"}), "Specversion '0.3'"),
    (lambda h: h.pop("ce-id"), "missing required attribute.*Ce-Id"),
    (lambda h: h.pop("ce-specversion"), "Ce-Specversion"),
])
def test_bad_headers(mutate, words):
    headers, body = encode_cloudevent("request", "r", BODY, source="s", model_id="m")
    mutate(headers)
    with pytest.raises(EventError, match=words):
        parse_cloudevent(headers, body, now=0)


@pytest.mark.parametrize("body, words", [(b"{not json", "not valid JSON"), (b"[1, 2]", "not a JSON object"),
                                         (b"", "not valid JSON")])
def test_bad_bodies(body, words):
    headers, _ = encode_cloudevent("request", "r", BODY, source="s", model_id="m")
    with pytest.raises(EventError, match=words):
        parse_cloudevent(headers, body, now=0)


@pytest.mark.parametrize("first", ["request", "response"])
def test_join_in_either_order(first):
    second = "response" if first == "request" else "request"
    buf = JoinBuffer(timeout_s=10)
    assert buf.add(_event(first, "a", 1.0)).status == "pending"
    out = buf.add(_event(second, "a", 2.0))
    assert out.status == "joined"
    assert out.joined.request.kind == "request" and out.joined.response.kind == "response"
    assert out.joined.time == 1.0 and len(buf) == 0


def test_duplicates_are_ignored_by_request_id():
    buf = JoinBuffer(timeout_s=10)
    assert buf.add(_event("request", "a")).status == "pending"
    assert buf.add(_event("request", "a")).status == "duplicate"  # retried POST, new Ce-Id
    assert buf.add(_event("response", "a")).status == "joined"
    assert buf.add(_event("response", "a")).status == "duplicate"
    assert buf.add(_event("request", "a")).status == "duplicate"
    assert len(buf) == 0


def test_expiry_reports_unanswered_halves_and_late_partners_are_duplicates():
    buf = JoinBuffer(timeout_s=5)
    buf.add(_event("request", "old", 0.0))
    buf.add(_event("request", "new", 4.0))
    expired = buf.expire(now=5.0)
    assert [e.request_id for e in expired] == ["old"]
    assert [e.request_id for e in buf.pending_events()] == ["new"]
    assert buf.add(_event("response", "old", 6.0)).status == "duplicate"


def test_overflow_evicts_oldest():
    buf = JoinBuffer(timeout_s=5, max_pending=2)
    buf.add(_event("request", "a"))
    buf.add(_event("request", "b"))
    out = buf.add(_event("request", "c"))
    assert [e.request_id for e in out.evicted] == ["a"]
    assert len(buf) == 2


def test_restore_round_trip():
    buf = JoinBuffer(timeout_s=5)
    buf.add(_event("request", "a"))
    buf.add(_event("request", "b"))
    buf.add(_event("response", "b"))
    other = JoinBuffer(timeout_s=5)
    other.restore(buf.pending_events(), buf.completed_ids())
    assert other.add(_event("response", "b")).status == "duplicate"
    assert other.add(_event("response", "a")).status == "joined"


def test_encoder_matches_the_sdk_binary_encoding():
    from cloudevents.core.bindings.http import to_binary
    from cloudevents.core.formats.json import JSONFormat
    from cloudevents.core.v1.event import CloudEvent

    ours, body = encode_cloudevent("response", "puid 1%", BODY, source="http://gw:8003/", model_id="classifier",
                                   deployment="mnist", namespace="ml", predictor="default", event_id="e-1")
    attrs = {k[3:]: v for k, v in ours.items() if k.startswith("ce-")}
    sdk = to_binary(CloudEvent(attributes={**{k: v for k, v in attrs.items() if k not in ("specversion", "time")},
                                           "requestid": "puid 1%", "datacontenttype": "application/json"},
                               data=None), JSONFormat()).headers
    assert {k for k in sdk} == set(ours)
    for name in ours:
        if name != "ce-time":
            assert ours[name] == sdk[name], name
    event = parse_cloudevent(ours, body, now=1.0)
    assert (event.request_id, event.event_id, event.kind) == ("puid 1%", "e-1", "response")


def test_structured_mode_parses_through_the_sdk_to_the_same_event():
    from cloudevents.core.bindings.http import to_structured
    from cloudevents.core.formats.json import JSONFormat
    from cloudevents.core.v1.event import CloudEvent

    headers, body = encode_cloudevent("request", "puid-7", BODY, source="http://gw/", model_id="classifier",
                                      event_id="e-7")
    binary = parse_cloudevent(headers, body, now=2.0)
    attrs = {k[3:]: v for k, v in headers.items() if k.startswith("ce-") and k not in ("ce-specversion", "ce-time")}
    message = to_structured(CloudEvent(attributes={**attrs, "datacontenttype": "application/json"},
                                       data=json.loads(BODY)), JSONFormat())
    structured = parse_cloudevent(message.headers, message.body, now=2.0)
    assert structured.body == binary.body and json.loads(structured.raw) == json.loads(binary.raw)
    assert (structured.kind, structured.event_id, structured.request_id, structured.model_id) == \
        (binary.kind, binary.event_id, binary.request_id, binary.model_id)
