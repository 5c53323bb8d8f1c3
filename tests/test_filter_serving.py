"""The input filter served the Seldon way (issue 21): the TRANSFORMER class's logic in process, the
rendered SeldonDeployment with the filter node through every manifest check, and a real two-node
local stack (seldon-core microservices from .venv-serving, the sidecar, the gateway) answering
with the filter in front, then without it once the service record removes it."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest
import requests
import torch

from daic.filters.network import FilterNet
from daic.filters.registry import FilterRegistry, FilterService, read_service, write_service
from daic.models.card import DataLineage
from daic.storage import open_store
from test_serving_support import SERVING_PYTHON, free_port, mnist_test_images, registered_store, seldon_request


JSON = {"Content-Type": "application/json"}


def _blanking_filter() -> FilterNet:
    """A filter whose output is all zeros (x + (-1), clipped): its effect cannot be missed."""
    net = FilterNet()
    with torch.no_grad():
        net.out.bias.fill_(-1.0)
    return net


def _register(store, net, threshold: float = 0.0) -> str:
    card = FilterRegistry(store, "mnist").register_filter(
        net=net, data=DataLineage(dataset="mnist", base_count=0), wraps_version="v0001",
        metrics={"gate_threshold": threshold})
    return card.version


def test_transform_keeps_encoding_and_meta_and_gates_per_input(tmp_path):
    from daic.serving.filter import InputFilter

    store = open_store(f"file://{tmp_path}")
    # A classifier card is all the filter's lineage check reads (its weights are never loaded here).
    store.put_json("models/mnist/v0001/card.json", {"name": "mnist", "version": "v0001", "code_version": "t",
                                                    "data": {"dataset": "mnist", "base_count": 0}})
    version = _register(store, _blanking_filter(), threshold=0.05)
    served = InputFilter(store_url=store.url, filter_version=version, gate="gated")
    served.refresh()
    images = np.zeros((2, 28, 28), np.float32)
    images[1] = 0.9  # blanking changes it by 0.9 on average: over the threshold; image 0 unchanged
    out = served.transform({"data": {"tensor": {"shape": [2, 28, 28], "values": images.ravel().tolist()}},
                            "meta": {"tags": {"client": "x"}}})
    assert out["data"]["tensor"]["shape"] == [2, 28, 28]
    back = np.asarray(out["data"]["tensor"]["values"]).reshape(2, 28, 28)
    assert np.all(back == 0.0)  # image 1 filtered to blank, image 0 blank already
    assert out["meta"]["tags"] == {"client": "x", "daic.filter": version, "daic.filter.gate": "gated",
                                   "daic.filtered": [0, 1]}
    always = InputFilter(store_url=store.url, filter_version=version, gate="always")
    always.refresh()
    assert always.transform({"data": {"ndarray": images.tolist()}})["meta"]["tags"]["daic.filtered"] == [1, 1]
    # No filter in service: pass-through, nothing marked.
    follow = InputFilter(store_url=store.url)
    follow.refresh()
    passed = follow.transform({"data": {"ndarray": images.tolist()}})
    assert np.allclose(passed["data"]["ndarray"], images) and passed["meta"]["tags"]["daic.filtered"] == [0, 0]
    from daic.serving.inputs import InputError
    with pytest.raises(InputError, match="data"):
        served.transform({"data": {"ndarray": [[2.0]]}})
    with pytest.raises(ValueError, match="gate must be one of"):
        InputFilter(store_url=store.url, gate="sometimes")
    with pytest.raises(ValueError, match="unknown filter parameter"):
        InputFilter(store_url=store.url, colour="red")


def test_service_record_names_only_complete_versions(tmp_path):
    store = open_store(f"file://{tmp_path}")
    assert read_service(store, "mnist").version is None
    with pytest.raises(Exception, match="v0042"):
        write_service(store, "mnist", FilterService(version="v0042"))


def test_rendered_graph_with_the_filter_passes_the_manifest_checks():
    from daic.deploy.check import USER_CREATED, check_objects
    from daic.deploy.operator_rules import check_seldon_deployment
    from daic.serving.filter import FILTER_CLASS, filter_node
    from daic.serving.graph import join_plan
    from daic.serving.manifest import DeploymentParams, render_seldon_deployment

    doc = render_seldon_deployment(DeploymentParams(transformer=filter_node("mnist", gate="gated")))
    (pred,) = doc["spec"]["predictors"]
    assert (pred["graph"]["type"], pred["graph"]["children"][0]["type"]) == ("TRANSFORMER", "MODEL")
    params = {p["name"]: p["value"] for p in pred["graph"]["parameters"]}
    assert params["gate"] == "gated" and params["filter_version"] == "service"
    containers = pred["componentSpecs"][0]["spec"]["containers"]
    assert containers[0]["command"][1] == FILTER_CLASS
    sidecar = containers[-1]
    plan = join_plan(json.loads(sidecar["command"][sidecar["command"].index("--graph") + 1]))
    assert (plan.entry, plan.answer) == ("filter", "filter")
    assert check_seldon_deployment(doc) == []
    def problems(d):
        return {str(p) for p in check_objects([{**d, "metadata": {**d["metadata"], "namespace": "daic"}}],
                                              external={**USER_CREATED, "ConfigMap": {"daic-storage"}})}

    # Whatever the checks say of the plain champion deployment (an install-wide rule may need objects
    # this one document does not hold), the filter node adds no problem of its own.
    added = problems(doc) - problems(render_seldon_deployment())
    assert not added, "\n".join(sorted(added))
    with pytest.raises(ValueError, match="gate"):
        filter_node(gate="bogus")


@pytest.mark.skipif(not SERVING_PYTHON.exists(), reason="needs .venv-serving (make venv-serving)")
def test_a_real_two_node_stack_answers_with_the_filter_in_front_then_without(tmp_path):
    from daic.serving.filter import FILTER_CLASS
    from daic.serving.stack import LocalStack, StackConfig
    from daic.sidecar.records import read_operational

    store = registered_store(tmp_path / "store")
    version = _register(store, _blanking_filter())
    write_service(store, "mnist", FilterService(version=version, gate="always", reason="test"))
    ports = [free_port() for _ in range(7)]
    config = StackConfig(store_url=store.url, gateway_port=ports[0], model_port=ports[1], model_metrics_port=ports[2],
                         sidecar_port=ports[3], transformer_port=ports[4], transformer_metrics_port=ports[5],
                         sidecar_ingest_port=ports[6], state_dir=tmp_path / "state", log_dir=tmp_path / "logs",
                         serving_python=SERVING_PYTHON, transformer_class=FILTER_CLASS,
                         transformer_parameters={"model_name": "mnist", "reload_interval_s": "0.2"},
                         sidecar_options={"flush_interval": 600})
    images, _ = mnist_test_images(8, start=3000)
    url = None
    with LocalStack(config) as running:
        url = running.gateway_url + "/api/v1.0/predictions"
        blank = requests.post(url, data=seldon_request(np.zeros((1, 28, 28))), timeout=30, headers=JSON).json()
        resp = requests.post(url, data=seldon_request(images), timeout=30, headers=JSON)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        tags = body["meta"]["tags"]
        assert tags["daic.filter"] == version and tags["daic.filtered"] == [1] * 8
        # Every input was blanked before the model: each answer is the model's answer to a blank image.
        probs = np.asarray(body["data"]["ndarray"])
        np.testing.assert_allclose(probs, np.repeat(blank["data"]["ndarray"], 8, axis=0), atol=1e-4)
        bad = requests.post(url, data=b'{"data": {"ndarray": [[7.0]]}}', timeout=30, headers=JSON)
        assert bad.status_code == 400 and "data.ndarray" in bad.text
        # Removing the filter: the transformer follows the service record, no restart.
        write_service(store, "mnist", FilterService(version=None, reason="traffic clean again"))
        deadline = time.monotonic() + 30
        while requests.get(f"{config.transformer_url}/health/status", timeout=5).json().get("filter") is not None:
            assert time.monotonic() < deadline, "the transformer did not drop the filter"
            time.sleep(0.1)
        after = requests.post(url, data=seldon_request(images), timeout=30, headers=JSON).json()
        assert after["meta"]["tags"]["daic.filtered"] == [0] * 8
        assert not np.allclose(np.asarray(after["data"]["ndarray"]), probs, atol=1e-3)
        running.flush()
    # The sidecar recorded the client's inputs, not the blanked ones the model saw.
    records = read_operational(store, "mnist")
    assert len(records) == 17
    # (blanked inputs would sum to 0; the client's sum to twice the 8 images': sent twice)
    assert float(records.inputs.sum()) == pytest.approx(2 * float(images.round(4).sum()), rel=1e-4)
