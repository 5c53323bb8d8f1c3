"""The whole local stack (``LocalStack``: seldon-core-microservice from .venv-serving, the sidecar,
the gateway) driven by the official ``SeldonClient``: predictions and feedback succeed, the
sidecar's estimate moves when corrupted inputs are streamed, and every input sent can be read
back from the object store."""
from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
import requests

from daic.data.corruptions import corrupt
from daic.serving.stack import LocalStack, StackConfig
from daic.sidecar.records import read_operational
from test_serving_support import SERVING_PYTHON, free_port, mnist_test_images, registered_store, seldon_request

pytestmark = pytest.mark.skipif(not SERVING_PYTHON.exists(), reason="needs .venv-serving (make venv-serving)")

SELDON_CLIENT_SCRIPT = r"""
import json, sys
import numpy as np
from seldon_core.seldon_client import SeldonClient
from seldon_core.utils import json_to_seldon_message

endpoint, images_path, labels_path, puid = sys.argv[1:5]
images, labels = np.load(images_path), np.load(labels_path)
client = SeldonClient(gateway="istio", transport="rest", gateway_endpoint=endpoint, namespace="local",
                      deployment_name="mnist", client_return_type="proto")
# The client names its prediction with the Seldon-Puid header (the executor keeps a client's puid).
result = client.predict(data=images, payload_type="ndarray", headers={"Seldon-Puid": puid})
out = {"success": result.success, "msg": result.msg}
if result.success:
    from seldon_core.utils import seldon_message_to_json
    response = seldon_message_to_json(result.response)
    out["response"] = response
    truth = json_to_seldon_message({"data": {"ndarray": labels.tolist()}})
    # SeldonClient.feedback cannot send headers: the executor gives the call a fresh puid, so this
    # feedback names no prediction (the sidecar records it as unlinked).
    fb = client.feedback(prediction_request=result.request, prediction_response=result.response,
                         prediction_truth=truth, reward=1.0)
    out["feedback_success"], out["feedback_msg"] = fb.success, fb.msg
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    base = tmp_path_factory.mktemp("stack")
    store = registered_store(base / "store")
    version = "v0001"
    ports = [free_port() for _ in range(5)]
    config = StackConfig(store_url=store.url, gateway_port=ports[0], model_port=ports[1],
                         model_metrics_port=ports[2], sidecar_port=ports[3], sidecar_ingest_port=ports[4],
                         state_dir=base / "state",
                         log_dir=base / "logs", serving_python=SERVING_PYTHON,
                         sidecar_options={"window": 200, "flush_interval": 600})
    with LocalStack(config) as running:
        yield {"stack": running, "store": store, "version": version, "base": base}


def test_seldon_client_predicts_and_sends_feedback(stack):
    images, labels = mnist_test_images(3, start=500)
    np.save(stack["base"] / "x.npy", images.round(4))
    np.save(stack["base"] / "y.npy", labels)
    endpoint = stack["stack"].gateway_url.removeprefix("http://")
    out = subprocess.run([str(SERVING_PYTHON), "-c", SELDON_CLIENT_SCRIPT, endpoint,
                          str(stack["base"] / "x.npy"), str(stack["base"] / "y.npy"), "stack-1"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["success"], result["msg"]
    probs = np.asarray(result["response"]["data"]["ndarray"])
    assert probs.shape == (3, 10)
    assert result["response"]["meta"]["tags"]["daic.model_version"] == stack["version"]
    assert "puid" not in result["response"]["meta"], "the puid travels in the Seldon-Puid header only"
    assert result["feedback_success"], result["feedback_msg"]
    # What docs/serving.md tells a client to send: the Seldon Feedback message, with the
    # prediction's Seldon-Puid header.
    truth = {"truth": {"data": {"ndarray": labels.tolist()}}}
    linked = requests.post(stack["stack"].gateway_url + "/api/v1.0/feedback", json=truth,
                           headers={"Seldon-Puid": "stack-1"}, timeout=30)
    assert linked.status_code == 200 and linked.headers["Seldon-Puid"] == "stack-1", linked.text
    stack["stack"].flush()  # the gateway logs asynchronously: wait for delivery, then flush
    estimate = stack["stack"].estimate()
    feedback = estimate["versions"][stack["version"]]
    assert feedback["feedback_n"] == 3, "only the feedback with the header is linked"
    metrics = requests.get(stack["stack"].sidecar_url + "/metrics", timeout=10).text
    assert 'daic_sidecar_feedback_total{deployment="mnist",link="unlinked"} 1.0' in metrics
    assert feedback["feedback_accuracy"] == pytest.approx(float((probs.argmax(1) == labels).mean()))


def _stream(url, images, per_request=4):
    with requests.Session() as session:
        for i in range(0, len(images), per_request):
            resp = session.post(url + "/api/v1.0/predictions", data=seldon_request(images[i:i + per_request]),
                                headers={"Content-Type": "application/json"}, timeout=30)
            assert resp.status_code == 200, resp.text


def _by_content(images: np.ndarray) -> np.ndarray:
    flat = np.asarray(images, dtype=np.float64).reshape(len(images), -1)
    return flat[np.lexsort(np.round(flat, 3).T[::-1])]


def test_estimate_moves_under_corruption_and_records_read_back(stack):
    running = stack["stack"]
    before = len(read_operational(stack["store"], "mnist"))
    clean, labels = mnist_test_images(200, start=1000)
    _stream(running.gateway_url, clean)
    running.flush()
    on_clean = running.estimate()

    noisy = corrupt(clean, "impulse_noise", severity=5, seed=3)  # a corruption the reference never saw
    _stream(running.gateway_url, noisy)
    running.flush()
    on_noisy = running.estimate()

    assert on_clean["n"] == on_noisy["n"] == 200, "the window holds the last 200 inputs"
    assert on_noisy["accuracy"] < on_clean["accuracy"] - 0.1, (on_clean, on_noisy)
    assert on_noisy["drift_score"] > on_clean["drift_score"]
    assert on_noisy["drift_alarm"] and not on_clean["drift_alarm"]

    records = read_operational(stack["store"], "mnist")
    assert len(records) == before + 400
    new = records.select(np.arange(before, len(records)))
    # Records are ordered by time; requests of one stream may share a timestamp, so compare each
    # stream's inputs as a set (rows sorted by content), not position by position.
    np.testing.assert_allclose(_by_content(new.inputs[:200]), _by_content(clean.round(4)), atol=1e-6)
    np.testing.assert_allclose(_by_content(new.inputs[200:]), _by_content(noisy.round(4)), atol=1e-6)
    stats = running.gateway_stats()
    assert stats["events_sent"] == stats["events_queued"], stats
    assert not any(k.startswith(("events_rejected", "events_failed", "events_dropped")) for k in stats), stats


def test_a_transformer_graph_loses_no_prediction(tmp_path):
    """TRANSFORMER -> MODEL, both real seldon-core microservices, the logger on the root (as
    daic.serving.manifest renders it): four events per prediction reach the sidecar, and every
    prediction is one record of the client's input with the model's answer."""
    store = registered_store(tmp_path / "store")
    ports = [free_port() for _ in range(7)]
    config = StackConfig(store_url=store.url, gateway_port=ports[0], model_port=ports[1], model_metrics_port=ports[2],
                         sidecar_port=ports[3], transformer_port=ports[4], transformer_metrics_port=ports[5],
                         sidecar_ingest_port=ports[6],
                         state_dir=tmp_path / "state", log_dir=tmp_path / "logs", serving_python=SERVING_PYTHON,
                         transformer_class="daic.serving.passthrough.Passthrough",
                         sidecar_options={"flush_interval": 600})
    images, _ = mnist_test_images(40, start=2000)
    with LocalStack(config) as running:
        _stream(running.gateway_url, images)
        running.flush()
        metrics = requests.get(running.sidecar_url + "/metrics", timeout=10).text
        stats = running.gateway_stats()
    assert stats["events_sent"] == stats["events_queued"] == 4 * 10, stats
    assert 'daic_sidecar_events_joined_total{deployment="mnist"} 10.0' in metrics
    records = read_operational(store, "mnist")
    assert len(records) == 40
    np.testing.assert_allclose(_by_content(records.inputs), _by_content(images.round(4)), atol=1e-6)
