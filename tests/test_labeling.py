"""Labeling task/answers on the store, and the page's HTTP API against the real aiohttp server:
authentication (per-labeler tokens), origin and media-type checks, the bad-input table, blind
labeling by default, and a hung store (a real SeaweedFS stopped with SIGSTOP)."""
from __future__ import annotations

import gzip
import http.client
import json
import os
import signal
import time
import uuid

import numpy as np
import pytest
import requests

from daic.labeling import LabelBook, LabelingTask
from daic.labeling.app import LabelingConfig
from daic.storage import open_store
from daic.storage.keys import id_to_key_part
from labeling_server import ServerThread


def sidecar_ids(n: int, seed: int = 0) -> list[str]:
    """Ids as the sidecar makes them: ``<Seldon puid>:<row>`` (daic/sidecar/service.py)."""
    rng = np.random.default_rng(seed)
    return [f"{uuid.UUID(bytes=rng.bytes(16), version=4)}:{k % 3}" for k in range(n)]


def make_task(store, n=5, cycle="c1", ids=None, show_model_answer=False):
    rng = np.random.default_rng(0)
    ids = ids or sidecar_ids(n)
    task = LabelingTask(cycle=cycle, ids=ids, predictions=[i % 10 for i in range(len(ids))],
                        confidences=list(rng.uniform(0.3, 1.0, len(ids))), budget=len(ids),
                        show_model_answer=show_model_answer)
    return LabelBook.create(store, task, rng.random((len(ids), 28, 28), dtype=np.float32))


@pytest.fixture
def store(tmp_path):
    return open_store(f"file://{tmp_path / 'store'}")


def test_answers_persist_and_export_as_trainer_batch(store):
    book = make_task(store)
    r = book.task.ids
    book.record(r[0], 3)
    book.record(r[1], "unsure")
    book.record(r[2], 7)
    book.record(r[0], 4)  # a correction replaces the earlier answer
    fresh = LabelBook(store, "c1")  # as after a restart
    assert fresh.progress() == (3, 5)
    ids, labels = fresh.labeled()
    assert ids == [r[0], r[2]] and labels.tolist() == [4, 7]
    key = fresh.export_batch()
    batch = store.get_arrays(key)
    assert batch["labels"].tolist() == [4, 7] and batch["ids"].tolist() == [r[0], r[2]]
    np.testing.assert_array_equal(batch["images"][1], fresh.inputs[2])


def test_any_id_is_recorded_under_its_encoded_key(store):
    """The store's key pattern has no ':'; ids with ':', '/', '..', NUL, unicode, and ids too long to be
    a key part (a client's own request id) are answered."""
    ids = sidecar_ids(2) + ["a/../../b", "..", "\x00", "数字:0", "plain", "x" * 300 + ":0", "数" * 200 + ":1"]
    book = make_task(store, ids=ids)
    for k, i in enumerate(ids):
        book.record(i, k)
    assert {i: a.label for i, a in LabelBook(store, "c1").answers().items()} == {i: k for k, i in enumerate(ids)}
    assert sorted(store.list("cycles/c1/labeling/answers/")) == sorted(
        f"cycles/c1/labeling/answers/{id_to_key_part(i)}.json" for i in ids)
    with ServerThread(store) as server:  # the page serves each input under its key, hashed or not
        api = server.session()
        items = api.get(f"{server.url}/api/c1/task", timeout=10).json()["items"]
        assert [i["id"] for i in items] == ids
        for item in items:
            png = api.get(f"{server.url}/api/c1/inputs/{item['key']}.png", timeout=10)
            assert png.status_code == 200 and png.content[:4] == b"\x89PNG"
            ok = api.post(f"{server.url}/api/c1/labels", json={"id": item["id"], "label": 9}, timeout=10)
            assert ok.status_code == 200
    assert {a.label for a in LabelBook(store, "c1").answers().values()} == {9}


@pytest.mark.parametrize("label,match", [(10, "out of range"), (-1, "out of range"), ("7", "class index"),
                                         (True, "class index"), (2.0, "class index")])
def test_bad_labels_rejected(store, label, match):
    book = make_task(store)
    with pytest.raises(ValueError, match=match):
        book.record(book.task.ids[0], label)


def test_task_validation():
    with pytest.raises(ValueError, match="same length"):
        LabelingTask(cycle="c", ids=["a", "b"], predictions=[1], confidences=[0.5, 0.5])
    with pytest.raises(ValueError, match="unique"):
        LabelingTask(cycle="c", ids=["a", "a"], predictions=[1, 1], confidences=[0.5, 0.5])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        LabelingTask(cycle="c", ids=["a"], predictions=[1], confidences=[1.5])
    for cycle in ("..", ".", "a/b", "", "a b", "x" * 129):
        with pytest.raises(ValueError, match="invalid cycle name"):
            LabelingTask(cycle=cycle, ids=["a"], predictions=[1], confidences=[0.5])
    with pytest.raises(ValueError, match="lone surrogate"):
        LabelingTask(cycle="c", ids=["\ud800"], predictions=[1], confidences=[0.5])


def test_http_api_roundtrip_and_errors(store):
    book = make_task(store)
    ids = book.task.ids
    with ServerThread(store) as server:
        api = server.session()
        task = api.get(f"{server.url}/api/c1/task", timeout=10).json()
        assert task["total"] == 5 and task["answered"] == 0 and len(task["items"]) == 5
        assert task["labeler"] == "ann"
        item = task["items"][0]
        assert item["id"] == ids[0] and item["key"] == id_to_key_part(ids[0])
        png = api.get(f"{server.url}/api/c1/inputs/{item['key']}.png", timeout=10)
        assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"
        assert api.get(f"{server.url}/api/c1/inputs/zz.png", timeout=10).status_code == 404
        assert api.get(f"{server.url}/api/c1/inputs/=zz.png", timeout=10).status_code == 400
        ok = api.post(f"{server.url}/api/c1/labels", json={"id": ids[0], "label": 5}, timeout=10)
        assert ok.status_code == 200 and ok.json() == {"answered": 1, "total": 5}
        for body, msg in [({"id": ids[0]}, "'label'"), ({"id": "zz", "label": 1}, "not part"),
                          ({"id": ids[0], "label": 12}, "out of range"), ({"id": ids[0], "label": "x"}, "class index"),
                          ({"id": ids[0], "label": True}, "'label'"), ({"id": ids[0], "label": 2.0}, "'label'"),
                          ({"id": 7, "label": 1}, "'id'"), ([], "body"),
                          ({"id": ids[0], "label": 1, "labeler": "mallory"}, "'labeler'")]:
            resp = api.post(f"{server.url}/api/c1/labels", json=body, timeout=10)
            assert resp.status_code == 400 and msg in resp.json()["error"], (body, resp.text)
        assert api.get(f"{server.url}/api/nope/task", timeout=10).status_code == 404
        assert api.get(f"{server.url}/healthz", timeout=10).json() == {"ok": True}
    # Restarted server: the accepted answer is still there, under the token's labeler.
    assert LabelBook(store, "c1").answers()[ids[0]].labeler == "ann"
    with ServerThread(store) as server:
        task = server.session().get(f"{server.url}/api/c1/task", timeout=10).json()
        assert task["answered"] == 1 and task["items"][0]["label"] == 5


def test_every_route_but_health_and_login_needs_a_labelers_token(store):
    make_task(store)
    with ServerThread(store) as server:
        anonymous = requests.Session()
        for path in ("/api/c1/task", f"/api/c1/inputs/{id_to_key_part(LabelBook(store, 'c1').task.ids[0])}.png"):
            assert anonymous.get(server.url + path, timeout=10).status_code == 401
            assert server.session("not-a-token").get(server.url + path, timeout=10).status_code == 401
        post = anonymous.post(f"{server.url}/api/c1/labels", json={"id": "x", "label": 1},
                              headers={"Origin": server.url}, timeout=10)
        assert post.status_code == 401 and "log in" in post.json()["error"]
        for path in ("/", "/label/c1"):  # pages send the browser to the login page
            resp = anonymous.get(server.url + path, allow_redirects=False, timeout=10)
            assert resp.status_code == 302 and resp.headers["Location"] == "/login"
        assert anonymous.get(f"{server.url}/login", timeout=10).status_code == 200
        assert anonymous.get(f"{server.url}/healthz", timeout=10).status_code == 200
        # a revoked token stops working at once (the page re-reads the labelers file)
        server.labelers.revoke("ann")
        assert server.session().get(f"{server.url}/api/c1/task", timeout=10).status_code == 401


def test_browser_login_cookie_origin_and_media_type(store):
    book = make_task(store)
    sample = book.task.ids[0]
    with ServerThread(store) as server:
        browser = requests.Session()
        refused = browser.post(f"{server.url}/api/login", json={"token": "wrong"},
                               headers={"Origin": server.url}, timeout=10)
        assert refused.status_code == 401
        logged = browser.post(f"{server.url}/api/login", json={"token": server.token},
                              headers={"Origin": server.url}, timeout=10)
        assert logged.status_code == 200 and logged.json() == {"labeler": "ann"}
        cookie = logged.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert browser.get(f"{server.url}/api/c1/task", timeout=10).status_code == 200
        url = f"{server.url}/api/c1/labels"
        body = json.dumps({"id": sample, "label": 1})
        cases = [  # (headers, status): what another site could make the labeler's browser send
            ({"Content-Type": "application/json", "Origin": "https://evil.example"}, 403),
            ({"Content-Type": "application/json", "Origin": "null"}, 403),
            ({"Content-Type": "application/json"}, 403),  # cookie and no Origin
            ({"Content-Type": "text/plain", "Origin": server.url}, 415),
            ({"Content-Type": "application/x-www-form-urlencoded", "Origin": server.url}, 415),
            ({"Content-Type": "multipart/form-data; boundary=x", "Origin": server.url}, 415),
        ]
        for headers, status in cases:
            resp = browser.post(url, data=body, headers=headers, timeout=10)
            assert resp.status_code == status and resp.json()["error"], (headers, resp.text)
        assert LabelBook(store, "c1").answers() == {}
        ok = browser.post(url, data=body, headers={"Content-Type": "application/json", "Origin": server.url},
                          timeout=10)
        assert ok.status_code == 200
        assert LabelBook(store, "c1").answers()[sample].labeler == "ann"
        assert ok.headers["X-Frame-Options"] == "DENY" and "frame-ancestors 'none'" in ok.headers[
            "Content-Security-Policy"]


DEEP = b'{"id": ' + b"[" * 100_000 + b"]" * 100_000 + b', "label": 1}'
BAD_BODIES = [  # (name, body bytes, extra headers, status, message part)
    ("NaN", b'{"id": "x", "label": NaN}', {}, 400, "JSON"),
    ("Infinity", b'{"id": "x", "label": Infinity}', {}, 400, "JSON"),
    ("-Infinity", b'{"id": "x", "label": -Infinity}', {}, 400, "JSON"),
    ("big float", b'{"id": "x", "label": 1e999}', {}, 400, ""),
    ("deep nesting", DEEP[:15_000], {}, 400, "JSON"),
    ("utf-16", '{"id": "x", "label": 1}'.encode("utf-16"), {}, 400, "JSON"),
    ("latin-1", '{"id": "\xe9", "label": 1}'.encode("latin-1"), {}, 400, "JSON"),
    ("utf-16 charset", b'{"id": "x", "label": 1}', {"Content-Type": "application/json; charset=utf-16"}, 400,
     "UTF-8"),
    ("lone surrogate", b'{"id": "\\ud800", "label": 1}', {}, 400, ""),
    ("garbage gzip", b"\x1f\x8b garbage", {"Content-Encoding": "gzip"}, 400, "Content-Encoding"),
    ("real gzip", gzip.compress(b'{"id": "x", "label": 1}'), {"Content-Encoding": "gzip"}, 400, "Content-Encoding"),
    ("br", b"xx", {"Content-Encoding": "br"}, 400, "Content-Encoding"),
    ("empty", b"", {}, 400, "JSON"),
    ("trailing garbage", b'{"id": "x", "label": 1} x', {}, 400, "JSON"),
    ("duplicate-free scalar", b'"x"', {}, 400, "body"),
    ("huge id", json.dumps({"id": "x" * 1000, "label": 1}).encode(), {}, 400, "'id'"),
    ("over the cap", b'{"id": "' + b"x" * 20_000 + b'", "label": 1}', {}, 413, "limit"),
    ("deep and over the cap", DEEP, {}, 413, "limit"),
]


@pytest.mark.parametrize("name,body,headers,status,message", BAD_BODIES, ids=[c[0] for c in BAD_BODIES])
def test_bad_bodies_get_a_4xx_with_a_message(store, name, body, headers, status, message):
    make_task(store)
    with ServerThread(store) as server:
        resp = server.session().post(f"{server.url}/api/c1/labels", data=body,
                                     headers={"Content-Type": "application/json", **headers}, timeout=30)
        assert resp.status_code == status, resp.text
        assert message in resp.json()["error"]
        assert LabelBook(store, "c1").answers() == {}
        assert server.session().get(f"{server.url}/healthz", timeout=10).status_code == 200


def test_a_chunked_body_is_read_whole_and_past_the_cap_is_413(store):
    """Chunked bodies (no Content-Length) arrive in pieces: the cap applies to the whole body, and a
    valid JSON prefix followed by more data is not taken for the body."""
    ids = make_task(store).task.ids
    with ServerThread(store, config=LabelingConfig(max_body_bytes=1024)) as server:
        valid = json.dumps({"id": ids[0], "label": 1}).encode()
        for chunks, status in (([b"x" * 512] * 8, 413), ([valid] + [b" " * 300] * 8, 413),
                               ([valid, b"garbage"], 400), ([valid[:10], valid[10:]], 200)):
            def slowly(parts=chunks):
                for part in parts:
                    yield part
            resp = server.session().post(f"{server.url}/api/c1/labels", data=slowly(),
                                         headers={"Content-Type": "application/json"}, timeout=30)
            assert resp.status_code == status, (chunks[:2], resp.text)
            assert status == 200 or resp.json()["error"]


@pytest.mark.parametrize("raw", ["%2E%2E", "%2E", ".hidden", "a%20b", "a%2Fb", "a%00b", "%E6%95%B0", "x" * 200,
                                 "a%3Ab", "-%0A"])
def test_invalid_cycle_names_are_400_naming_the_cycle(store, raw):
    make_task(store)
    with ServerThread(store) as server:
        for method, path, body in (("GET", f"/api/{raw}/task", None), ("GET", f"/label/{raw}", None),
                                   ("POST", f"/api/{raw}/labels", b'{"id": "x", "label": 1}')):
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
            conn.request(method, path, body=body, headers={"Authorization": f"Bearer {server.token}",
                                                           "Content-Type": "application/json"})
            resp = conn.getresponse()
            text = resp.read().decode()
            conn.close()
            assert resp.status in (400, 404), (method, path, resp.status, text)  # 404: no route matched
            if resp.status == 400:
                assert "invalid cycle name" in json.loads(text)["error"]


def test_blind_by_default_and_the_model_answer_only_when_the_cycle_asks(store, tmp_path):
    make_task(store, cycle="blind")
    make_task(store, cycle="shown", show_model_answer=True)
    with ServerThread(store) as server:
        api = server.session()
        blind = api.get(f"{server.url}/api/blind/task", timeout=10).json()
        shown = api.get(f"{server.url}/api/shown/task", timeout=10).json()
    assert blind["show_model_answer"] is False
    assert all("prediction" not in i and "confidence" not in i for i in blind["items"])
    assert shown["show_model_answer"] is True and all("prediction" in i for i in shown["items"])


def test_a_hung_store_does_not_freeze_the_page(seaweed, s3_env):
    """The object store is a real SeaweedFS S3 server; SIGSTOP makes it hang mid-flight (it accepts
    connections but never answers), as a store behind a dead network path does."""
    store = open_store(f"s3://daic-test/{uuid.uuid4().hex}", create_bucket=True)
    ids = make_task(store).task.ids
    config = LabelingConfig(store_timeout_s=1.5)
    with ServerThread(store, config=config) as server:
        api = server.session()
        assert api.get(f"{server.url}/api/c1/task", timeout=10).status_code == 200
        pgid = os.getpgid(seaweed._proc.pid)
        os.killpg(pgid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            hung = api.post(f"{server.url}/api/c1/labels", json={"id": ids[0], "label": 1}, timeout=30)
            assert hung.status_code == 503 and "did not answer within 1.5s" in hung.json()["error"]
            assert time.monotonic() - started < 15
            for _ in range(20):  # the loop is free: health answers at once, again and again
                assert api.get(f"{server.url}/healthz", timeout=2).json() == {"ok": True}
            assert api.get(f"{server.url}/api/c1/task", timeout=30).status_code == 503
        finally:
            os.killpg(pgid, signal.SIGCONT)
        ok = api.post(f"{server.url}/api/c1/labels", json={"id": ids[1], "label": 2}, timeout=60)
        assert ok.status_code == 200


def test_an_unreadable_task_is_503_naming_it_not_a_500(store):
    book = make_task(store)
    store.put_json(book.prefix + "task.json", {"cycle": "c1", "ids": []})
    with ServerThread(store) as server:
        for method, path in (("get", "/api/c1/task"), ("post", "/api/c1/labels")):
            resp = getattr(server.session(), method)(server.url + path, json={"id": "x", "label": 1}, timeout=10)
            assert resp.status_code == 503 and "unreadable" in resp.json()["error"], resp.text
