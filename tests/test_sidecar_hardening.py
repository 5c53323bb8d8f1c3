"""The sidecar under bad and hostile input (issue 14): whatever it acknowledges can be replayed,
whatever it refuses is refused before anything is written and counted, memory and the checkpoint
stay bounded, an event cannot invent a model version, and a failed flush says so.

The sidecar, its oracles and the trained model are real; the object store is the real file://
store, wrapped where a test needs its writes to fail."""
from __future__ import annotations

import asyncio
import gzip
import json
import uuid

import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer

from daic.serving.loading import load_served_model
from daic.serving.protocol import build_response
from daic.sidecar.app import build_app
from daic.sidecar.assessment import AssessorPool
from daic.sidecar.config import SidecarConfig
from daic.sidecar.records import read_operational
from daic.sidecar.service import SidecarService
from daic.storage import StorageError
from test_serving_support import mnist_test_images, registered_store, seldon_request

DEEP = b"[" * 100_000 + b"]" * 100_000


def _event(kind, puid, body, *, version_node="classifier", **extra):
    headers = {"Ce-Specversion": "1.0", "Ce-Type": f"io.seldon.serving.{'feedback' if kind == 'feedback' else 'inference.' + kind}",
               "Ce-Source": "http://executor:8000/", "Ce-Id": str(uuid.uuid4()), "Content-Type": "application/json",
               "Ce-Modelid": version_node, "Ce-Requestid": puid, "Ce-Protocol": "seldon", **extra}
    return headers, body


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    store = registered_store(tmp_path_factory.mktemp("hardening") / "store")
    served = load_served_model(store, "mnist", "v0001")
    images, _ = mnist_test_images(6, start=900)

    def pair(i, version="v0001"):
        request = seldon_request(images[i:i + 1])
        outputs = served.outputs(np.asarray(json.loads(request)["data"]["ndarray"], np.float32))  # with the served self-agreement
        return request, json.dumps(build_response(**outputs, model="mnist", version=version)).encode()

    return {"store": store, "pool": AssessorPool(store, "mnist", window=100), "pair": pair}


def _run(world, tmp_path, scenario, store=None, **overrides):
    async def main():
        config = SidecarConfig(store_url=world["store"].url, state_dir=tmp_path / "state", deployment=tmp_path.name,
                               flush_interval_s=600, **overrides)
        service = SidecarService(config, store or world["store"], world["pool"])
        async with TestClient(TestServer(build_app(service))) as client:
            return await scenario(client, service)
    return asyncio.run(main())


async def _metric(client, name, **labels) -> float:
    text = await (await client.get("/metrics")).text()
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


TRUTH_NAN = b'{"truth": {"data": {"ndarray": [NaN]}}}'
CASES = [  # (endpoint, body, extra headers, status, words)
    ("event", b'{"data": {"ndarray": [[NaN]]}}', {}, 400, "not valid JSON"),
    ("event", b'{"data": {"ndarray": [[Infinity]]}}', {}, 400, "not valid JSON"),
    ("event", DEEP, {}, 400, "not valid JSON"),
    ("event", '{"data": {"ndarray": [[0.5]]}}'.encode("utf-16"), {}, 400, "not valid JSON"),
    ("event", b"\xff\xfe garbage", {}, 400, "not valid JSON"),
    ("event", b"not gzip at all", {"Content-Encoding": "gzip"}, 400, "cannot be read"),
    ("event", b"x" * 500_000, {}, 413, "max_body_bytes"),
    ("feedback", TRUTH_NAN, {}, 400, "not valid JSON"),
    ("feedback", b'{"reward": -Infinity}', {}, 400, "not valid JSON"),
    ("feedback", DEEP, {}, 400, "not valid JSON"),
    ("feedback", '{"reward": 1}'.encode("utf-16"), {}, 400, "not valid JSON"),
    ("feedback", b"not gzip at all", {"Content-Encoding": "gzip"}, 400, "cannot be read"),
    ("feedback", b"x" * 500_000, {}, 413, "max_body_bytes"),
    ("feedback", b'{"truth": {"data": {"ndarray": [[1, 2], [3]]}}}', {}, 400, "truth"),
    ("feedback", b'{"reward": true}', {}, 400, "reward must be"),
    ("feedback", b"[]", {}, 400, "JSON object"),
]


@pytest.mark.parametrize("endpoint, body, extra, status, words", CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_bad_bodies_are_refused_before_anything_is_written(world, tmp_path, endpoint, body, extra, status, words):
    async def scenario(client, service):
        before = service.wal.size_bytes()
        if endpoint == "event":
            headers, data = _event("request", "bad", body)
            resp = await client.post("/", data=data, headers={**headers, **extra})
        else:
            resp = await client.post("/api/v1.0/feedback", data=body,
                                     headers={"Content-Type": "application/json", "Seldon-Puid": "p", **extra})
        answer = await resp.json()
        return resp.status, answer, service.wal.size_bytes() - before, \
            await _metric(client, "daic_sidecar_events_dropped_total", reason="too_large" if status == 413 else "invalid")

    got, answer, written, counted = _run(world, tmp_path, scenario, max_body_bytes=400_000)
    assert got == status and words in answer["error"], answer
    assert written == 0 and counted == 1


def test_a_gzip_body_that_decodes_is_taken(world, tmp_path):
    request, response = world["pair"](0)

    async def scenario(client, service):
        statuses = []
        for kind, body in (("request", request), ("response", response)):
            headers, data = _event(kind, "zipped", gzip.compress(body))
            statuses.append((await client.post("/", data=data, headers={**headers, "Content-Encoding": "gzip"})).status)
        await client.post("/admin/flush")
        return statuses

    assert _run(world, tmp_path, scenario) == [200, 200]
    assert read_operational(world["store"], tmp_path.name).request_ids.tolist() == ["zipped"]


def test_a_version_the_registry_does_not_have_is_refused_and_never_exported(world, tmp_path):
    real, forged = world["pair"](0), world["pair"](1, version="v9999")

    async def scenario(client, service):
        for puid, (request, response) in (("real", real), *((f"forged-{i}", forged) for i in range(5))):
            for kind, body in (("request", request), ("response", response)):
                headers, data = _event(kind, puid, body)
                assert (await client.post("/", data=data, headers=headers)).status == 200
        await client.post("/admin/flush")
        estimate = await (await client.get("/estimate")).json()
        metrics = await (await client.get("/metrics")).text()
        return estimate, metrics, await _metric(client, "daic_sidecar_events_dropped_total", reason="unknown_version")

    estimate, metrics, refused = _run(world, tmp_path, scenario)
    assert refused == 10, "five predictions, two events each"
    assert estimate["model_version"] == "v0001" and estimate["n"] == 1 and estimate["accuracy"] is not None
    assert set(estimate["versions"]) == {"v0001"} and "v9999" not in metrics
    assert read_operational(world["store"], tmp_path.name).request_ids.tolist() == ["real"]


def test_feedback_takes_version_and_prediction_from_the_stored_prediction(world, tmp_path):
    request, response = world["pair"](2)
    predicted = int(np.argmax(json.loads(response)["data"]["ndarray"][0]))
    forged_response = {"data": {"ndarray": [[1.0 if c == (predicted + 1) % 10 else 0.0 for c in range(10)]]},
                       "meta": {"tags": {"daic.model_version": "made-up"}}}

    async def scenario(client, service):
        for kind, body in (("request", request), ("response", response)):
            headers, data = _event(kind, "fb", body)
            await client.post("/", data=data, headers=headers)
        feedback = {"truth": {"data": {"ndarray": [predicted]}}, "response": forged_response}
        resp = await client.post("/api/v1.0/feedback", json=feedback, headers={"Seldon-Puid": "fb"})
        await client.post("/admin/flush")
        return resp.status, await (await client.get("/estimate")).json(), await (await client.get("/metrics")).text()

    status, estimate, metrics = _run(world, tmp_path, scenario)
    assert status == 200
    assert estimate["versions"]["v0001"]["feedback_n"] == 1
    assert estimate["versions"]["v0001"]["feedback_accuracy"] == 1.0, "the stored prediction, not the body's"
    assert "made-up" not in metrics


def test_waiting_bodies_and_the_checkpoint_stay_bounded(world, tmp_path):
    request, _ = world["pair"](3)  # about 5 KB

    async def scenario(client, service):
        for i in range(60):  # requests whose responses never come
            headers, data = _event("request", f"lonely-{i}", request)
            assert (await client.post("/", data=data, headers=headers)).status == 200
        await client.post("/admin/flush")
        checkpoint = (service.config.wal_dir / "checkpoint.json").stat().st_size
        return service.join.pending_bytes, checkpoint, \
            await _metric(client, "daic_sidecar_events_dropped_total", reason="overflow")

    pending, checkpoint, overflow = _run(world, tmp_path, scenario, max_pending_bytes=6 * len(request))
    assert pending <= 6 * len(request)
    assert checkpoint < 8 * len(request)
    assert overflow >= 54


class _FailingWrites:
    """The real store, with every write failing while ``failing`` is set (an outage)."""

    def __init__(self, store):
        self._store, self.failing = store, True

    def __getattr__(self, name):
        attr = getattr(self._store, name)
        if name.startswith("put") and callable(attr):
            def put(*args, **kwargs):
                if self.failing:
                    raise StorageError("the object store is unreachable (test outage)")
                return attr(*args, **kwargs)
            return put
        return attr


def test_a_failed_flush_answers_an_error_and_the_records_survive_it(world, tmp_path):
    store = _FailingWrites(world["store"])
    request, response = world["pair"](4)

    async def scenario(client, service):
        for kind, body in (("request", request), ("response", response)):
            headers, data = _event(kind, "outage", body)
            await client.post("/", data=data, headers=headers)
        failed = await client.post("/admin/flush")
        failed_body = await failed.json()
        store.failing = False
        ok = await client.post("/admin/flush")
        return failed.status, failed_body, ok.status, (await ok.json())["batch"]

    status, body, ok, batch = _run(world, tmp_path, scenario, store=store)
    assert status == 503 and "store" in body["error"]
    assert ok == 200 and batch
    assert read_operational(world["store"], tmp_path.name).request_ids.tolist() == ["outage"]


def test_the_service_port_serves_reads_and_token_feedback_only(world, tmp_path):
    """Events, admin and feedback without a token are on the loopback ingest port only; the
    Service port answers the estimate, metrics and health, and feedback with the bearer token."""
    from daic.sidecar.app import build_public_app, read_token

    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token-0123456789\n")
    request, response = world["pair"](5)

    async def main():
        config = SidecarConfig(store_url=world["store"].url, state_dir=tmp_path / "state", deployment=tmp_path.name,
                               flush_interval_s=600)
        service = SidecarService(config, world["store"], world["pool"])
        await service.start()
        out = {}
        try:
            for name, token in (("with", read_token(token_file)), ("without", None)):
                async with TestClient(TestServer(build_public_app(service, token))) as client:
                    headers, data = _event("request", "outside", request)
                    out[name] = {
                        "event": (await client.post("/", data=data, headers=headers)).status,
                        "flush": (await client.post("/admin/flush")).status,
                        "reload": (await client.post("/admin/reload")).status,
                        "estimate": (await client.get("/estimate")).status,
                        "metrics": (await client.get("/metrics")).status,
                        "ready": (await client.get("/health/ready")).status,
                        "no token": (await client.post("/api/v1.0/feedback", json={"reward": 1},
                                                       headers={"Seldon-Puid": "p"})).status,
                        "wrong token": (await client.post("/api/v1.0/feedback", json={"reward": 1},
                                                          headers={"Seldon-Puid": "p",
                                                                   "Authorization": "Bearer nope"})).status,
                        "token": (await client.post("/api/v1.0/feedback", json={"reward": 1},
                                                    headers={"Seldon-Puid": "p",
                                                             "Authorization": "Bearer s3cret-token-0123456789"})).status,
                    }
        finally:
            await service.stop()
        return out

    out = asyncio.run(main())
    for name in ("with", "without"):
        assert out[name]["event"] in (404, 405) and out[name]["flush"] == 404 and out[name]["reload"] == 404
        assert out[name]["estimate"] == out[name]["metrics"] == out[name]["ready"] == 200
    assert (out["with"]["no token"], out["with"]["wrong token"], out["with"]["token"]) == (401, 401, 200)
    assert out["without"]["token"] == 403, "no token configured: feedback from outside is off"
    short = tmp_path / "short"
    short.write_text("abc")
    with pytest.raises(ValueError, match="at least 16"):
        read_token(short)


def test_header_bytes_that_are_not_utf8_are_a_400(world, tmp_path):
    async def raw_post(client, path, headers: bytes, body: bytes) -> int:
        reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
        writer.write(b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + headers
                     + b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
        await writer.drain()
        status = int((await reader.readline()).split()[1])
        writer.close()
        return status

    async def scenario(client, service):
        event = (b"Ce-Specversion: 1.0\r\nCe-Type: io.seldon.serving.inference.request\r\nCe-Source: s\r\n"
                 b"Ce-Id: e1\r\nCe-Modelid: classifier\r\nCe-Requestid: bad\xffpuid\r\n")
        return [await raw_post(client, b"/", event, b'{"data": {"ndarray": [[0.5]]}}'),
                await raw_post(client, b"/api/v1.0/feedback", b"Seldon-Puid: bad\xffpuid\r\n", b'{"reward": 1}'),
                service.wal.size_bytes()]

    assert _run(world, tmp_path, scenario) == [400, 400, 0]
