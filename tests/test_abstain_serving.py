"""Abstaining in the serving graph (issue 21, item 4): the sidecar's ``POST /assess`` (P(correct) of the
model behind the filter), the model server's client that never blocks on it, the abstain flag in the
sidecar's records, the policy record, and a real local stack (seldon-core microservice, sidecar,
gateway) answering with the abstain tags."""
from __future__ import annotations

import dataclasses
import http.server
import json
import threading
import time
from collections import OrderedDict

import numpy as np
import pytest
import requests

from daic.serving.abstain import TAG_ABSTAIN, TAG_ASSESSOR, TAG_BOUND, TAG_P_CORRECT, TAG_STATUS
from daic.serving.abstain_policy import AbstainPolicy, read_policy, sync_policy
from daic.serving.abstainer import Abstainer
from daic.sidecar.records import read_operational
from daic.components.testing.http_reply import send_json
from daic.oracles.self_agreement import SERVED_VIEWS, views_text
from test_serving_support import SERVING_PYTHON, free_port, mnist_test_images, registered_store, seldon_request
from test_sidecar_service import _event, _pair, _post, _run, registry  # noqa: F401 - the module fixture

JSON = {"Content-Type": "application/json"}


class _Marked:
    """The model's own assessor with every P(correct) set to a mark (stands for the wrapped one)."""

    def __init__(self, own, mark):
        self.own, self.mark = own, mark

    def score(self, probs, embeddings, shadow_probs, *args):
        return dataclasses.replace(self.own.score(probs, embeddings, shadow_probs, *args),
                                   p_correct=np.full(len(probs), self.mark))

    def __getattr__(self, name):
        return getattr(self.own, name)


def _tagged(response: bytes, **tags) -> bytes:
    body = json.loads(response)
    body["meta"]["tags"].update(tags)
    return json.dumps(body).encode()


def test_assess_scores_with_the_wrapped_assessor_behind_the_filter_and_never_stands_in(registry, tmp_path,  # noqa: F811
                                                                                      monkeypatch):
    pool = registry["pool"]
    own = pool.get(registry["v1"])
    monkeypatch.setattr(pool, "_wrapped", OrderedDict({("v0042", "always"): _Marked(own, 0.123)}))
    images, _ = mnist_test_images(3)
    _, plain, _ = _pair(registry, registry["v1"], images)
    behind = _tagged(plain, **{"daic.filter": "v0042", "daic.filter.gate": "always"})
    unloaded = _tagged(plain, **{"daic.filter": "v0043", "daic.filter.gate": "always"})

    async def scenario(client, service):
        out = {}
        for name, body in (("plain", plain), ("behind", behind), ("unloaded", unloaded),
                           ("garbage", b"{not json"), ("not daic", b'{"data": {"ndarray": [[1.0]]}}')):
            resp = await client.post("/assess", data=body, headers=JSON)
            out[name] = (resp.status, await resp.json())
        return out

    out = _run(registry, tmp_path, scenario)
    status, answer = out["plain"]
    assert status == 200 and answer["assessor"] == "mnist/v0001"
    tags = json.loads(plain)["meta"]["tags"]
    probs, emb, shadow, sa = (np.asarray(json.loads(plain)["data"]["ndarray"]), np.asarray(tags["daic.embeddings"]),
                              np.asarray(tags["daic.shadow_probs"]), np.asarray(tags["daic.self_agreement"]))
    assert own.uses_self_agreement and tags["daic.self_agreement.views"] == own.self_agreement_views == views_text(SERVED_VIEWS)
    np.testing.assert_allclose(answer["p_correct"], own.score(probs, emb, shadow, sa).p_correct, atol=1e-5)
    assert out["behind"] == (200, {"p_correct": [0.123] * 3, "assessor": "mnist-filter/v0042/always"})
    status, answer = out["unloaded"]  # no stand-in (the model's own assessor is optimistic behind a filter)
    assert status == 503 and "behind filter v0043 (always) is not loaded yet" in answer["error"]
    assert out["garbage"][0] == 400 and out["not daic"][0] == 400
    assert "meta.tags lacks" in out["not daic"][1]["error"]


def test_the_records_keep_the_abstain_flag_of_each_input(registry, tmp_path):  # noqa: F811
    images, _ = mnist_test_images(5)
    request, response, _ = _pair(registry, registry["v1"], images[:3])
    flagged = _tagged(response, **{TAG_ABSTAIN: [1, 0, 1]})
    request2, response2, _ = _pair(registry, registry["v1"], images[3:])
    broken = _tagged(response2, **{TAG_ABSTAIN: [1]})  # wrong length: abstains nothing

    async def scenario(client, service):
        for rid, req, resp in (("flagged", request, flagged), ("broken", request2, broken)):
            await _post(client, _event("request", rid, req))
            await _post(client, _event("response", rid, resp))
        await client.post("/admin/flush")

    _run(registry, tmp_path, scenario)
    records = read_operational(registry["store"], tmp_path.name)
    by = {rid: records.abstained[records.request_ids == rid].tolist() for rid in ("flagged", "broken")}
    assert by == {"flagged": [True, False, True], "broken": [False, False]}


class _Sidecar(http.server.BaseHTTPRequestHandler):
    """A stand-in /assess for the client's failure paths: ``mode`` says how it answers."""

    mode = "ok"
    release = threading.Event()

    def do_POST(self):  # noqa: N802 - http.server's name
        n = len(json.loads(self.rfile.read(int(self.headers["Content-Length"])))["data"]["ndarray"])
        if self.mode == "slow":
            self.release.wait(10)  # held past the client's timeout; released at teardown
        status, body = {"ok": (200, {"p_correct": [0.2, 0.9][:n], "assessor": "mnist/v0001"}),
                        "slow": (200, {"p_correct": [0.2] * n}),
                        "loading": (503, {"error": "the assessor of v0001 is not loaded yet"}),
                        "nonsense": (200, {"p_correct": [7.0] * n}),
                        "short": (200, {"p_correct": [0.1]})}[self.mode]
        send_json(self, status, body)

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_sidecar():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Sidecar)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/assess"
    _Sidecar.release.set()
    server.shutdown()
    server.server_close()
    _Sidecar.mode = "ok"
    _Sidecar.release.clear()


def _response(n=2):
    return {"data": {"ndarray": [[0.1] * 10] * n}, "meta": {"tags": {"daic.model_version": "v0001"}}}


def test_the_client_tags_a_decision_and_every_failure_says_why(fake_sidecar):
    client = Abstainer("0.5", fake_sidecar, timeout_s=0.2)
    tags = client.tag(_response(), 2)["meta"]["tags"]
    assert tags[TAG_ABSTAIN] == [1, 0] and tags[TAG_P_CORRECT] == [0.2, 0.9] and tags[TAG_STATUS] == "decided"
    assert tags[TAG_BOUND] == 0.5 and tags[TAG_ASSESSOR] == "mnist/v0001" and tags["daic.model_version"] == "v0001"
    for mode, why in (("loading", "not loaded yet"), ("nonsense", "unusable"), ("short", "unusable"),
                      ("slow", "did not answer in 200 ms")):
        _Sidecar.mode = mode
        started = time.perf_counter()
        tags = client.tag(_response(), 2)["meta"]["tags"]
        assert tags[TAG_ABSTAIN] == [0, 0] and tags[TAG_P_CORRECT] is None and why in tags[TAG_STATUS], (mode, tags)
        assert time.perf_counter() - started < 2.0, "a slow sidecar must not hold the answer past the timeout"
    down = Abstainer("0.5", "http://127.0.0.1:9/assess", timeout_s=0.2)  # nothing listens there
    assert "did not answer" in down.tag(_response(), 2)["meta"]["tags"][TAG_STATUS]
    off = Abstainer("off", fake_sidecar, timeout_s=0.2)
    assert TAG_ABSTAIN not in off.tag(_response(), 2)["meta"]["tags"]  # off: nothing asked, nothing tagged


@pytest.mark.parametrize("mode, url, timeout, match", [
    ("sometimes", "http://127.0.0.1:1/assess", 0.05, "abstain must be 'service', 'off' or a bound"),
    ("1.5", "http://127.0.0.1:1/assess", 0.05, r"abstain must be a number in \(0, 1\)"),
    ("0.5", "https://127.0.0.1/assess", 0.05, "abstain_url must be an http:// URL"),
    ("0.5", "http://127.0.0.1:1/assess", 0, "abstain_timeout_ms must be > 0"),
])
def test_bad_settings_fail_at_start_naming_them(mode, url, timeout, match):
    with pytest.raises(ValueError, match=match):
        Abstainer(mode, url, timeout)
    from daic.serving.config import ServerConfig

    with pytest.raises(ValueError, match=match):
        ServerConfig.resolve({"abstain": mode, "abstain_url": url, "abstain_timeout_ms": timeout * 1000}, env={})


def test_the_policy_record_follows_the_spec_and_the_client_follows_the_record(tmp_path):
    from daic.storage import open_store

    store = open_store(f"file://{tmp_path}")
    assert not read_policy(store, "mnist").enabled and read_policy(store, "mnist").same(AbstainPolicy())
    assert sync_policy(store, "mnist", False, 0.5) is None  # off and no record: nothing to write
    assert sync_policy(store, "mnist", True, 0.3, "default/mnist").bound == 0.3
    assert sync_policy(store, "mnist", True, 0.3, "default/mnist") is None  # a repeated pass writes nothing
    client = Abstainer("service", "http://127.0.0.1:1/assess", 0.05, lambda: read_policy(store, "mnist"))
    assert client.bound is None
    client.refresh()
    assert client.bound == 0.3
    assert sync_policy(store, "mnist", False, 0.3) is not None
    client.refresh()
    assert client.bound is None
    pinned = Abstainer("0.7", "http://127.0.0.1:1/assess", 0.05, lambda: read_policy(store, "mnist"))
    pinned.refresh()
    assert pinned.bound == 0.7  # a pinned bound ignores the record


def test_a_real_stack_answers_with_the_abstain_tags_and_the_sidecar_records_them(tmp_path):
    from daic.serving.stack import LocalStack, StackConfig

    store = registered_store(tmp_path / "store")
    sync_policy(store, "mnist", True, 0.999, "test")  # read when the model loads: almost every input abstains
    ports = [free_port() for _ in range(5)]
    config = StackConfig(store_url=store.url, gateway_port=ports[0], model_port=ports[1], model_metrics_port=ports[2],
                         sidecar_port=ports[3], sidecar_ingest_port=ports[4], state_dir=tmp_path / "state",
                         log_dir=tmp_path / "logs", serving_python=SERVING_PYTHON, reload_interval_s=0.2,
                         sidecar_options={"flush_interval": 600})
    images, _ = mnist_test_images(6, start=4000)
    answers = {}  # Seldon-Puid -> the response's tags

    def predict() -> dict:
        resp = requests.post(running.gateway_url + "/api/v1.0/predictions", data=seldon_request(images), timeout=30,
                             headers=JSON)
        assert resp.status_code == 200, resp.text
        answers[resp.headers["Seldon-Puid"]] = tags = resp.json()["meta"]["tags"]
        return tags

    with LocalStack(config) as running:
        deadline = time.monotonic() + 120
        while True:  # until the sidecar has the model's assessor loaded (503s before: no abstain, said so)
            tags = predict()
            if tags[TAG_STATUS] == "decided":
                break
            assert tags[TAG_ABSTAIN] == [0] * 6 and tags[TAG_P_CORRECT] is None, tags
            assert time.monotonic() < deadline, f"never decided: {tags[TAG_STATUS]}"
        p = np.asarray(tags[TAG_P_CORRECT])
        assert tags[TAG_ASSESSOR] == "mnist/v0001" and tags[TAG_BOUND] == 0.999
        assert tags[TAG_ABSTAIN] == (p < 0.999).astype(int).tolist() and sum(tags[TAG_ABSTAIN]) >= 1
        # Turned off in the record: the model server follows it without a restart.
        sync_policy(store, "mnist", False, 0.999)
        while TAG_ABSTAIN in predict():
            assert time.monotonic() < deadline, "the model server did not follow the policy record"
        running.flush()
    records = read_operational(store, "mnist")
    assert len(records) == 6 * len(answers)
    for puid, tags in answers.items():  # each input's flag in the records is its answer's tag
        rows = records.request_ids == puid
        assert records.abstained[rows].astype(int).tolist() == tags.get(TAG_ABSTAIN, [0] * 6), tags
        if tags.get(TAG_STATUS) == "decided":  # the decision used the scores the records hold
            np.testing.assert_allclose(records.p_correct[rows], tags[TAG_P_CORRECT], atol=1e-3)


def test_the_controller_projects_spec_abstain_onto_the_policy_record(tmp_path):
    """``daic controller``: each pass writes spec.abstain into the record when it differs, with an Event."""
    import yaml
    from fakes.sidecar import FakeSidecar, drifted_stream
    from test_operator_local_controller import FAKE_PIPELINE, events, write_cycle

    from daic.operators.local_controller import LocalController
    from daic.storage import open_store

    store = open_store(f"file://{tmp_path / 'store'}")
    with FakeSidecar(drifted_stream(3, 10_000)) as sidecar:
        cycle = write_cycle(tmp_path / "cycle.yaml", sidecar.url, tmp_path, abstain={"enabled": True, "bound": 0.4},
                            suspend=True)
        ctl = LocalController(cycle, tmp_path / "state", store.url, FAKE_PIPELINE)
        ctl.run(interval=0.01, passes=3)
        policy = read_policy(store, "mnist")
        assert (policy.enabled, policy.bound, policy.source) == (True, 0.4, "local/local")
        assert events(tmp_path / "state").count("AbstainPolicy") == 1  # written once, not every pass
        from click.testing import CliRunner

        from daic.cli import main

        shown = CliRunner().invoke(main, ["status", "--state-dir", str(tmp_path / "state")], env={"COLUMNS": "200"})
        assert shown.exit_code == 0 and "abstaining below P(correct) 0.4" in shown.output, shown.output
        doc = yaml.safe_load(cycle.read_text())
        doc["spec"]["abstain"] = {"enabled": False}
        cycle.write_text(yaml.safe_dump(doc))
        ctl.run(interval=0.01, passes=1)
        assert not read_policy(store, "mnist").enabled
        assert events(tmp_path / "state").count("AbstainPolicy") == 2
        doc["spec"]["abstain"] = {"enabled": True, "bound": 1.5}  # refused: the record is left as it is
        cycle.write_text(yaml.safe_dump(doc))
        ctl.run(interval=0.01, passes=1)
        assert not read_policy(store, "mnist").enabled
    status = json.loads((tmp_path / "state" / "status.json").read_text())["status"]
    assert "spec.abstain.bound" in json.dumps(status)
