"""CloudEvents parsing (Seldon request-logger shape); the join is in test_sidecar_join.py."""
from __future__ import annotations

import json

import pytest

from daic.sidecar.events import EventError, LoggedEvent, encode_cloudevent, parse_cloudevent

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
    (lambda h: h.update({"Ce-Type": "com.example"}), "not a Seldon request-logger type"),
    (lambda h: h.pop("Ce-Requestid"), "Ce-Requestid is missing"),
    (lambda h: h.pop("Ce-Modelid"), "Ce-Modelid is missing"),
    (lambda h: h.update({"Content-Type": "application/protobuf"}), "REST"),
    (lambda h: h.update({"Ce-Protocol": "v2"}), "Ce-Protocol 'v2'"),
    (lambda h: h.update({"Ce-Protocol": "tensorflow"}), "Ce-Protocol 'tensorflow'"),
    (lambda h: h.pop("Ce-Source"), "not a valid CloudEvent"),
    (lambda h: h.update({"Ce-Specversion": "0.3"}), "Specversion '0.3'"),
    (lambda h: h.pop("Ce-Id"), "missing required attribute.*Ce-Id"),
    (lambda h: h.pop("Ce-Specversion"), "Ce-Specversion"),
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


def test_structured_mode_parses_through_the_sdk_to_the_same_event():
    from cloudevents.core.bindings.http import to_structured
    from cloudevents.core.formats.json import JSONFormat
    from cloudevents.core.v1.event import CloudEvent

    headers, body = encode_cloudevent("request", "puid-7", BODY, source="http://gw/", model_id="classifier",
                                      event_id="e-7")
    binary = parse_cloudevent(headers, body, now=2.0)
    attrs = {k[3:].lower(): v for k, v in headers.items()
             if k.startswith("Ce-") and k not in ("Ce-Specversion", "Ce-Time")}
    message = to_structured(CloudEvent(attributes={**attrs, "datacontenttype": "application/json"},
                                       data=json.loads(BODY)), JSONFormat())
    structured = parse_cloudevent(message.headers, message.body, now=2.0)
    assert structured.body == binary.body and json.loads(structured.raw) == json.loads(binary.raw)
    assert (structured.kind, structured.event_id, structured.request_id, structured.model_id) == \
        (binary.kind, binary.event_id, binary.request_id, binary.model_id)


@pytest.mark.parametrize("name, value", [("Ce-Requestid", "a\udcffb"), ("Ce-Requestid", "line\nbreak"),
                                         ("Ce-Modelid", "tab\tnode"), ("Ce-Id", "\x00")])
def test_attributes_that_cannot_be_logged_are_refused(name, value):
    headers, body = encode_cloudevent("request", "r", BODY, source="s", model_id="m")
    headers[name] = value
    with pytest.raises(EventError, match=name):
        parse_cloudevent(headers, body, now=0)


def test_unicode_puids_are_kept():
    headers, body = encode_cloudevent("request", "puid-é-%41", BODY, source="s", model_id="m")
    assert parse_cloudevent(headers, body, now=0).request_id == "puid-é-%41"
