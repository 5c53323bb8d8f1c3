"""Faults at the object-store boundary of the labeling page: every answer the page acknowledged
(200) is in the store once the store is back, a failing store gives a JSON 503 naming it (never a
500 or a hang), and the page works again when the store returns, without a restart.

Two kinds of fault:

* a real SeaweedFS killed (SIGKILL) while the page runs and started again on the same endpoint
  with the same data (connection refused in between);
* an in-process wrapper around a file store whose answer writes block on a gate, for the
  interleavings a real server cannot be made to produce on cue (a write that hangs past the page's
  deadline and lands afterwards, as a PUT to a slow S3 endpoint does).
"""
from __future__ import annotations

import os
import threading
import time
import uuid

import numpy as np
import pytest

from daic.components.testing.forwarding_store import ForwardingStore
from daic.labeling import LabelBook, LabelingTask
from daic.labeling.app import AnswerSuperseded, AnswerWrites, LabelingConfig
from daic.storage import ObjectStore, StorageError, open_store
from daic.storage.seaweedfs import SeaweedS3
from labeling_server import ServerThread

LABELS = "/api/c1/labels"


def make_task(store, n=4):
    rng = np.random.default_rng(0)
    ids = [f"s{k}" for k in range(n)]
    task = LabelingTask(cycle="c1", ids=ids, predictions=[0] * n, confidences=[0.5] * n)
    return LabelBook.create(store, task, rng.random((n, 28, 28), dtype=np.float32)).task.ids


def stored_labels(store) -> dict[str, int | None]:
    return {i: a.label for i, a in LabelBook(store, "c1").answers().items()}


def poll(condition, what: str, deadline_s: float = 20.0):
    end = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"not within {deadline_s:g}s: {what}")
        time.sleep(0.02)


class GatedStore(ForwardingStore):
    """A file store whose next answer write, after ``hold()``, waits until ``release()`` (a hung
    PUT that completes later); other calls go through. Counts answer writes started and finished
    (so a test can wait until every write it caused has settled) and the reads of each key."""

    def __init__(self, inner: ObjectStore) -> None:
        super().__init__(inner)
        self.gate = threading.Event()
        self.gate.set()
        self._hold_next = False
        self.started = self.finished = 0
        self.written: list[str] = []
        self.reads: dict[str, int] = {}
        self._lock = threading.Lock()

    def hold(self) -> None:
        with self._lock:
            self.gate.clear()
            self._hold_next = True

    def release(self) -> None:
        self.gate.set()

    def put_bytes(self, key, data, *, if_none_match=False, if_match=None):
        if "/answers/" not in key:
            return self.inner.put_bytes(key, data, if_none_match=if_none_match, if_match=if_match)
        with self._lock:
            self.started += 1
            held, self._hold_next = self._hold_next, False
        try:
            if held:
                self.gate.wait()
            etag = self.inner.put_bytes(key, data, if_none_match=if_none_match, if_match=if_match)
            with self._lock:
                self.written.append(key.rsplit("/", 1)[1])
            return etag
        finally:
            with self._lock:
                self.finished += 1

    def settled(self) -> bool:
        with self._lock:
            return self.started == self.finished

    def get_bytes(self, key):
        with self._lock:
            self.reads[key] = self.reads.get(key, 0) + 1
        return self.inner.get_bytes(key)


@pytest.fixture
def gated(tmp_path):
    store = GatedStore(open_store(f"file://{tmp_path / 'store'}"))
    return store, make_task(store)


def test_an_answer_that_timed_out_never_overwrites_a_later_acknowledged_one(gated):
    """The labeler answers 3, the store hangs on that write, the page says 503 after its deadline;
    the labeler answers again (7) and the page says 200 (at once, or once the hung write is done).
    The hung write of 3 must not land over the acknowledged 7 when the store wakes up."""
    store, ids = gated
    with ServerThread(store, config=LabelingConfig(store_timeout_s=0.5)) as server:
        api = server.session()
        store.hold()
        first = api.post(server.url + LABELS, json={"id": ids[0], "label": 3}, timeout=30)
        assert first.status_code == 503 and "did not answer within 0.5s" in first.json()["error"]
        again = api.post(server.url + LABELS, json={"id": ids[0], "label": 7}, timeout=30)
        assert again.status_code in (200, 503), again.text
        store.release()  # the hung write of 3 goes on
        poll(store.settled, "every answer write finished")
        if again.status_code == 503:  # the labeler clicks again
            again = api.post(server.url + LABELS, json={"id": ids[0], "label": 7}, timeout=30)
            assert again.status_code == 200, again.text
            poll(store.settled, "every answer write finished")
        assert stored_labels(store) == {ids[0]: 7}


def test_answer_writes_drop_an_older_answer_and_bound_the_wait(gated):
    """The ordering itself (AnswerWrites), without HTTP: an answer that arrived earlier but reaches
    the store after a later one is dropped (the page answers 409); a write that waits on a hung
    earlier write of the same input gives up after ``wait_s`` (the page answers 503)."""
    store, ids = gated
    book, writes = LabelBook(store, "c1"), AnswerWrites()
    older, newer = writes.ticket(), writes.ticket()
    writes.record(book, ids[0], 7, "ann", newer, wait_s=5)
    with pytest.raises(AnswerSuperseded, match="later answer"):
        writes.record(book, ids[0], 3, "ann", older, wait_s=5)
    assert stored_labels(store) == {ids[0]: 7}
    store.hold()
    hung = threading.Thread(target=writes.record, args=(book, ids[1], 1, "ann", writes.ticket(), 5))
    hung.start()
    poll(lambda: store.started == 2, "the hung write started")
    with pytest.raises(StorageError, match="still being written"):
        writes.record(book, ids[1], 2, "ann", writes.ticket(), wait_s=0.2)
    writes.record(book, ids[2], 2, "ann", writes.ticket(), wait_s=0.2)  # other inputs are not held up
    store.release()
    hung.join(timeout=20)
    assert stored_labels(store) == {ids[0]: 7, ids[1]: 1, ids[2]: 2}


def test_answer_writes_keep_slots_only_for_the_tasks_inputs(gated):
    """A logged-in labeler posting answers to ids that are not in the task gets the book's error
    naming the id, and the page keeps nothing for them: its per-input slots stay bounded by the
    task's size, whatever is sent."""
    store, ids = gated
    book, writes = LabelBook(store, "c1"), AnswerWrites()
    for i in range(500):
        with pytest.raises(ValueError, match="is not part of cycle"):
            writes.record(book, f"made-up-{i}", 1, "ann", writes.ticket(), wait_s=1)
    assert len(writes) == 0
    writes.record(book, ids[0], 4, "ann", writes.ticket(), wait_s=1)
    assert len(writes) == 1 and stored_labels(store) == {ids[0]: 4}


def test_work_queued_behind_a_hung_store_is_dropped_with_its_503(gated):
    """With the only I/O thread stuck on a hung write, later requests wait in the queue; the page
    answers 503 when their deadline passes, and their store calls must not run afterwards: the
    queue does not grow without bound while the store hangs, and a 503 whose work had not
    started means it never will (a labeler's retry is the only copy)."""
    store, ids = gated
    task_key = "cycles/c1/labeling/task.json"
    with ServerThread(store, config=LabelingConfig(store_timeout_s=0.5, io_threads=1)) as server:
        api = server.session()
        store.hold()
        hung = api.post(server.url + LABELS, json={"id": ids[0], "label": 1}, timeout=30)
        assert hung.status_code == 503
        reads_before = store.reads[task_key]
        for _ in range(5):
            queued = api.get(server.url + "/api/c1/task", timeout=30)
            assert queued.status_code == 503 and "did not answer within 0.5s" in queued.json()["error"]
        store.release()
        poll(store.settled, "the hung write finished")
        ok = api.post(server.url + LABELS, json={"id": ids[1], "label": 5}, timeout=30)
        assert ok.status_code == 200, ok.text
        # the five queued task reads never ran; the acknowledged post read the task once
        assert store.reads[task_key] == reads_before + 1
        assert stored_labels(store) == {ids[0]: 1, ids[1]: 5}  # s0's write had started: 503, then stored


@pytest.fixture
def private_s3(monkeypatch):
    """A SeaweedFS of this test's own (it is killed and restarted), pointed at by the environment."""
    with SeaweedS3() as server:
        for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MINIO_SECURE"):
            monkeypatch.delenv(name, raising=False)
        for name, value in server.env().items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("DAIC_STORE_DEADLINE", "3")
        yield server


def test_store_killed_and_restarted_loses_no_acknowledged_answer(private_s3):
    """A real SeaweedFS is SIGKILLed while the page runs (connection refused) and started again
    on the same endpoint: answers posted meanwhile get a JSON 503 naming the store within the
    store's deadline; after the restart the same page (no restart of its own) takes answers
    again, and every answer it acknowledged, before or after the crash, is in the store."""
    store = open_store(f"s3://labels/{uuid.uuid4().hex}", create_bucket=True)
    ids = make_task(store)
    acknowledged = {}
    with ServerThread(store, config=LabelingConfig(store_timeout_s=8)) as server:
        api = server.session()
        for k in (0, 1):
            assert api.post(server.url + LABELS, json={"id": ids[k], "label": k}, timeout=30).status_code == 200
            acknowledged[ids[k]] = k
        private_s3.kill()
        for k, path in ((2, LABELS), (None, "/api/c1/task")):
            started = time.monotonic()
            if k is None:
                resp = api.get(server.url + path, timeout=30)
            else:
                resp = api.post(server.url + path, json={"id": ids[k], "label": k}, timeout=30)
            assert time.monotonic() - started < 8, "bounded by DAIC_STORE_DEADLINE"
            assert resp.status_code == 503, resp.text
            body = resp.json()
            assert store.url in body["error"] and "unreachable" in body["error"], body
        private_s3.start()
        for k in (2, 3):
            resp = api.post(server.url + LABELS, json={"id": ids[k], "label": k}, timeout=30)
            assert resp.status_code == 200, resp.text
            acknowledged[ids[k]] = k
        assert resp.json() == {"answered": 4, "total": 4}
        assert api.get(server.url + "/api/c1/task", timeout=30).json()["answered"] == 4
    assert stored_labels(open_store(store.url)) == acknowledged  # those before the crash included


def bump_mtime(path, seconds: float) -> None:
    st = path.stat()
    os.utime(path, (st.st_atime, st.st_mtime + seconds))


def test_an_unreadable_labelers_file_is_a_json_503_and_heals_when_fixed(gated):
    """The labelers file (a Secret on a cluster, edited by ``daic label token``) holds what login and
    every request are checked against; corrupted, the page answers a JSON 503 naming it (it used to
    be a bare 500 with a traceback in the log), lets nobody in on the tokens it read before, and
    works again as soon as the file is whole, without a restart."""
    store, ids = gated
    with ServerThread(store) as server:
        api, path = server.session(), server.labelers.path
        whole = path.read_text()
        path.write_text('{"labelers": ')
        bump_mtime(path, 10)  # a change the page sees even where mtimes are coarse
        for resp in (api.post(server.url + "/api/login", json={"token": server.token}, timeout=10),
                     api.get(server.url + "/api/c1/task", timeout=10),
                     api.post(server.url + LABELS, json={"id": ids[0], "label": 1}, timeout=10)):
            assert resp.status_code == 503, resp.text
            assert "labelers file is unreadable" in resp.json()["error"] and str(path) in resp.json()["error"]
        assert stored_labels(store) == {}
        path.write_text(whole)
        bump_mtime(path, 20)
        assert api.post(server.url + LABELS, json={"id": ids[0], "label": 1}, timeout=10).status_code == 200
