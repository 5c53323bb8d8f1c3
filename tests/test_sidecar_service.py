"""The sidecar in-process (aiohttp test server), fed the CloudEvents Seldon's logger sends, with
real model outputs and real oracles fitted on a registered version's reference."""
from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer

from daic.models.registry import ModelRegistry
from daic.serving.loading import load_served_model
from daic.serving.protocol import build_response
from daic.sidecar.app import build_app
from daic.sidecar.assessment import AssessorPool
from daic.sidecar.config import SidecarConfig
from daic.sidecar.events import encode_cloudevent
from daic.sidecar.records import read_operational
from daic.sidecar.service import Backpressure, SidecarService
from test_serving_support import mnist_test_images, register_version, registered_store, seldon_request


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    store = registered_store(tmp_path_factory.mktemp("sidecar") / "store")
    v1 = "v0001"
    # One pool for the module: each version's oracles are fitted once, not once per test.
    pool = AssessorPool(store, "mnist", window=1000)
    return {"store": store, "v1": v1, "served": {v1: load_served_model(store, "mnist", v1)}, "pool": pool}


def _pair(registry, version, images):
    """(request body, response body) exactly as the model server would produce them."""
    served = registry["served"][version]
    request = seldon_request(images)
    decoded = np.asarray(json.loads(request)["data"]["ndarray"], dtype=np.float32)
    outputs = served.outputs(decoded)  # with the served self-agreement
    response = json.dumps(build_response(**outputs, model="mnist", version=version)).encode()
    return request, response, outputs["probs"].argmax(1)


def _event(kind, rid, body, **kw):
    return encode_cloudevent(kind, rid, body, source="http://executor:8000", model_id="classifier", **kw)


def _run(registry, tmp_path, scenario, **overrides):
    async def main():
        config = SidecarConfig(store_url=registry["store"].url, state_dir=tmp_path / "state",
                               deployment=overrides.pop("deployment", tmp_path.name), flush_interval_s=600,
                               **overrides)
        service = SidecarService(config, registry["store"], registry["pool"])
        async with TestClient(TestServer(build_app(service))) as client:
            return await scenario(client, service)
    return asyncio.run(main())


async def _post(client, headers_body, status=200):
    headers, body = headers_body
    resp = await client.post("/", data=body, headers=headers)
    text = await resp.text()
    assert resp.status == status, text
    return json.loads(text)


async def _post_prediction(client, rid, request, response):
    """Both halves of one logged prediction, request first, as the executor sends them."""
    await _post(client, _event("request", rid, request))
    await _post(client, _event("response", rid, response))


async def _metric(client, name, **labels):
    text = await (await client.get("/metrics")).text()
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_halves_in_either_order_and_duplicates_give_one_record_per_input(registry, tmp_path):
    images, _ = mnist_test_images(12)
    pairs = {f"req-{i}": _pair(registry, registry["v1"], images[2 * i:2 * i + 2]) for i in range(6)}

    async def scenario(client, service):
        for i, (rid, (req, resp, _)) in enumerate(pairs.items()):
            order = [("request", req), ("response", resp)]
            for kind, body in (order if i % 2 == 0 else order[::-1]):
                await _post(client, _event(kind, rid, body))
        # Duplicates: a retried POST of a half (new Ce-Id) and halves of an already joined request.
        await _post(client, _event("request", "req-0", pairs["req-0"][0]))
        await _post(client, _event("response", "req-3", pairs["req-3"][1]))
        await _post(client, _event("response", "req-3", pairs["req-3"][1], event_id="same-id"))
        flushed = await (await client.post("/admin/flush")).json()
        return flushed, await _metric(client, "daic_sidecar_events_joined_total"), \
            await _metric(client, "daic_sidecar_events_duplicate_total")

    flushed, joined, duplicates = _run(registry, tmp_path, scenario)
    assert flushed["batch"].startswith(f"operational/{tmp_path.name}/") and flushed["batch"].endswith(".parquet")
    assert (joined, duplicates) == (6, 3)
    records = read_operational(registry["store"], tmp_path.name)
    assert sorted(records.ids.tolist()) == sorted(f"req-{i}:{r}" for i in range(6) for r in range(2))
    for rid, (req, _, predicted) in pairs.items():
        rows = records.request_ids == rid
        np.testing.assert_allclose(records.inputs[rows], np.asarray(json.loads(req)["data"]["ndarray"]), atol=1e-6)
        assert records.predictions[rows].tolist() == predicted.tolist()
    assert set(records.model_version.tolist()) == {registry["v1"]}
    assert records.embeddings.shape == (12, 128) and records.shadow_probs.shape == (12, 10)
    assert np.all((records.p_correct >= 0) & (records.p_correct <= 1))
    assert np.all((records.drift >= 0) & (records.drift <= 1))


def test_malformed_events_get_400_naming_the_problem_and_are_counted(registry, tmp_path):
    images, _ = mnist_test_images(1)
    req, _, _ = _pair(registry, registry["v1"], images)

    async def scenario(client, service):
        headers, body = _event("request", "r", req)
        cases = [
            ({**headers, "Ce-Type": "io.example.other"}, body, "not a Seldon request-logger type"),
            ({k: v for k, v in headers.items() if k != "Ce-Requestid"}, body, "Ce-Requestid is missing"),
            (headers, b'{"data": {"ndarray": [[0.1', "not valid JSON"),
            (_event("feedback", "r", b'{"reward": "high"}')[0], b'{"reward": "high"}', "reward must be"),
            ({**headers, "Ce-Protocol": "v2"}, body, "Ce-Protocol 'v2' is not supported"),
        ]
        messages = []
        for h, b, words in cases:
            messages.append((words, (await _post(client, (h, b), status=400))["error"]))
        return messages, await _metric(client, "daic_sidecar_events_dropped_total", reason="invalid")

    messages, invalid = _run(registry, tmp_path, scenario)
    for words, message in messages:
        assert words in message
    assert invalid == 5


def test_feedback_in_seldon_shape_and_as_logged_events(registry, tmp_path):
    images, labels = mnist_test_images(8, start=100)
    pairs = [_pair(registry, registry["v1"], images[4 * i:4 * i + 4]) for i in range(2)]

    async def scenario(client, service):
        for i, (req, resp, _) in enumerate(pairs):
            await _post_prediction(client, f"p{i}", req, resp)
        # 1) the Seldon feedback API shape, posted to the sidecar with the prediction's Seldon-Puid
        feedback = {"request": json.loads(pairs[0][0]), "response": json.loads(pairs[0][1]), "reward": 0.0,
                    "truth": {"data": {"ndarray": labels[:4].tolist()}}}
        resp = await client.post("/api/v1.0/feedback", json=feedback, headers={"Seldon-Puid": "p0"})
        assert resp.status == 200, await resp.text()
        # 2) what the executor logs for a feedback call: one-hot truth, joined by Ce-Requestid
        onehot = np.eye(10)[labels[4:]].tolist()
        body = json.dumps({"truth": {"data": {"ndarray": onehot}}}).encode()
        await _post(client, _event("feedback", "p1", body))
        bad = await client.post("/api/v1.0/feedback", json={"truth": {"data": {"ndarray": [[0.5]]}}})
        assert bad.status == 400 and "class" in (await bad.json())["error"]
        await client.post("/admin/flush")
        return await (await client.get("/estimate")).json()

    estimate = _run(registry, tmp_path, scenario)
    predicted = np.concatenate([p[2] for p in pairs])
    fb = estimate["versions"][registry["v1"]]
    assert fb["feedback_n"] == 8
    assert fb["feedback_accuracy"] == pytest.approx(float((predicted == labels).mean()))
    keys = [k for k in registry["store"].list(f"operational/{tmp_path.name}/") if "/feedback-" in k]
    assert len(keys) == 1
    stored = registry["store"].get_arrays(keys[0])
    assert sorted(stored["labels"].tolist()) == sorted(labels.tolist())
    assert np.all(np.isfinite(stored["p_correct"]))


def test_backpressure_refuses_instead_of_blocking_and_counts(registry, tmp_path):
    images, _ = mnist_test_images(1)
    req, _, _ = _pair(registry, registry["v1"], images)

    async def scenario(client, service):
        from daic.sidecar.events import parse_cloudevent

        events = [parse_cloudevent(*_event("request", f"r{i}", req), now=0.0) for i in range(3)]
        # No await between the calls: the scorer cannot drain the queue in between.
        service.accept(events[0])
        service.accept(events[1])
        with pytest.raises(Backpressure, match="max_queue 2"):
            service.accept(events[2])
        service.accepting = False  # as while stopping: HTTP answers 503 with Retry-After
        headers, body = _event("request", "r9", req)
        resp = await client.post("/", data=body, headers=headers)
        service.accepting = True
        return resp.status, resp.headers.get("Retry-After"), \
            await _metric(client, "daic_sidecar_events_dropped_total", reason="backpressure")

    status, retry, dropped = _run(registry, tmp_path, scenario, max_queue=2)
    assert (status, retry, dropped) == (503, "1", 2)


def test_unanswered_request_is_dropped_and_counted_after_the_timeout(registry, tmp_path):
    images, _ = mnist_test_images(1)
    req, _, _ = _pair(registry, registry["v1"], images)

    async def scenario(client, service):
        await _post(client, _event("request", "lonely", req))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while await _metric(client, "daic_sidecar_events_dropped_total", reason="unanswered") < 1:
            assert loop.time() < deadline, "the lonely request half never expired"
            await asyncio.sleep(0.1)
        return await _metric(client, "daic_sidecar_pending_joins")

    assert _run(registry, tmp_path, scenario, join_timeout_s=0.5) == 0


def test_new_champion_reference_is_loaded_and_estimates_are_per_version(registry, tmp_path):
    images, _ = mnist_test_images(20, start=200)
    v1 = registry["v1"]

    async def scenario(client, service):
        for i in range(5):
            req, resp, _ = _pair(registry, v1, images[2 * i:2 * i + 2])
            await _post_prediction(client, f"a{i}", req, resp)
        await client.post("/admin/flush")  # resolves once everything accepted so far is processed
        before = (await (await client.get("/estimate")).json())
        v2 = await asyncio.to_thread(register_version, registry["store"])
        registry["served"][v2] = await asyncio.to_thread(load_served_model, registry["store"], "mnist", v2)
        reloaded = await (await client.post("/admin/reload")).json()
        for i in range(5):
            req, resp, _ = _pair(registry, v2, images[10 + 2 * i:12 + 2 * i])
            await _post_prediction(client, f"b{i}", req, resp)
        await client.post("/admin/flush")
        after = await (await client.get("/estimate")).json()
        text = await (await client.get("/metrics")).text()
        return before, v2, reloaded, after, text

    before, v2, reloaded, after, metrics = _run(registry, tmp_path, scenario)
    assert before["model_version"] == v1 and before["n"] == 10 and 0 <= before["accuracy"] <= 1
    card = ModelRegistry(registry["store"], "mnist").card(v1)
    assert before["reference_accuracy"] == pytest.approx(card.metrics["reference_val_accuracy"])
    assert before["lower"] <= before["accuracy"] <= before["upper"]
    assert reloaded["champion"] == v2
    assert after["champion"] == v2 and after["model_version"] == v2 and after["n"] == 10
    # one serving version per series (issue 23): the old champion stopped serving when the pointer moved
    assert set(after["versions"]) == {v2} and after["versions"][v2]["role"] == "champion"
    labels = f'deployment="{tmp_path.name}",model_version="{v2}",role="champion"'
    assert f'daic_estimated_accuracy{{{labels}}}' in metrics
    assert f'daic_window_size{{{labels}}} 10.0' in metrics
    assert f'daic_serving_info{{{labels}}} 1.0' in metrics
    assert f'model_version="{v1}",role=' not in metrics


def test_enough_feedback_recalibrates_the_estimate_to_the_labels(registry, tmp_path):
    images, labels = mnist_test_images(40, start=300)
    pairs = [_pair(registry, registry["v1"], images[2 * i:2 * i + 2]) for i in range(20)]

    async def scenario(client, service):
        for i, (req, resp, _) in enumerate(pairs):
            await _post_prediction(client, f"q{i}", req, resp)
        await client.post("/admin/flush")
        before = await (await client.get("/estimate")).json()
        for i in range(20):  # ground truth by request id, as the executor logs a feedback call
            body = json.dumps({"truth": {"data": {"ndarray": labels[2 * i:2 * i + 2].tolist()}}}).encode()
            await _post(client, _event("feedback", f"q{i}", body))
        await client.post("/admin/flush")
        method = service.estimators[registry["v1"]].recalibration.method
        return before, await (await client.get("/estimate")).json(), method

    before, after, method = _run(registry, tmp_path, scenario)
    observed = float((np.concatenate([p[2] for p in pairs]) == labels).mean())
    assert not before["recalibrated"] and after["recalibrated"]
    assert method == "covariate"  # every labelled input came with its covariates
    assert after["versions"][registry["v1"]]["feedback_accuracy"] == pytest.approx(observed)
    # The window holds exactly the labelled inputs: the correction's free intercept makes its own
    # mean match them, and the sidecar weighs that with the label-free estimate (inverse variance),
    # so the answer moves from the label-free estimate towards the labels' accuracy.
    low, high = sorted((before["accuracy"], observed))
    assert low - 0.005 <= after["accuracy"] <= high + 0.005
    assert abs(after["accuracy"] - observed) < abs(before["accuracy"] - observed)
