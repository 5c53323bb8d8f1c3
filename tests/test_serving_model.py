"""The model class under the real ``seldon-core-microservice`` (seldon-core 1.18, .venv-serving),
as a subprocess on free ports, loading a version registered in a temporary file:// store."""
from __future__ import annotations

import json
import os
import subprocess
import threading

import numpy as np
import pytest
import requests

from daic.oracles.self_agreement import SERVED_VIEWS, views_text
from daic.serving.loading import load_served_model
from daic.serving.protocol import TAG_EMBEDDINGS, TAG_SELF_AGREEMENT, TAG_SELF_AGREEMENT_VIEWS, TAG_SHADOW, TAG_VERSION
from daic.serving.stack import terminate
from test_serving_support import (
    registered_store,
    SERVING_PYTHON,
    free_port,
    mnist_test_images,
    register_version,
    seldon_request,
    wait_until,
)

pytestmark = pytest.mark.skipif(not SERVING_PYTHON.exists(), reason="needs .venv-serving (make venv-serving)")
MAX_BATCH = 16


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("model-server")
    store = registered_store(base / "store")
    v1 = "v0001"
    port, metrics_port = free_port(), free_port()
    params = [{"name": "reload_interval_s", "type": "FLOAT", "value": "0.2"},
              {"name": "max_batch", "type": "INT", "value": str(MAX_BATCH)}]
    # The environment the manifest and LocalStack give the model container.
    env = {**os.environ, "DAIC_STORE": store.url, "PREDICTIVE_UNIT_PARAMETERS": json.dumps(params),
           "INCLUDE_METRICS_IN_CLIENT_RESPONSE": "false"}
    cmd = [str(SERVING_PYTHON.with_name("seldon-core-microservice")), "daic.serving.model.DaicModel",
           "--service-type", "MODEL", "--http-port", str(port), "--metrics-port", str(metrics_port),
           "--grpc-workers", "0", "--workers", "1", "--threads", "4", "--log-level", "WARNING"]
    log = base / "model.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=base,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def ready():
        assert proc.poll() is None, f"model server exited:\n{log.read_text()[-3000:]}"
        try:
            return requests.get(url + "/health/status", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    try:
        wait_until(ready, 120, "the model server's /health/status")
        yield {"url": url, "metrics": f"http://127.0.0.1:{metrics_port}/metrics", "store": store, "v1": v1}
    finally:
        terminate(proc)


def _predict(url, body, **kw):
    return requests.post(url + "/api/v1.0/predictions", data=body, headers={"Content-Type": "application/json"},
                         timeout=30, **kw)


def test_predictions_carry_probabilities_version_and_oracle_inputs(server):
    images, labels = mnist_test_images(8)
    resp = _predict(server["url"], seldon_request(images))
    assert resp.status_code == 200, resp.text
    body = resp.json()
    probs = np.asarray(body["data"]["ndarray"])
    assert probs.shape == (8, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    assert body["data"]["names"] == [str(i) for i in range(10)]
    assert (probs.argmax(1) == labels).mean() >= 0.5, "the served model is the trained one, not a random net"
    tags = body["meta"]["tags"]
    assert tags[TAG_VERSION] == server["v1"]
    assert np.asarray(tags[TAG_EMBEDDINGS]).shape == (8, 128)
    shadow = np.asarray(tags[TAG_SHADOW])
    assert shadow.shape == (8, 10) and np.allclose(shadow.sum(1), 1.0, atol=1e-4)
    assert "metrics" not in body["meta"], "custom metrics go to the metrics port, not to clients"
    # the champion's self-agreement on the served view (issue 17), as the registry's references hold it
    assert tags[TAG_SELF_AGREEMENT_VIEWS] == views_text(SERVED_VIEWS)
    local = load_served_model(server["store"], "mnist", server["v1"]).outputs(images.astype(np.float32))
    np.testing.assert_allclose(tags[TAG_SELF_AGREEMENT], local["self_agreement"], atol=1e-4)
    assert not np.allclose(tags[TAG_SELF_AGREEMENT], probs.max(1), atol=1e-4), "the view's, not the input's"


def test_tensor_encoding_answers_in_tensor(server):
    images, _ = mnist_test_images(2)
    body = {"data": {"tensor": {"shape": [2, 784], "values": images.ravel().round(4).tolist()}}}
    resp = _predict(server["url"], json.dumps(body))
    assert resp.status_code == 200, resp.text
    assert resp.json()["data"]["tensor"]["shape"] == [2, 10]


@pytest.mark.parametrize("body, words", [
    (b'{"data": {"ndarray": [[0.1, 0.2]', "JSON"),
    (json.dumps({"data": {"ndarray": [[0.5] * 27] * 28}}).encode(), "expected [N, 28, 28]"),
    (json.dumps({"data": {"ndarray": [[[float("nan")] * 28] * 28]}}).encode(), "NaN"),
    (json.dumps({"data": {"ndarray": [[[255.0] * 28] * 28]}}).encode(), "[0, 1]"),
    (json.dumps({"data": {"ndarray": [[[0.5] * 28] * 28] * (MAX_BATCH + 1)}}).encode(), "max_batch"),
    (json.dumps({"data": {"ndarray": [[[0.5] * 28] * 28, [[0.5] * 28] * 27]}}).encode(), "ragged"),
    (json.dumps({"strData": "seven"}).encode(), "not supported"),
])
def test_bad_requests_get_400_with_a_clear_message(server, body, words):
    resp = _predict(server["url"], body)
    assert resp.status_code == 400, resp.text
    info = resp.json()["status"]["info"]
    assert words in info, info


def test_health_metadata_and_custom_metrics(server):
    status = requests.get(server["url"] + "/health/status", timeout=5).json()
    assert status["version"] == server["v1"] and status["model"] == "mnist"
    meta = requests.get(server["url"] + "/metadata", timeout=5).json()
    assert meta["name"] == "mnist"
    images, _ = mnist_test_images(3)
    assert _predict(server["url"], seldon_request(images)).status_code == 200
    text = requests.get(server["metrics"], timeout=5).text
    served = [line for line in text.splitlines() if line.startswith("daic_model_inputs_total")]
    assert served and f'daic_model_version="{server["v1"]}"' in served[0]
    assert float(served[0].rsplit(" ", 1)[1]) >= 3
    assert "daic_model_inference_ms" in text


def test_live_reload_to_a_new_champion_drops_no_request(server):
    images, _ = mnist_test_images(4)
    body = seldon_request(images)
    stop = threading.Event()
    results: list[list[tuple[int, str | None]]] = [[] for _ in range(3)]

    def client(out):
        with requests.Session() as session:
            while not stop.is_set():
                try:
                    resp = session.post(server["url"] + "/api/v1.0/predictions", data=body,
                                        headers={"Content-Type": "application/json"}, timeout=30)
                    version = resp.json()["meta"]["tags"][TAG_VERSION] if resp.status_code == 200 else None
                    out.append((resp.status_code, version))
                except requests.RequestException as exc:
                    out.append((-1, repr(exc)))

    threads = [threading.Thread(target=client, args=(r,)) for r in results]
    for t in threads:
        t.start()
    try:
        v2 = register_version(server["store"])  # registers and promotes: the pointer moves
        wait_until(lambda: any(v == v2 for r in results for _, v in r[-5:]), 60, f"responses from {v2}")
        # keep the clients going a little after the switch (measured in requests, not time)
        seen = sum(len(r) for r in results)
        wait_until(lambda: sum(len(r) for r in results) >= seen + 20, 60, "more responses after the switch")
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    everything = [item for r in results for item in r]
    failures = [item for item in everything if item[0] != 200]
    assert not failures, f"{len(failures)} of {len(everything)} requests failed during the reload: {failures[:3]}"
    for r in results:
        versions = [v for _, v in r]
        first_new = versions.index(v2)
        assert set(versions[:first_new]) <= {server["v1"]} and set(versions[first_new:]) == {v2}, \
            "each client sees the old version, then only the new one"
    status = requests.get(server["url"] + "/health/status", timeout=5).json()
    assert status["version"] == v2 and status["reloads"] == 1
