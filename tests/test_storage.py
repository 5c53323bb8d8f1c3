"""One suite, both backends: a local directory and a real S3 server (SeaweedFS)."""
from __future__ import annotations

import threading
import uuid

import numpy as np
import pytest

from daic.storage import KeyNotFound, StorageError, open_store
from daic.storage.file_store import FileStore


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
