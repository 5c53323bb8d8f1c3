"""Two writers of one cycle's records, or of one model's champion, at once, against a real store
(a local directory and, for the champion, the real S3 server SeaweedFS).

The interleavings are forced, not hoped for: a :class:`Gated` store runs a hook before each store
operation of a named thread, and the hooks wait on events the other thread sets (bounded waits;
a wait that runs out fails the test instead of hanging it).

- ``result.json`` is merged by several steps (estimate, fit-filter, evaluate): two merges of
  different fields that both read before either writes must keep both (no lost update).
- Two evaluate attempts of one cycle (a KFP retry while the first attempt still writes): the
  evaluation record and the result the operator reads must come from the same attempt; the
  attempt that lost fails cleanly.
- Two deploy steps of two cycles promoting different challengers at once: exactly one moves the
  champion pointer, the other fails with ``ChampionConflict``; the pointer and its history stay
  whole.
"""
from __future__ import annotations

import threading
import uuid
from collections.abc import Callable

import numpy as np
import pytest

from daic.storage import ObjectStore, open_store

WAIT = 30.0  # seconds: a bound on every wait, never a synchronisation


def wait(event: threading.Event, what: str) -> None:
    if not event.wait(WAIT):
        raise AssertionError(f"timed out waiting for {what}")


class Gated(ObjectStore):
    """``inner`` with hooks: ``on(thread, key, fn)`` runs ``fn(op)`` before every operation of the
    thread named ``thread`` on ``key`` (ops: put, get, exists, delete)."""

    def __init__(self, inner: ObjectStore):
        self.inner, self.url = inner, inner.url
        self.hooks: list[tuple[str, str, Callable[[str], None]]] = []
        self.log: list[tuple[str, str, str]] = []
        self._lock = threading.Lock()

    def on(self, thread: str, key: str, fn: Callable[[str], None]) -> None:
        self.hooks.append((thread, key, fn))

    def _before(self, op: str, key: str) -> None:
        me = threading.current_thread().name
        with self._lock:
            self.log.append((me, op, key))
        for thread, k, fn in list(self.hooks):
            if thread == me and k == key:
                fn(op)

    def put_bytes(self, key, data, *, if_none_match=False, if_match=None):
        self._before("put", key)
        return self.inner.put_bytes(key, data, if_none_match=if_none_match, if_match=if_match)

    def get_bytes(self, key):
        self._before("get", key)
        return self.inner.get_bytes(key)

    def get_with_etag(self, key):
        self._before("get", key)
        return self.inner.get_with_etag(key)

    def exists(self, key):
        self._before("exists", key)
        return self.inner.exists(key)

    def list(self, prefix=""):
        return self.inner.list(prefix)

    def delete(self, key):
        self._before("delete", key)
        return self.inner.delete(key)


def run_both(a: Callable[[], object], b: Callable[[], object]) -> dict[str, object]:
    """Run ``a`` in thread "A" and ``b`` in thread "B"; each one's return value or exception."""
    out: dict[str, object] = {}

    def body(name, fn):
        try:
            out[name] = fn()
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            out[name] = exc

    threads = [threading.Thread(target=body, args=(n, f), name=n) for n, f in (("A", a), ("B", b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT * 4)
        assert not t.is_alive(), f"thread {t.name} is stuck"
    return out


@pytest.fixture(params=["file", "s3"])
def store(request, tmp_path):
    if request.param == "file":
        return open_store(f"file://{tmp_path / 'store'}")
    request.getfixturevalue("s3_env")
    return open_store(f"s3://daic-test/{uuid.uuid4().hex}", create_bucket=True)


# -- result.json: two merges at once ---------------------------------------------------------------

def test_two_result_merges_that_read_before_either_writes_keep_both(store):
    """fit-filter merging its filter_* fields while (a stale attempt of) estimate merges its own:
    both read the record, then both write. Before the fix the second write dropped the first's fields."""
    from daic.components.estimate_accuracy.logic import write_result

    write_result(store, "c1", {"drop_confirmed": True})
    gated = Gated(store)
    read = {"A": threading.Event(), "B": threading.Event()}

    def both_read_first(name: str, other: str) -> Callable[[str], None]:
        def hook(op: str) -> None:
            if op == "put":
                wait(read[other], f"{other} to read result.json")
            else:
                read[name].set()
        return hook

    key = "cycles/c1/result.json"
    gated.on("A", key, both_read_first("A", "B"))
    gated.on("B", key, both_read_first("B", "A"))
    out = run_both(lambda: write_result(gated, "c1", {"filter_decision": "deploy", "filter_version": "v0002"}),
                   lambda: write_result(gated, "c1", {"offline_accuracy": 0.81, "labels_used": 90}))
    assert not any(isinstance(v, BaseException) for v in out.values()), out
    assert store.get_json(key) == {"drop_confirmed": True, "filter_decision": "deploy", "filter_version": "v0002",
                                   "offline_accuracy": 0.81, "labels_used": 90}
