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

endpoint, images_path, labels_path = sys.argv[1:4]
images, labels = np.load(images_path), np.load(labels_path)
client = SeldonClient(gateway="istio", transport="rest", gateway_endpoint=endpoint, namespace="local",
                      deployment_name="mnist", client_return_type="proto")
result = client.predict(data=images, payload_type="ndarray")
out = {"success": result.success, "msg": result.msg}
if result.success:
    from seldon_core.utils import seldon_message_to_json
    response = seldon_message_to_json(result.response)
    out["response"] = response
    truth = json_to_seldon_message({"data": {"ndarray": labels.tolist()}})
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
    ports = [free_port() for _ in range(4)]
    config = StackConfig(store_url=store.url, gateway_port=ports[0], model_port=ports[1],
                         model_metrics_port=ports[2], sidecar_port=ports[3], state_dir=base / "state",
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
                          str(stack["base"] / "x.npy"), str(stack["base"] / "y.npy")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["success"], result["msg"]
    probs = np.asarray(result["response"]["data"]["ndarray"])
    assert probs.shape == (3, 10)
    assert result["response"]["meta"]["tags"]["daic.model_version"] == stack["version"]
    assert result["response"]["meta"]["puid"]
    assert result["feedback_success"], result["feedback_msg"]
    stack["stack"].flush()  # the gateway logs asynchronously: wait for delivery, then flush
    estimate = stack["stack"].estimate()
    feedback = estimate["versions"][stack["version"]]
    assert feedback["feedback_n"] == 3
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
