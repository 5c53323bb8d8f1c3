"""Contract tests from the executor's side: events built as the Seldon Core v1.18.2 executor sends
them, replayed through the sidecar, and the same client calls made through the local gateway.

What the executor sends was read from its source (github.com/SeldonIO/seldon-core, tag v1.18.2;
no code copied):

* ``executor/logger/worker.go``: one CloudEvent 1.0 per logged payload, HTTP binary mode, built with
  the CloudEvents Go SDK v1.2.0, whose codec (``pkg/cloudevents/transport/http/codec_v1.go``)
  writes ``Ce-Specversion``, ``Ce-Type``, ``Ce-Source``, ``Ce-Id``, ``Ce-Time``, ``Content-Type``
  (only when the payload has one) and the extensions ``Ce-Modelid``, ``Ce-Requestid``,
  ``Ce-Inferenceservicename``, ``Ce-Namespace``, ``Ce-Endpoint``, ``Ce-Protocol`` with
  ``http.Header.Set``: canonical names, raw values; the body is the payload's bytes;
* ``executor/logger/collector.go``, ``dispatcher.go``: a 10,000-event queue, 2 s write timeout,
  workers that log and drop on any error (no retry);
* ``executor/predictor/predictor_process.go``: every node with a logger logs a request before and a
  response after each successful stage, all under the request's puid with the node's name as
  ``Ce-Modelid``; feedback is logged with the feedback call's puid;
* ``executor/api/rest/server.go``, ``middlewares.go``, ``client.go``: the puid is the client's
  ``Seldon-Puid`` or a fresh UUID, returned in the ``Seldon-Puid`` response header (never in the
  body); bodies and Content-Types pass through unchanged; nodes are called at ``/predict``,
  ``/transform-input``, ``/send-feedback``.

The events below are written out by hand from that reading (``executor_event``), not with
daic's own encoder, so the sidecar is checked against the executor and not against itself. The
sidecar, its oracles and the trained model are real. On the gateway side the graph's nodes are
small aiohttp apps answering with fixed bytes (the real model's response bytes, produced once):
only the HTTP framing is under test here, and test_serving_stack.py runs the real
seldon-core microservices behind the gateway.
"""
from __future__ import annotations

import asyncio
import json
import random
import uuid

import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from daic.serving.gateway import Gateway, GatewayConfig
from daic.serving.loading import load_served_model
from daic.serving.protocol import build_response
from daic.sidecar.app import build_app
from daic.sidecar.assessment import AssessorPool
from daic.sidecar.config import SidecarConfig
from daic.sidecar.events import parse_cloudevent
from daic.sidecar.records import read_operational
from daic.sidecar.service import SidecarService
from test_serving_support import mnist_test_images, registered_store, seldon_request

TYPES = {"request": "io.seldon.serving.inference.request", "response": "io.seldon.serving.inference.response",
         "feedback": "io.seldon.serving.feedback"}
SINGLE = {"name": "classifier", "type": "MODEL", "logger": {"mode": "all"}, "children": []}
FILTER_ROOT_ONLY = {"name": "filter", "type": "TRANSFORMER", "logger": {"mode": "all"},
                    "children": [{"name": "classifier", "type": "MODEL", "children": []}]}
FILTER_BOTH = {**FILTER_ROOT_ONLY, "children": [{**SINGLE}]}


def executor_event(kind: str, puid: str, body: bytes, node: str = "classifier", *,
                   content_type: str | None = "application/json", protocol: str = "seldon") -> dict:
    """Headers of one event as the v1.18.2 executor's logger posts it (see the module docstring)."""
    headers = {"Ce-Specversion": "1.0", "Ce-Type": TYPES[kind], "Ce-Source": "http://mnist-default-0:8000/",
               "Ce-Id": str(uuid.uuid4()), "Ce-Time": "2026-12-06T12:00:00.123456789Z"}
    if content_type:
        headers["Content-Type"] = content_type
    headers.update({"Ce-Modelid": node, "Ce-Requestid": puid, "Ce-Inferenceservicename": "mnist",
                    "Ce-Namespace": "seldon", "Ce-Endpoint": "default", "Ce-Protocol": protocol})
    return {"headers": headers, "body": body}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    store = registered_store(tmp_path_factory.mktemp("contract") / "store")
    served = load_served_model(store, "mnist", "v0001")
    images, labels = mnist_test_images(8, start=700)

    def pair(rows):
        request = seldon_request(images[rows])
        x = np.asarray(json.loads(request)["data"]["ndarray"], dtype=np.float32)
        outputs = served.outputs(x)  # with the served self-agreement
        response = json.dumps(build_response(**outputs, model="mnist", version="v0001")).encode()
        return request, response, outputs["probs"].argmax(1)

    return {"store": store, "pool": AssessorPool(store, "mnist", window=1000), "pair": pair, "images": images,
            "labels": labels}


def _sidecar(world, tmp_path, scenario, graph=None, **overrides):
    async def main():
        config = SidecarConfig(store_url=world["store"].url, state_dir=tmp_path / "state", deployment=tmp_path.name,
                               flush_interval_s=600, graph=graph, **overrides)
        service = SidecarService(config, world["store"], world["pool"])
        async with TestClient(TestServer(build_app(service))) as client:
            return await scenario(client, service)
    return asyncio.run(main())


async def _post(client, event) -> tuple[int, dict]:
    # skip_auto_headers: an event without Content-Type (a client that sent none) stays without one
    resp = await client.post("/", data=event["body"], headers=event["headers"], skip_auto_headers=["Content-Type"])
    return resp.status, await resp.json()


async def _metric(client, name, **labels) -> float:
    text = await (await client.get("/metrics")).text()
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _transformed(request: bytes) -> bytes:
    """What an input filter hands the model: the same images, re-encoded (other bytes)."""
    return json.dumps(json.loads(request), indent=1).encode()


# -- the graphs ---------------------------------------------------------------------------------
def _graph_events(graph, puid, request, response):
    """Every event the executor logs for one prediction through ``graph`` (X -> T -> Y)."""
    t = _transformed(request)
    if graph is SINGLE:
        return [executor_event("request", puid, request), executor_event("response", puid, response)]
    root = [executor_event("request", puid, request, "filter"), executor_event("response", puid, t, "filter"),
            executor_event("request", puid, t, "filter"), executor_event("response", puid, response, "filter")]
    if graph is FILTER_ROOT_ONLY:
        return root
    return root + [executor_event("request", puid, t), executor_event("response", puid, response)]


@pytest.mark.parametrize("graph", [SINGLE, FILTER_ROOT_ONLY, FILTER_BOTH], ids=["single", "root-only", "both"])
def test_every_prediction_of_a_graph_is_one_record_of_the_client_input_and_final_answer(world, tmp_path, graph):
    rng = random.Random(1)
    pairs = {f"p{i}": world["pair"](slice(2 * i, 2 * i + 2)) for i in range(3)}

    async def scenario(client, service):
        events = [e for puid, (req, resp, _) in pairs.items() for e in _graph_events(graph, puid, req, resp)]
        rng.shuffle(events)  # the executor's logger workers deliver in any order
        statuses = [(await _post(client, e))[0] for e in events]
        await client.post("/admin/flush")
        return statuses, {name: await _metric(client, f"daic_sidecar_events_{name}_total")
                          for name in ("joined", "skipped", "duplicate")}

    statuses, counts = _sidecar(world, tmp_path, scenario, graph=graph)
    assert set(statuses) == {200}
    assert counts == {"joined": 3, "skipped": 6 if graph is FILTER_BOTH else 0, "duplicate": 0}
    records = read_operational(world["store"], tmp_path.name)
    assert sorted(records.request_ids.tolist()) == sorted([p for p in pairs for _ in range(2)])
    for puid, (req, _, predicted) in pairs.items():
        rows = records.request_ids == puid
        np.testing.assert_allclose(records.inputs[rows], np.asarray(json.loads(req)["data"]["ndarray"]), atol=1e-6)
        assert records.predictions[rows].tolist() == predicted.tolist()
    assert np.all(np.isfinite(records.p_correct))


def test_a_raw_percent_in_a_puid_is_kept_as_sent(world, tmp_path):
    req, resp, _ = world["pair"](slice(0, 1))

    async def scenario(client, service):
        for e in _graph_events(SINGLE, "a%41b%zz", req, resp):
            assert (await _post(client, e))[0] == 200
        await client.post("/admin/flush")

    _sidecar(world, tmp_path, scenario)
    assert read_operational(world["store"], tmp_path.name).request_ids.tolist() == ["a%41b%zz"]


def test_an_event_without_content_type_is_read_as_json(world, tmp_path):
    # The executor passes on the client's Content-Type, and the codec writes none when it is empty.
    req, resp, _ = world["pair"](slice(0, 1))

    async def scenario(client, service):
        statuses = [(await _post(client, executor_event("request", "bare", req, content_type=None)))[0],
                    (await _post(client, executor_event("response", "bare", resp)))[0]]
        await client.post("/admin/flush")
        return statuses

    assert _sidecar(world, tmp_path, scenario) == [200, 200]
    assert len(read_operational(world["store"], tmp_path.name)) == 1


@pytest.mark.parametrize("protocol, body", [
    ("v2", b'{"inputs": [{"name": "x", "shape": [1, 784], "datatype": "FP32", "data": [0.0]}]}'),
    ("kfserving", b'{"inputs": []}'),
    ("tensorflow", b'{"instances": [[0.0]]}'),
])
def test_another_protocol_is_refused_at_once_naming_it(world, tmp_path, protocol, body):
    async def scenario(client, service):
        status, answer = await _post(client, executor_event("request", "v2", body, protocol=protocol))
        return status, answer, await _metric(client, "daic_sidecar_events_dropped_total", reason="invalid")

    status, answer, invalid = _sidecar(world, tmp_path, scenario)
    assert status == 400 and f"Ce-Protocol '{protocol}'" in answer["error"] and invalid == 1


def test_feedback_links_by_the_puid_header_only(world, tmp_path):
    """With the header the feedback names the prediction; ``meta.puid`` in the body (here the
    client's own request meta, echoed by the model) never does; without the header the executor
    makes up a puid, so the feedback is recorded and counted as unlinked."""
    (req0, resp0, pred0), (req1, resp1, _) = world["pair"](slice(0, 4)), world["pair"](slice(4, 8))
    labels = world["labels"]
    truth = {"truth": {"data": {"ndarray": labels[:4].tolist()}}}
    echoed = json.loads(resp0)
    echoed["meta"]["puid"] = "client-meta-puid"

    async def scenario(client, service):
        for e in _graph_events(SINGLE, "pred-0", req0, resp0) + _graph_events(SINGLE, "pred-1", req1, resp1):
            await _post(client, e)
        with_header = json.dumps({**truth, "response": echoed}).encode()
        without_header = json.dumps({"truth": {"data": {"ndarray": labels[4:].tolist()}},
                                     "response": {**json.loads(resp1), "meta": {"puid": "pred-1"}}}).encode()
        statuses = [(await _post(client, executor_event("feedback", "pred-0", with_header)))[0],
                    (await _post(client, executor_event("feedback", str(uuid.uuid4()), without_header)))[0]]
        await client.post("/admin/flush")
        estimate = await (await client.get("/estimate")).json()
        return statuses, estimate, {link: await _metric(client, "daic_sidecar_feedback_total", link=link)
                                    for link in ("labels", "unlinked")}

    statuses, estimate, links = _sidecar(world, tmp_path, scenario)
    assert statuses == [200, 200]
    assert links == {"labels": 1, "unlinked": 1}
    version = estimate["versions"]["v0001"]
    assert version["feedback_n"] == 4
    assert version["feedback_accuracy"] == pytest.approx(float((pred0 == labels[:4]).mean()))


def test_reward_only_feedback_is_accepted_and_recorded(world, tmp_path):
    req, resp, pred = world["pair"](slice(0, 2))

    async def scenario(client, service):
        for e in _graph_events(SINGLE, "r-0", req, resp):
            await _post(client, e)
        status, _ = await _post(client, executor_event("feedback", "r-0", b'{"reward": 1.0}'))
        direct = await client.post("/api/v1.0/feedback", data=b'{"reward": 0}', headers={"Seldon-Puid": "r-0"})
        await client.post("/admin/flush")
        return status, direct.status, direct.headers.get("Seldon-Puid"), \
            await _metric(client, "daic_sidecar_feedback_total", link="reward")

    status, direct, puid, rewards = _sidecar(world, tmp_path, scenario)
    assert (status, direct, puid, rewards) == (200, 200, "r-0", 2)
    keys = [k for k in world["store"].list(f"operational/{tmp_path.name}/") if "/reward-" in k]
    assert len(keys) == 1
    stored = world["store"].get_arrays(keys[0])
    assert sorted(stored["reward"].tolist()) == [0.0, 0.0, 1.0, 1.0]
    assert set(stored["request_ids"].tolist()) == {"r-0"} and stored["predictions"].tolist()[:2] == pred.tolist()
    assert not [k for k in world["store"].list(f"operational/{tmp_path.name}/") if "/feedback-" in k]


def test_the_gap_is_exported_per_prediction(world, tmp_path):
    req, resp, _ = world["pair"](slice(0, 1))

    async def scenario(client, service):
        await _post(client, executor_event("request", "failed-in-the-model", req))
        await _post(client, executor_event("response", "request-dropped-upstream", resp))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        name = "daic_sidecar_predictions_incomplete_total"
        while (await _metric(client, name, gap="request_without_response") < 1
               or await _metric(client, name, gap="response_without_request") < 1):
            assert loop.time() < deadline, "the incomplete predictions were never given up on"
            await asyncio.sleep(0.1)  # polling the exported counter, not synchronising
        return await _metric(client, "daic_sidecar_pending_joins")

    assert _sidecar(world, tmp_path, scenario, join_timeout_s=0.5) == 0


# -- the same calls through the gateway -----------------------------------------------------------
class _Sink:
    """Stands in for the sidecar's ingest: keeps each event's raw header names, values and body."""

    def __init__(self):
        self.events = []

    async def post(self, request: web.Request) -> web.Response:
        raw = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.raw_headers]
        self.events.append({"raw": raw, "headers": dict(raw), "body": await request.read()})
        return web.Response(status=200)


def _node(answers):
    """A graph node's microservice: answers each path with fixed (status, body, content type) and
    keeps what it was sent."""
    calls = []

    async def handle(request: web.Request) -> web.Response:
        calls.append({"path": request.path, "content_type": request.headers.get("Content-Type"),
                      "puid": request.headers.get("Seldon-Puid"), "body": await request.read()})
        status, body, content_type = answers[request.path]
        return web.Response(status=status, body=body, headers={"Content-Type": content_type} if content_type else {})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app, calls


async def _through_gateway(graph, nodes, calls):
    """Run the gateway (and its real request-logger process) for ``graph`` with node apps
    ``nodes``; ``calls(client)`` makes the client's calls. Returns (results, sink events)."""
    sink = _Sink()
    sink_app = web.Application()
    sink_app.router.add_post("/", sink.post)
    servers = {name: TestServer(app) for name, app in nodes.items()}
    sink_server = TestServer(sink_app)
    for server in [*servers.values(), sink_server]:
        await server.start_server()
    config = GatewayConfig(model_url=str(servers["classifier"].make_url("")).rstrip("/"),
                           logger_url=str(sink_server.make_url("/")), graph=graph, namespace="seldon",
                           node_urls={n: str(s.make_url("")).rstrip("/") for n, s in servers.items()})
    gateway = Gateway(config)
    try:
        async with TestClient(TestServer(gateway.app())) as client:
            results = await calls(client)
        # leaving the client ran the gateway's cleanup: every logged event was delivered
        return results, sink.events, gateway.stats
    finally:
        for server in [*servers.values(), sink_server]:
            await server.close()


def _comparable(event):
    """An event without what differs per send (id, time, source)."""
    return {k: v for k, v in event["headers"].items() if (k.startswith("Ce-") or k == "Content-Type")
            and k not in ("Ce-Id", "Ce-Time", "Ce-Source")}, event["body"]


def test_the_gateway_logs_a_transformer_graph_as_the_executor_does(world):
    req, resp, _ = world["pair"](slice(0, 2))
    t = _transformed(req)
    filter_app, filter_calls = _node({"/transform-input": (200, t, "application/json")})
    model_app, model_calls = _node({"/predict": (200, resp, "application/json")})

    async def calls(client):
        r = await client.post("/api/v1.0/predictions", data=req,
                              headers={"Content-Type": "application/json", "Seldon-Puid": "g%41-1"})
        return r.status, await r.read(), r.headers.get("Seldon-Puid")

    (status, body, puid), events, stats = asyncio.run(
        _through_gateway(FILTER_ROOT_ONLY, {"filter": filter_app, "classifier": model_app}, calls))
    assert (status, body, puid) == (200, resp, "g%41-1"), "the answer is the model's bytes, puid in the header"
    assert [c["path"] for c in filter_calls + model_calls] == ["/transform-input", "/predict"]
    assert model_calls[0]["body"] == t and model_calls[0]["puid"] == "g%41-1"
    expected = _graph_events(FILTER_ROOT_ONLY, "g%41-1", req, resp)
    assert sorted(map(_comparable, events), key=repr) == sorted(map(_comparable, expected), key=repr)
    assert stats["events_sent"] == 4
    # replayed through the sidecar's join, the gateway's events give the client input and answer
    from daic.serving.graph import join_plan
    from daic.sidecar.join import JoinBuffer

    buf = JoinBuffer(plan=join_plan(FILTER_ROOT_ONLY))
    outcomes = [buf.add(parse_cloudevent(e["headers"], e["body"], now=0.0)) for e in events]
    (joined,) = [o.joined for o in outcomes if o.status == "joined"]
    assert (joined.request.raw, joined.response.raw, joined.request_id) == (req, resp, "g%41-1")


def test_the_gateway_frames_events_as_the_executor_does(world):
    req, resp, _ = world["pair"](slice(0, 1))
    model_app, model_calls = _node({"/predict": (200, resp, "application/json; charset=utf-8"),
                                    "/send-feedback": (200, b"{}", "application/json")})

    async def calls(client):
        plain = await client.post("/api/v1.0/predictions", data=req, headers={"Content-Type": "application/json"})
        bare = await client.post("/api/v1.0/predictions", data=req, skip_auto_headers=["Content-Type"])
        fb = await client.post("/seldon/seldon/mnist/api/v0.1/feedback", data=b'{"reward": 1}',
                               headers={"Content-Type": "application/json", "Seldon-Puid": "fb-1"})
        return [(r.status, await r.read(), r.headers.get("Seldon-Puid"), r.headers.get("Content-Type"))
                for r in (plain, bare, fb)]

    results, events, _ = asyncio.run(_through_gateway(SINGLE, {"classifier": model_app}, calls))
    (s1, b1, puid1, ct1), (s2, b2, puid2, _), (s3, _, puid3, _) = results
    assert (s1, b1, ct1) == (200, resp, "application/json; charset=utf-8")
    assert "puid" not in json.loads(b1)["meta"], "no meta.puid injected into the model's answer"
    assert puid1 and puid2 and puid1 != puid2 and puid3 == "fb-1"
    # the node got each client's Content-Type as it was: none for the bare client
    assert [c["content_type"] for c in model_calls if c["path"] == "/predict"] == ["application/json", ""]
    by_kind = {}
    for e in events:
        by_kind.setdefault((e["headers"]["Ce-Type"], e["headers"]["Ce-Requestid"]), []).append(e)
    request_bare = by_kind[(TYPES["request"], puid2)][0]
    assert "Content-Type" not in request_bare["headers"] and request_bare["body"] == req
    response = by_kind[(TYPES["response"], puid1)][0]
    assert response["headers"]["Content-Type"] == "application/json; charset=utf-8" and response["body"] == resp
    feedback = by_kind[(TYPES["feedback"], "fb-1")][0]
    assert feedback["body"] == b'{"reward": 1}'
    for e in events:  # canonical names, exactly the executor's set
        names = sorted(k for k, _ in e["raw"] if k.startswith("Ce-"))
        assert names == ["Ce-Endpoint", "Ce-Id", "Ce-Inferenceservicename", "Ce-Modelid", "Ce-Namespace",
                         "Ce-Protocol", "Ce-Requestid", "Ce-Source", "Ce-Specversion", "Ce-Time", "Ce-Type"], names
        assert e["headers"]["Ce-Protocol"] == "seldon" and e["headers"]["Ce-Modelid"] == "classifier"


def test_the_gateway_logs_any_request_and_no_response_to_a_refused_one(world):
    """The executor logs the request before calling the node, whatever the body, and a response
    only after a 200; the client gets the node's status and body unchanged."""
    refusal = b'{"status": {"code": 400, "info": "bad", "status": "FAILURE"}}'
    model_app, _ = _node({"/predict": (400, refusal, "application/json")})

    async def calls(client):
        r = await client.post("/api/v1.0/predictions", data=b"[1, 2]", headers={"Content-Type": "application/json"})
        return r.status, await r.read(), r.headers.get("Seldon-Puid")

    (status, body, puid), events, _ = asyncio.run(_through_gateway(SINGLE, {"classifier": model_app}, calls))
    assert (status, body) == (400, refusal)
    assert [(e["headers"]["Ce-Type"], e["headers"]["Ce-Requestid"], e["body"]) for e in events] == \
        [(TYPES["request"], puid, b"[1, 2]")]
