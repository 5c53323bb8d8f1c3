"""Every ``daic.*`` tag of a Seldon message is reserved: a client cannot set one.

Found by fuzzing: the model server copied the client's request ``meta.tags`` into its response, so a
client's ``daic.abstain`` reached the sidecar's records (and the labeling queue) with abstaining off,
and a client's ``daic.filter`` / ``daic.filter.gate`` with no filter in front made the sidecar (and the
model's ``POST /assess``) score with a filter's assessor. Now:

* the input filter TRANSFORMER (daic.serving.filter.InputFilter.transform) drops every ``daic.*`` tag it
  receives and sets its own (``daic.filter``, ``daic.filter.gate``, ``daic.filtered``);
* the MODEL (daic.serving.protocol.build_response, daic.serving.model.DaicModel) drops every ``daic.*``
  tag of the request except the filter's, and keeps those only with ``behind_filter`` on (a parameter
  the manifest, ``set_filter`` and the local stack give the model only when the input filter is the
  TRANSFORMER in front; default off: distrust); its own tags (version, embeddings, shadow, the abstain
  decision) are set after the strip.

Unit level on ``build_response``, ``transform`` and the model class (each reserved tag, abstaining on and
off, with and without a filter in front), the rendering, and end to end through the real
seldon-core microservices.
"""
from __future__ import annotations

import http.server
import json
import os
import subprocess
import threading

import numpy as np
import pytest
import requests

from test_serving_support import (SERVING_PYTHON, free_port, mnist_test_images, registered_store, seldon_request,
                                  wait_http_ready)

JSON = {"Content-Type": "application/json"}
OWN = {"daic.model", "daic.model_version", "daic.embeddings", "daic.shadow_probs", "daic.self_agreement",
       "daic.self_agreement.views"}
ABSTAIN = {"daic.abstain", "daic.abstain.p_correct", "daic.abstain.bound", "daic.abstain.assessor",
           "daic.abstain.status"}
FILTER = {"daic.filter", "daic.filter.gate", "daic.filtered"}
#: What a client might put in its request's meta.tags: every daic tag there is (the model's, the
#: abstain decision's, the filter's, the sidecar's feedback answer's), one that does not exist yet and
#: a case variant.
INJECTED = {
    "daic.model": "evil", "daic.model_version": "v9999", "daic.embeddings": [[0.0], [0.0]],
    "daic.shadow_probs": [[1.0] + [0.0] * 9] * 2, "daic.self_agreement": [1.0, 1.0], "daic.self_agreement.views": "x",
    "daic.abstain": [1, 1], "daic.abstain.p_correct": [0.0, 0.0], "daic.abstain.bound": 0.99,
    "daic.abstain.assessor": "mnist-filter/v0042/always", "daic.abstain.status": "decided",
    "daic.filter": "v0042", "daic.filter.gate": "always", "daic.filtered": [1, 1],
    "daic.feedback": "accepted", "daic.request_id": "someone-else", "daic.not_yet_a_tag": 1,
    "DAIC.Abstain": [1, 1],
}


# -- build_response (daic.serving.protocol) -------------------------------------------------------------------
def _outputs(n=2):
    rng = np.random.default_rng(7)
    probs = rng.dirichlet(np.ones(10), n)
    return probs, rng.normal(size=(n, 4)), rng.dirichlet(np.ones(10), n)


@pytest.mark.parametrize("tag", sorted(INJECTED))
def test_build_response_drops_every_reserved_tag_of_the_client(tag):
    from daic.serving.protocol import build_response

    probs, emb, shadow = _outputs()
    out = build_response(probs, emb, shadow, model="mnist", version="v0001",
                         request_meta={"puid": "p", "tags": {tag: INJECTED[tag], "client": "x"}},
                         self_agreement=np.full(len(probs), 0.5), self_agreement_views="stretch:0")
    tags = out["meta"]["tags"]
    assert tags["client"] == "x" and out["meta"]["puid"] == "p"  # the client's own tags are echoed
    assert set(tags) == OWN | {"client"}, tags
    assert tags["daic.model"] == "mnist" and tags["daic.model_version"] == "v0001"
    np.testing.assert_allclose(tags["daic.embeddings"], emb, atol=1e-6)
    assert tags["daic.self_agreement"] == [0.5] * len(probs) and tags["daic.self_agreement.views"] == "stretch:0"


@pytest.mark.parametrize("tag", sorted(INJECTED))
def test_build_response_keeps_only_the_trusted_transformer_tags(tag):
    from daic.serving.protocol import TRANSFORMER_TAGS, build_response

    probs, emb, shadow = _outputs()
    out = build_response(probs, emb, shadow, model="mnist", version="v0001", trusted_tags=TRANSFORMER_TAGS,
                         request_meta={"tags": {tag: INJECTED[tag]}}, self_agreement=np.full(len(probs), 0.5),
                         self_agreement_views="stretch:0")
    tags = out["meta"]["tags"]
    assert set(tags) == OWN | ({tag} if tag in FILTER else set()), tags
    assert tags["daic.model_version"] == "v0001"  # the model's own tag is never the request's
    if tag in FILTER:
        assert tags[tag] == INJECTED[tag]


def test_reserved_means_the_whole_daic_namespace():
    from daic.serving.protocol import TRANSFORMER_TAGS, is_reserved, without_reserved

    assert TRANSFORMER_TAGS == FILTER
    assert all(is_reserved(t) for t in INJECTED)
    assert not any(is_reserved(t) for t in ("client", "daicx", "my.daic.tag", "", "daic"))
    assert without_reserved({**INJECTED, "client": 1}) == {"client": 1}
    assert without_reserved({**INJECTED, "client": 1}, FILTER) == {"client": 1, **{t: INJECTED[t] for t in FILTER}}
    assert without_reserved(None) == {}


# -- the input filter's transform (daic.serving.filter) -------------------------------------------------------
@pytest.fixture(scope="module")
def filter_store(tmp_path_factory):
    from test_filter_serving import _blanking_filter, _register

    store = registered_store(tmp_path_factory.mktemp("reserved") / "store")
    return store, _register(store, _blanking_filter(), threshold=0.05)


@pytest.mark.parametrize("gated", [False, True], ids=["pass-through", "gated"])
@pytest.mark.parametrize("tag", sorted(INJECTED))
def test_the_filter_drops_the_clients_daic_tags_and_sets_its_own(filter_store, tag, gated):
    from daic.serving.filter import InputFilter

    store, version = filter_store
    served = InputFilter(store_url=store.url, filter_version=version, gate="gated") if gated \
        else InputFilter(store_url=store.url)  # no filter in service: pass-through
    served.refresh()
    images = np.zeros((2, 28, 28))
    images[1] = 0.9  # over the gate's threshold: filtered when gated
    out = served.transform({"data": {"ndarray": images.tolist()},
                            "meta": {"puid": "p", "tags": {tag: INJECTED[tag], "client": "x"}}})
    assert out["meta"]["puid"] == "p"
    assert out["meta"]["tags"] == {"client": "x", "daic.filter": version if gated else None,
                                   "daic.filter.gate": "gated" if gated else "off",
                                   "daic.filtered": [0, 1] if gated else [0, 0]}


# -- the model class (daic.serving.model.DaicModel), abstaining on and off, with and without the filter ----------
class _Served:
    name, version = "mnist", "v0001"

    def predict(self, images):
        return _outputs(len(images))

    def outputs(self, images, views=None):
        probs, emb, shadow = self.predict(images)
        return {"probs": probs, "embeddings": emb, "shadow_probs": shadow, "self_agreement": np.full(len(images), 0.5),
                "self_agreement_views": "stretch:0"}


class _Sidecar(http.server.BaseHTTPRequestHandler):
    """A stand-in for the sidecar's ``POST /assess``: P(correct) 0.9 per input; keeps what it was sent."""

    posted: list = []

    def do_POST(self):  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).posted.append(body)
        data = json.dumps({"p_correct": [0.9] * len(body["data"]["ndarray"]), "assessor": "stand-in"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def sidecar():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Sidecar)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/assess"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("behind", [False, True], ids=["alone", "behind-filter"])
@pytest.mark.parametrize("abstain", ["off", "0.5"], ids=["abstain-off", "abstain-on"])
@pytest.mark.parametrize("tag", sorted(INJECTED))
def test_the_model_answers_with_its_own_daic_tags_never_the_clients(filter_store, sidecar, monkeypatch, tag,
                                                                    abstain, behind):
    """The client's request goes to the model as the graph routes it: straight (no filter in front,
    the model's default: distrust) or through the filter's transform (pass-through here: no filter in
    service) to a model told it stands behind the filter."""
    from daic.serving.filter import InputFilter
    from daic.serving.model import DaicModel

    for var in ("DAIC_BEHIND_FILTER", "DAIC_ABSTAIN", "DAIC_ABSTAIN_URL"):
        monkeypatch.delenv(var, raising=False)
    params = {"abstain": abstain, "abstain_url": sidecar, "abstain_timeout_ms": 5000}
    model = DaicModel(**params, **({"behind_filter": True} if behind else {}))
    model._served = _Served()
    request = {"data": {"ndarray": np.zeros((2, 28, 28)).tolist()},
               "meta": {"puid": "p", "tags": {tag: INJECTED[tag], "client": "x"}}}
    if behind:
        front = InputFilter(store_url=filter_store[0].url, model_name="mnist")
        front.refresh()
        request = front.transform(request)
    _Sidecar.posted.clear()
    tags = model._predict_json(request)["meta"]["tags"]
    expected = {"client", *OWN, *(ABSTAIN if abstain != "off" else ()), *(FILTER if behind else ())}
    assert set(tags) == expected, tags
    assert (tags["daic.model"], tags["daic.model_version"]) == ("mnist", "v0001")
    assert np.asarray(tags["daic.embeddings"]).shape == (2, 4)
    if abstain != "off":  # the decision is the model's, on the stand-in sidecar's 0.9 against 0.5
        assert (tags["daic.abstain"], tags["daic.abstain.p_correct"], tags["daic.abstain.bound"],
                tags["daic.abstain.assessor"], tags["daic.abstain.status"]) == ([0, 0], [0.9, 0.9], 0.5,
                                                                                  "stand-in", "decided")
        (posted,) = _Sidecar.posted  # what the sidecar scores (which assessor: daic.filter) is the model's too
        assert {k: v for k, v in posted["meta"]["tags"].items() if k.lower().startswith("daic.")
                and k not in OWN} == ({"daic.filter": None, "daic.filter.gate": "off", "daic.filtered": [0, 0]}
                                      if behind else {}), posted["meta"]["tags"]
    else:
        assert not _Sidecar.posted
    if behind:  # the transformer's tags (pass-through), not the client's
        assert (tags["daic.filter"], tags["daic.filter.gate"], tags["daic.filtered"]) == (None, "off", [0, 0])


# -- who tells the model a filter is in front: the parameter and its rendering ----------------------------------
def test_behind_filter_is_off_unless_said_and_a_bad_value_is_named():
    from daic.serving.config import ServerConfig

    assert ServerConfig.resolve({}, env={}).behind_filter is False
    for value, want in ((True, True), (False, False), ("true", True), ("True", True), ("false", False), ("0", False)):
        assert ServerConfig.resolve({"behind_filter": value}, env={}).behind_filter is want, value
    assert ServerConfig.resolve({}, env={"DAIC_BEHIND_FILTER": "true"}).behind_filter is True
    with pytest.raises(ValueError, match="behind_filter"):
        ServerConfig.resolve({"behind_filter": "maybe"}, env={})


def _model_params(graph: dict) -> dict:
    model = graph if graph["type"] == "MODEL" else graph["children"][0]
    return {p["name"]: (p["type"], p["value"]) for p in model["parameters"]}


def test_the_rendered_model_is_told_only_when_the_input_filter_is_in_front():
    from daic.serving.filter import filter_node
    from daic.serving.manifest import DeploymentParams, TransformerNode, render_seldon_deployment, set_filter

    def graph(transformer=None):
        return render_seldon_deployment(DeploymentParams(transformer=transformer))["spec"]["predictors"][0]

    plain = graph()
    assert "behind_filter" not in _model_params(plain["graph"])
    assert _model_params(graph(filter_node())["graph"])["behind_filter"] == ("BOOL", "true")
    other = graph(TransformerNode(model_class="daic.serving.passthrough.Passthrough"))
    assert "behind_filter" not in _model_params(other["graph"])  # a transformer that is not the filter
    wrapped = set_filter(plain, "v0042", "gated")  # the operator puts the filter in front of a live predictor
    assert _model_params(wrapped["graph"])["behind_filter"] == ("BOOL", "true")
    again = set_filter(wrapped, "v0043", "always")
    assert list(_model_params(again["graph"])).count("behind_filter") == 1
    removed = set_filter(again, None)  # and takes it away again: the model distrusts again
    assert removed["graph"]["type"] == "MODEL" and "behind_filter" not in _model_params(removed["graph"])
    assert removed["graph"]["parameters"] == plain["graph"]["parameters"]


def test_the_local_stack_tells_its_model_only_when_the_input_filter_is_in_front():
    from daic.serving.filter import FILTER_CLASS
    from daic.serving.stack import LocalStack, StackConfig

    def params(**kw):
        env = LocalStack(StackConfig(serving_python=SERVING_PYTHON, **kw))._model_env()
        return {p["name"]: (p["type"], p["value"]) for p in json.loads(env["PREDICTIVE_UNIT_PARAMETERS"])}

    assert "behind_filter" not in params()
    assert "behind_filter" not in params(transformer_class="daic.serving.passthrough.Passthrough")
    assert params(transformer_class=FILTER_CLASS)["behind_filter"] == ("BOOL", "true")


# -- end to end: the real seldon-core microservices ------------------------------------------------------------
needs_serving = pytest.mark.skipif(not SERVING_PYTHON.exists(), reason="needs .venv-serving (make venv-serving)")


@needs_serving
def test_a_real_model_alone_answers_none_of_the_clients_daic_tags(tmp_path):
    """The model under ``seldon-core-microservice`` with no transformer in front (its parameters as the
    manifest renders them without a filter): the client's daic tags are gone from its answer."""
    from daic.serving.stack import terminate

    store = registered_store(tmp_path / "store")
    port, metrics_port = free_port(), free_port()
    params = [{"name": "model_version", "type": "STRING", "value": "champion"},
              {"name": "abstain", "type": "STRING", "value": "off"}]
    env = {**os.environ, "DAIC_STORE": store.url, "PREDICTIVE_UNIT_PARAMETERS": json.dumps(params),
           "INCLUDE_METRICS_IN_CLIENT_RESPONSE": "false"}
    env.pop("DAIC_BEHIND_FILTER", None)
    log = tmp_path / "model.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([str(SERVING_PYTHON.with_name("seldon-core-microservice")), "daic.serving.model.DaicModel",
                                 "--service-type", "MODEL", "--http-port", str(port), "--metrics-port",
                                 str(metrics_port), "--grpc-workers", "0", "--workers", "1", "--threads", "2",
                                 "--log-level", "WARNING"],
                                stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=tmp_path, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http_ready(proc, url + "/health/status", log, 120, "the model's /health/status")
        images, _ = mnist_test_images(2, start=500)
        body = json.loads(seldon_request(images))
        body["meta"] = {"tags": {**INJECTED, "client": "x"}}
        resp = requests.post(url + "/api/v1.0/predictions", data=json.dumps(body), headers=JSON, timeout=60)
        assert resp.status_code == 200, resp.text
        tags = resp.json()["meta"]["tags"]
        assert set(tags) == OWN | {"client"}, tags
        assert tags["daic.model_version"] == "v0001" and np.asarray(tags["daic.embeddings"]).shape[0] == 2
    finally:
        terminate(proc)


@needs_serving
def test_a_real_filter_in_front_hands_on_its_own_tags_and_the_records_abstain_nothing_the_client_said(tmp_path):
    """A two-node local stack (the filter TRANSFORMER, gate ``always``, in front of the model; abstaining
    off; the sidecar and the gateway): the client's ``daic.abstain``/``daic.filter``... never reach the
    answer or the sidecar's records; the filter's own tags still do."""
    from daic.filters.registry import FilterService, write_service
    from daic.serving.filter import FILTER_CLASS
    from daic.serving.stack import LocalStack, StackConfig
    from daic.sidecar.records import read_operational
    from test_filter_serving import _blanking_filter, _register

    store = registered_store(tmp_path / "store")
    version = _register(store, _blanking_filter())
    write_service(store, "mnist", FilterService(version=version, gate="always", reason="test"))
    ports = [free_port() for _ in range(7)]
    config = StackConfig(store_url=store.url, gateway_port=ports[0], model_port=ports[1], model_metrics_port=ports[2],
                         sidecar_port=ports[3], transformer_port=ports[4], transformer_metrics_port=ports[5],
                         sidecar_ingest_port=ports[6], state_dir=tmp_path / "state", log_dir=tmp_path / "logs",
                         serving_python=SERVING_PYTHON, transformer_class=FILTER_CLASS, threads=2,
                         transformer_parameters={"model_name": "mnist"}, sidecar_options={"flush_interval": 600})
    images, _ = mnist_test_images(3, start=600)
    body = json.loads(seldon_request(images))
    body["meta"] = {"tags": {**INJECTED, "daic.abstain": [1, 1, 1], "daic.filtered": [0, 0, 0],
                             "daic.filter": "v9999", "daic.filter.gate": "gated", "client": "x"}}
    with LocalStack(config) as running:
        resp = requests.post(running.gateway_url + "/api/v1.0/predictions", data=json.dumps(body), headers=JSON,
                             timeout=60)
        assert resp.status_code == 200, resp.text
        tags = resp.json()["meta"]["tags"]
        running.flush()
    assert set(tags) == OWN | FILTER | {"client"}, tags
    assert (tags["daic.filter"], tags["daic.filter.gate"], tags["daic.filtered"]) == (version, "always", [1, 1, 1])
    assert tags["daic.model_version"] == "v0001"
    records = read_operational(store, "mnist")
    assert len(records) == 3 and not records.abstained.any()  # nothing queued for labeling on the client's word
