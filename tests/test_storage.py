"""One suite, both backends: a local directory and a real S3 server (SeaweedFS)."""
from __future__ import annotations

import os
import signal
import threading
import time
import uuid

import numpy as np
import pytest

from daic.storage import KeyNotFound, PreconditionFailed, StorageError, open_store
from daic.storage.file_store import FileStore
from daic.storage.seaweedfs import SeaweedS3


@pytest.fixture(params=["file", "s3"])
def store(request, tmp_path):
    if request.param == "file":
        return open_store(f"file://{tmp_path / 'store'}")
    request.getfixturevalue("s3_env")
    # A fresh prefix per test keeps tests independent while sharing one bucket.
    return open_store(f"s3://daic-test/{uuid.uuid4().hex}", create_bucket=True)


def test_bytes_roundtrip_and_overwrite(store):
    store.put_bytes("a/b/c.bin", b"one")
    assert store.get_bytes("a/b/c.bin") == b"one"
    store.put_bytes("a/b/c.bin", b"two")
    assert store.get_bytes("a/b/c.bin") == b"two"
    assert store.exists("a/b/c.bin")
    assert not store.exists("a/b/missing.bin")


def test_an_object_over_the_read_bound_is_refused_naming_it_and_smaller_ones_are_read(store):
    from daic.storage import ObjectTooLarge

    store.put_bytes("big/blob", b"x" * 5000)
    store.put_bytes("small/blob", b"y" * 100)
    store.max_object_bytes = 1000
    for read in (store.get_bytes, store.get_with_etag):
        with pytest.raises(ObjectTooLarge, match=r"'big/blob' holds 5,000 bytes, more than the read bound of 1,000"):
            read("big/blob")
    assert store.get_bytes("small/blob") == b"y" * 100
    store.max_object_bytes = 100  # exactly the bound is still read
    assert store.get_with_etag("small/blob")[0] == b"y" * 100
    with pytest.raises(ObjectTooLarge):
        store.get_json("big/blob")  # every typed read goes through the bound


def test_missing_key_raises_keynotfound_naming_the_url(store):
    with pytest.raises(KeyNotFound) as info:
        store.get_bytes("nope/never.json")
    assert store.url in str(info.value) and "nope/never.json" in str(info.value)


def test_list_by_prefix_is_sorted_and_exact(store):
    for key in ["models/m/v2/card.json", "models/m/v1/card.json", "models/mm/v1/card.json",
                "labels/c1/batch-0.npz"]:
        store.put_bytes(key, b"x")
    assert store.list("models/m/") == ["models/m/v1/card.json", "models/m/v2/card.json"]
    assert store.list("models/m") == ["models/m/v1/card.json", "models/m/v2/card.json",
                                      "models/mm/v1/card.json"]
    assert store.list("labels/") == ["labels/c1/batch-0.npz"]
    assert store.list("absent/") == []
    assert len(store.list("")) == 4


def test_delete(store):
    store.put_bytes("x/y", b"1")
    store.delete("x/y")
    assert not store.exists("x/y")
    store.delete("x/y")  # deleting a missing key is not an error
    assert store.list("x/") == []


def test_json_and_arrays(store):
    record = {"estimate": 0.91, "interval": [0.89, 0.93], "n": np.int64(200)}
    store.put_json("cycles/c1/assessment.json", record)
    assert store.get_json("cycles/c1/assessment.json") == {"estimate": 0.91, "interval": [0.89, 0.93], "n": 200}

    rng = np.random.default_rng(0)
    images = rng.random((5, 28, 28), dtype=np.float32)
    ids = np.array([f"r{i}" for i in range(5)])
    store.put_arrays("labels/c1/batch-0.npz", images=images, labels=np.arange(5), ids=ids)
    back = store.get_arrays("labels/c1/batch-0.npz")
    assert set(back) == {"images", "labels", "ids"}
    np.testing.assert_array_equal(back["images"], images)
    assert back["images"].dtype == np.float32
    np.testing.assert_array_equal(back["ids"], ids)


def test_typed_reads_of_wrong_content_fail_clearly(store):
    store.put_bytes("bad.json", b"{not json")
    with pytest.raises(StorageError, match="not valid JSON"):
        store.get_json("bad.json")
    with pytest.raises(StorageError, match="npz"):
        store.get_arrays("bad.json")


@pytest.mark.parametrize("key", ["", "/abs", "a//b", "../escape", "a/../b", "a/./b", "sp ace"])
def test_bad_keys_rejected(store, key):
    with pytest.raises(ValueError, match="invalid object key"):
        store.put_bytes(key, b"x")


@pytest.mark.parametrize("prefix", ["../", "..", "../../", "a/../../", "./", "/etc/", "a//", "sp ace/", "a/\x00"])
def test_a_listing_prefix_cannot_reach_outside_the_store(store, tmp_path, prefix):
    """A prefix is joined to the store's root (file://) or prefix (s3://): ``../`` listed the files
    beside a file store before it was checked like a key."""
    (tmp_path / "outside.txt").write_text("not in the store")
    store.put_bytes("a/inside.bin", b"x")
    with pytest.raises(ValueError, match="invalid key prefix"):
        store.list(prefix)


@pytest.mark.parametrize("prefix", ["", "a", "a/", "a/ins"])
def test_a_plain_prefix_lists_what_starts_with_it(store, prefix):
    store.put_bytes("a/inside.bin", b"x")
    assert store.list(prefix) == ["a/inside.bin"]


def test_concurrent_writers_never_expose_a_partial_object(store):
    """Readers racing writers see one complete version or another, never a mix."""
    versions = [bytes([i]) * 200_000 for i in range(1, 4)]
    store.put_bytes("race.bin", versions[0])
    stop = threading.Event()
    bad: list[int] = []

    def writer(payload: bytes) -> None:
        for _ in range(5):
            store.put_bytes("race.bin", payload)

    def reader() -> None:
        while not stop.is_set():
            data = store.get_bytes("race.bin")
            if data not in versions:
                bad.append(len(data))

    r = threading.Thread(target=reader)
    r.start()
    writers = [threading.Thread(target=writer, args=(v,)) for v in versions]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    stop.set()
    r.join()
    assert bad == []


def test_conditional_create_and_replace(store):
    etag = store.put_bytes("cas/k", b"one", if_none_match=True)
    with pytest.raises(PreconditionFailed) as info:
        store.put_bytes("cas/k", b"two", if_none_match=True)  # exists: refused
    assert store.url in str(info.value) and "cas/k" in str(info.value)
    data, read_etag = store.get_with_etag("cas/k")
    assert (data, read_etag) == (b"one", etag)
    new_etag = store.put_bytes("cas/k", b"three", if_match=etag)
    assert new_etag != etag and store.get_with_etag("cas/k") == (b"three", new_etag)
    with pytest.raises(PreconditionFailed):
        store.put_bytes("cas/k", b"four", if_match=etag)  # stale ETag: refused
    with pytest.raises(PreconditionFailed):
        store.put_bytes("cas/absent", b"five", if_match=etag)  # nothing to match
    assert store.get_bytes("cas/k") == b"three" and not store.exists("cas/absent")
    assert store.get_json_with_etag is not None
    json_etag = store.put_json("cas/j.json", {"a": 1}, if_none_match=True)
    assert store.get_json_with_etag("cas/j.json") == ({"a": 1}, json_etag)
    assert store.list("cas/") == ["cas/j.json", "cas/k"]  # no lock or probe objects listed
    with pytest.raises(ValueError, match="not both"):
        store.put_bytes("cas/k", b"x", if_none_match=True, if_match=new_etag)


def test_conditional_writes_have_exactly_one_winner(store):
    """Writers racing on one key with the same precondition: exactly one write lands, every round."""
    for round_ in range(5):
        key = f"race/{round_}"
        for condition in ({"if_none_match": True}, "if_match"):
            if condition == "if_match":
                condition = {"if_match": store.get_with_etag(key)[1]}
            start, outcomes = threading.Barrier(6), []

            def write(i: int, condition=condition, key=key) -> None:
                start.wait()
                try:
                    store.put_bytes(key, f"writer-{i}-{sorted(condition)[0]}".encode(), **condition)
                    outcomes.append(i)
                except PreconditionFailed:
                    pass

            threads = [threading.Thread(target=write, args=(i,)) for i in range(6)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert len(outcomes) == 1, (condition, outcomes)
            assert store.get_bytes(key) == f"writer-{outcomes[0]}-{sorted(condition)[0]}".encode()


def test_file_store_crash_mid_write_leaves_old_object(tmp_path, monkeypatch):
    store = FileStore(tmp_path)
    store.put_bytes("k", b"old")

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("os.fsync", boom)
    with pytest.raises(StorageError, match="disk full"):
        store.put_bytes("k", b"new-but-never-complete")
    monkeypatch.undo()
    assert store.get_bytes("k") == b"old"
    assert store.list("") == ["k"]  # no temporary file left visible


def test_unknown_scheme_and_malformed_urls():
    with pytest.raises(StorageError, match="unsupported store URL scheme 'gs'"):
        open_store("gs://bucket/x")
    with pytest.raises(StorageError, match="must be absolute"):
        open_store("file://relative/path")
    with pytest.raises(StorageError, match="needs a bucket"):
        open_store("s3:///prefix")


def test_default_store_is_under_dot_daic(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = open_store()
    assert store.url == f"file://{tmp_path.resolve()}/.daic/store"
    monkeypatch.setenv("DAIC_STORE", f"file://{tmp_path}/elsewhere")
    assert open_store().url == f"file://{tmp_path}/elsewhere"


# S3-specific errors --------------------------------------------------------------------------

def test_s3_missing_bucket_names_url(s3_env):
    with pytest.raises(StorageError, match=r"s3://no-such-bucket-xyz/p .*bucket 'no-such-bucket-xyz' does not exist"):
        open_store("s3://no-such-bucket-xyz/p")


def test_s3_bad_credentials_name_url(s3_env, monkeypatch):
    open_store("s3://daic-test", create_bucket=True)
    monkeypatch.setenv("MINIO_SECRET_KEY", "wrong-secret")
    with pytest.raises(StorageError, match=r"s3://daic-test .*credentials rejected"):
        open_store("s3://daic-test")


def test_s3_unreachable_endpoint_fails_fast_naming_url(monkeypatch):
    from daic.storage.seaweedfs import free_port

    monkeypatch.setenv("MINIO_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("MINIO_ACCESS_KEY", "a")
    monkeypatch.setenv("MINIO_SECRET_KEY", "b")
    with pytest.raises(StorageError, match=r"s3://bucket/p .*endpoint unreachable"):
        open_store("s3://bucket/p")


def test_s3_settings_errors_name_the_variable(monkeypatch):
    for name in ("MINIO_ENDPOINT", "AWS_ENDPOINT_URL", "MINIO_ACCESS_KEY", "AWS_ACCESS_KEY_ID",
                 "MINIO_SECRET_KEY", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(StorageError, match="MINIO_ENDPOINT"):
        open_store("s3://b/p")
    monkeypatch.setenv("MINIO_ENDPOINT", "ftp://host:1")
    monkeypatch.setenv("MINIO_ACCESS_KEY", "a")
    monkeypatch.setenv("MINIO_SECRET_KEY", "b")
    with pytest.raises(StorageError, match="expected http://host:port"):
        open_store("s3://b/p")


def test_s3_server_ignoring_conditional_writes_is_refused(s3_env, monkeypatch):
    """A server that drops the If-None-Match header (as one without conditional-write support does:
    simulated by stripping the header before it reaches the real SeaweedFS) is refused before any
    conditional write, instead of racing silently."""
    bucket = f"daic-nocas-{uuid.uuid4().hex[:8]}"  # conditional support is verified once per bucket
    store = open_store(f"s3://{bucket}/p", create_bucket=True)
    real = store.client._put_object

    def ignoring(bucket_name, object_name, data, headers=None, query_params=None):
        headers = {k: v for k, v in (headers or {}).items() if k.lower() not in ("if-none-match", "if-match")}
        return real(bucket_name, object_name, data, headers=headers, query_params=query_params)

    monkeypatch.setattr(store.client, "_put_object", ignoring)
    with pytest.raises(StorageError, match=r"s3://daic-nocas-.* ignores S3 conditional writes"):
        store.put_bytes("champion", b"x", if_none_match=True)
    assert store.list("") == []  # neither the object nor the probe was left behind


def test_store_timeouts_are_configurable_and_validated(monkeypatch):
    from daic.storage.s3_store import StoreTimeouts

    assert StoreTimeouts.from_env({}).deadline_s + StoreTimeouts.from_env({}).read_s <= 30
    t = StoreTimeouts.from_env({"DAIC_STORE_DEADLINE": "3.5", "DAIC_STORE_READ_TIMEOUT": "1",
                                "DAIC_STORE_CONNECT_TIMEOUT": "0.5", "DAIC_STORE_RETRIES": "0"})
    assert (t.deadline_s, t.read_s, t.connect_s, t.retries) == (3.5, 1.0, 0.5, 0)
    for name, bad in [("DAIC_STORE_DEADLINE", "soon"), ("DAIC_STORE_READ_TIMEOUT", "0"),
                      ("DAIC_STORE_RETRIES", "1.5"), ("DAIC_STORE_CONNECT_TIMEOUT", "-1")]:
        with pytest.raises(StorageError, match=name):
            StoreTimeouts.from_env({name: bad})


@pytest.fixture
def private_s3(monkeypatch):
    """A private SeaweedFS (others' tests must not be frozen), pointed at by the environment; the
    test freezes it with SIGSTOP: it then accepts TCP connections (the kernel does) but never
    answers, as a hung server does. SIGCONT before the fixture kills it."""
    with SeaweedS3() as server:
        for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MINIO_SECURE",
                     "DAIC_STORE_DEADLINE", "DAIC_STORE_READ_TIMEOUT", "DAIC_STORE_CONNECT_TIMEOUT"):
            monkeypatch.delenv(name, raising=False)
        for name, value in server.env().items():
            monkeypatch.setenv(name, value)
        open_store("s3://frozen/p", create_bucket=True).put_bytes("k", b"v")
        try:
            yield server
        finally:
            os.killpg(server._proc.pid, signal.SIGCONT)


def _freeze(server) -> None:
    os.killpg(server._proc.pid, signal.SIGSTOP)


def test_s3_frozen_server_fails_within_30_s_by_default(private_s3):
    """The slowest default case: a read (retried, as reads are) against a server that never answers."""
    store = open_store("s3://frozen/p")
    _freeze(private_s3)
    start = time.monotonic()
    with pytest.raises(StorageError, match=r"s3://frozen/p \(endpoint 127\.0\.0\.1:\d+\): timed out .*read 'k'"):
        store.get_bytes("k")
    assert time.monotonic() - start < 30


def test_s3_frozen_server_every_operation_obeys_the_configured_deadline(private_s3, monkeypatch):
    monkeypatch.setenv("DAIC_STORE_DEADLINE", "1.5")
    stores = [open_store("s3://frozen/p") for _ in range(7)]  # one per call: no shared connection state
    _freeze(private_s3)
    calls = [("open", lambda s: open_store("s3://frozen/p")),
             ("write", lambda s: s.put_bytes("k2", b"v")),
             ("conditional write", lambda s: s.put_bytes("k3", b"v", if_none_match=True)),
             ("read", lambda s: s.get_with_etag("k")),
             ("stat", lambda s: s.exists("k")),
             ("list", lambda s: s.list("")),
             ("delete", lambda s: s.delete("k"))]
    for (what, call), store in zip(calls, stores):
        start = time.monotonic()
        with pytest.raises(StorageError, match=r"s3://frozen/p .*timed out"):
            call(store)
        assert time.monotonic() - start < 1.5 + 2.0, what  # the deadline plus scheduling slack
