"""A labeling task whose stored *contents* are wrong: the book (daic.labeling.book) and the page.

A real task is made with ``LabelBook.create`` and answered through the book; then ``task.json``,
``task-inputs.npz`` and an answer object are replaced by seeded corrupted variants
(tests/corrupt_variants.py). The book must return valid data or raise a StorageError naming the
key (the CLI prints it, the page answers 503 with it), never a KeyError/IndexError/TypeError, and
never export an answer whose label is not a class. The page keeps serving: it answers 503 with a
JSON message naming the key while the object is bad, and 200 again once it is whole.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from corrupt_variants import check_planted, json_variants, npz_variants
from daic.labeling import LabelBook, LabelingTask
from daic.storage import StorageError, open_store
from labeling_server import ServerThread

SEEDS = (0, 1, 2)
IDS = [f"req-{k}:0" for k in range(6)]


@pytest.fixture
def book(tmp_path):
    store = open_store(f"file://{tmp_path / 'store'}")
    rng = np.random.default_rng(0)
    task = LabelingTask(cycle="c1", ids=IDS, predictions=[k % 10 for k in range(6)],
                        confidences=list(rng.uniform(0.3, 1.0, 6)), budget=6)
    book = LabelBook.create(store, task, rng.random((6, 28, 28), dtype=np.float32))
    for k, i in enumerate(IDS[:4]):
        book.record(i, k % 10 if k != 3 else "unsure", labeler="ann")
    return book


def _read_all(store):
    book = LabelBook(store, "c1")  # a fresh book per read, as the page makes one per request
    ids, labels = book.labeled()
    assert set(ids) <= set(IDS) and ((labels >= 0) & (labels < 10)).all()
    book.progress()
    [book.input_of(i) for i in book.task.ids]
    book.export_batch()


def _check(store, key, variants):
    check_planted(store, key, variants, lambda: _read_all(store))


@pytest.mark.parametrize("seed", SEEDS)
def test_task_inputs_and_answer_variants(book, seed):
    store = book.store
    _check(store, book.prefix + "task.json", json_variants(store.get_bytes(book.prefix + "task.json"), seed))
    inputs = book.prefix + "task-inputs.npz"
    _check(store, inputs, npz_variants(store.get_bytes(inputs), seed))
    answer = book.answer_key(IDS[seed])
    _check(store, answer, json_variants(store.get_bytes(answer), seed))


def test_answer_with_a_label_outside_the_classes_is_not_exported(book):
    store, key = book.store, book.answer_key(IDS[1])
    doc = json.loads(store.get_bytes(key))
    for bad in ({"label": 99}, {"label": -1}, {"id": IDS[5]}, {"id": "not-in-the-task"}):
        store.put_bytes(key, json.dumps({**doc, **bad}).encode())
        with pytest.raises(StorageError, match=key.replace(".", r"\.")):
            LabelBook(store, "c1").export_batch()


def test_page_answers_503_naming_the_key_and_recovers(book):
    store = book.store
    bad = {book.prefix + "task.json": b'{"cycle": "c1", "ids": "not a list"}',
           book.prefix + "task-inputs.npz": store.get_bytes(book.prefix + "task-inputs.npz")[:40],
           book.answer_key(IDS[0]): b'{"id": 5, "label": "x"}'}
    with ServerThread(store) as server:
        s = server.session()
        for key, data in bad.items():
            original = store.get_bytes(key)
            store.put_bytes(key, data)
            try:
                r = s.get(f"{server.url}/api/c1/task", timeout=10)
                if key.endswith(".npz"):  # the task reads fine; its images do not
                    r = s.get(f"{server.url}/api/c1/inputs/{r.json()['items'][0]['key']}.png", timeout=10)
                assert r.status_code == 503, (key, r.status_code, r.text)
                assert key in r.json()["error"]
                r = s.post(f"{server.url}/api/c1/labels", json={"id": IDS[5], "label": 1}, timeout=10)
                assert r.status_code in (503, 200) and (r.status_code == 200 or key in r.json()["error"])
            finally:
                store.put_bytes(key, original)
            assert s.get(f"{server.url}/api/c1/task", timeout=10).status_code == 200
        assert s.get(f"{server.url}/healthz", timeout=10).status_code == 200
