"""Labeling task/answers on the store, and the page's HTTP API against the real aiohttp server."""
from __future__ import annotations

import numpy as np
import pytest
import requests

from daic.labeling import LabelBook, LabelingTask
from daic.storage import open_store
from labeling_server import ServerThread


def make_task(store, n=5, cycle="c1"):
    rng = np.random.default_rng(0)
    task = LabelingTask(cycle=cycle, ids=[f"r{i}" for i in range(n)], predictions=[i % 10 for i in range(n)],
                        confidences=list(rng.uniform(0.3, 1.0, n)), budget=n)
    return LabelBook.create(store, task, rng.random((n, 28, 28), dtype=np.float32))


@pytest.fixture
def store(tmp_path):
    return open_store(f"file://{tmp_path}")


def test_answers_persist_and_export_as_trainer_batch(store):
    book = make_task(store)
    book.record("r0", 3)
    book.record("r1", "unsure")
    book.record("r2", 7)
    book.record("r0", 4)  # a correction replaces the earlier answer
    fresh = LabelBook(store, "c1")  # as after a restart
    assert fresh.progress() == (3, 5)
    ids, labels = fresh.labeled()
    assert ids == ["r0", "r2"] and labels.tolist() == [4, 7]
    key = fresh.export_batch()
    batch = store.get_arrays(key)
    assert batch["labels"].tolist() == [4, 7] and batch["ids"].tolist() == ["r0", "r2"]
    np.testing.assert_array_equal(batch["images"][1], fresh.inputs[2])


@pytest.mark.parametrize("label,match", [(10, "out of range"), (-1, "out of range"), ("7", "class index"),
                                         (True, "class index"), (2.0, "class index")])
def test_bad_labels_rejected(store, label, match):
    book = make_task(store)
    with pytest.raises(ValueError, match=match):
        book.record("r0", label)


def test_task_validation():
    with pytest.raises(ValueError, match="same length"):
        LabelingTask(cycle="c", ids=["a", "b"], predictions=[1], confidences=[0.5, 0.5])
    with pytest.raises(ValueError, match="unique"):
        LabelingTask(cycle="c", ids=["a", "a"], predictions=[1, 1], confidences=[0.5, 0.5])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        LabelingTask(cycle="c", ids=["a"], predictions=[1], confidences=[1.5])


def test_http_api_roundtrip_and_errors(store):
    make_task(store)
    with ServerThread(store) as server:
        task = requests.get(f"{server.url}/api/c1/task", timeout=10).json()
        assert task["total"] == 5 and task["answered"] == 0 and len(task["items"]) == 5
        png = requests.get(f"{server.url}/api/c1/inputs/r0.png", timeout=10)
        assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"
        ok = requests.post(f"{server.url}/api/c1/labels", json={"id": "r0", "label": 5}, timeout=10)
        assert ok.status_code == 200 and ok.json() == {"answered": 1, "total": 5}

        bad = requests.post(f"{server.url}/api/c1/labels", data=b"{not json",
                            headers={"Content-Type": "application/json"}, timeout=10)
        assert bad.status_code == 400 and "must be JSON" in bad.json()["error"]
        for body, msg in [({"id": "r0"}, "fields 'id' and 'label'"), ({"id": "zz", "label": 1}, "not part"),
                          ({"id": "r0", "label": 12}, "out of range"), ({"id": "r0", "label": "x"}, "class index")]:
            resp = requests.post(f"{server.url}/api/c1/labels", json=body, timeout=10)
            assert resp.status_code == 400 and msg in resp.json()["error"], (body, resp.text)
        assert requests.get(f"{server.url}/api/nope/task", timeout=10).status_code == 404
    # Restarted server: the accepted answer is still there.
    with ServerThread(store) as server:
        task = requests.get(f"{server.url}/api/c1/task", timeout=10).json()
        assert task["answered"] == 1 and task["items"][0]["label"] == 5
