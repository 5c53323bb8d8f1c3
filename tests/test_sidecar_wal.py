"""Write-ahead log and operational-record storage (real files, real file:// store)."""
from __future__ import annotations

import os

import numpy as np
import pytest

from daic.sidecar.records import OperationalRecords, batch_key, read_operational, write_batch
from daic.sidecar.wal import WriteAheadLog
from daic.storage import open_store


def test_recover_replays_uncommitted_segments_in_order(tmp_path):
    wal = WriteAheadLog(tmp_path)
    assert wal.recover().entries == []
    for i in range(3):
        wal.append({"i": i})
    closed = wal.rotate()
    wal.append({"i": 3})
    wal.commit(closed, {"state": "after 0..2"})
    wal.append({"i": 4})
    wal.close()

    again = WriteAheadLog(tmp_path)
    rec = again.recover()
    assert rec.checkpoint["state"] == "after 0..2" and rec.checkpoint["committed_segment"] == closed
    assert [e["i"] for e in rec.entries] == [3, 4]
    assert again.segment > max(rec.segments)


def test_torn_tail_is_skipped_and_counted(tmp_path):
    wal = WriteAheadLog(tmp_path)
    wal.recover()
    wal.append({"i": 0})
    seg = wal.segment
    wal.close()
    with open(tmp_path / f"wal-{seg:010d}.jsonl", "ab") as fh:
        fh.write(b'{"i": 1, "trunc')
    rec = WriteAheadLog(tmp_path).recover()
    assert [e["i"] for e in rec.entries] == [0] and rec.torn_lines == 1


@pytest.mark.parametrize("checkpoint", ['[]', '{"committed_segment": "9"}', '{"committed_segment": 1e9}',
                                        '{"committed_segment": -2}'])
def test_a_corrupt_checkpoint_is_refused_before_any_segment_is_deleted(tmp_path, checkpoint):
    """recover() deletes the segments the checkpoint says are committed: a corrupt checkpoint must
    stop it first, with every accepted entry still on disk."""
    wal = WriteAheadLog(tmp_path)
    wal.recover()
    for i in range(3):
        wal.append({"i": i})
        wal.rotate()
    wal.close()
    segments = sorted(p.name for p in tmp_path.glob("wal-*.jsonl"))
    (tmp_path / "checkpoint.json").write_text(checkpoint)
    with pytest.raises(RuntimeError, match="checkpoint.json: write-ahead-log checkpoint is .*move it aside"):
        WriteAheadLog(tmp_path).recover()
    assert sorted(p.name for p in tmp_path.glob("wal-*.jsonl")) == segments
    (tmp_path / "checkpoint.json").unlink()
    assert [e["i"] for e in WriteAheadLog(tmp_path).recover().entries] == [0, 1, 2]


def test_commit_refuses_the_open_segment(tmp_path):
    wal = WriteAheadLog(tmp_path)
    wal.recover()
    with pytest.raises(ValueError, match="still open"):
        wal.commit(wal.segment, {})


def test_sync_handle_only_when_dirty(tmp_path):
    wal = WriteAheadLog(tmp_path)
    wal.recover()
    assert wal.sync_handle() is None
    wal.append({"x": 1})
    fd = wal.sync_handle()
    os.fsync(fd)
    os.close(fd)
    assert wal.sync_handle() is None


def _records(n, t0, rid="r", version="v1", seed=0):
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(10), size=n)
    return OperationalRecords(
        ids=[f"{rid}:{i}" for i in range(n)], request_ids=[rid] * n, times=t0 + np.arange(n),
        inputs=rng.random((n, 28, 28)), predictions=probs.argmax(1), probs=probs,
        embeddings=rng.random((n, 16)), shadow_probs=probs, p_correct=rng.random(n), drift=rng.random(n),
        model_version=[version] * n)


def test_records_round_trip_filter_and_dedupe(tmp_path):
    store = open_store(f"file://{tmp_path}")
    a = _records(4, 1000.0, "a")
    b = _records(3, 2000.0, "b", seed=1)
    k1 = write_batch(store, "mnist", a, seq=1)
    write_batch(store, "mnist", b, seq=2)
    write_batch(store, "mnist", a, seq=3)  # the same rows again (a replay after a crash)
    assert k1 == "operational/mnist/date=1970-01-01/hour=00/part-19700101T001640000000Z-00000001.parquet"
    everything = read_operational(store, "mnist")
    assert len(everything) == 7
    assert list(everything.ids) == [f"a:{i}" for i in range(4)] + [f"b:{i}" for i in range(3)]
    np.testing.assert_allclose(everything.inputs[:4], a.inputs, rtol=1e-6)
    window = read_operational(store, "mnist", since=1002.0, until=2001.0)
    assert list(window.ids) == ["a:2", "a:3", "b:0"]
    assert len(read_operational(store, "other")) == 0


def test_records_validation(tmp_path):
    good = _records(2, 0.0)
    arrays = good.to_arrays()
    arrays["p_correct"] = arrays["p_correct"][:1]
    with pytest.raises(ValueError, match="p_correct"):
        OperationalRecords(**arrays)
    with pytest.raises(ValueError, match="deployment"):
        batch_key("a/b", 0.0, 1)
    with pytest.raises(ValueError, match="empty"):
        write_batch(open_store(f"file://{tmp_path}"), "d", OperationalRecords.empty(), 1)


def test_records_round_trip_on_s3(s3_env):
    """The cluster's store: records written and read back through an S3 server (SeaweedFS)."""
    store = open_store("s3://daic-sidecar-test/records", create_bucket=True)
    write_batch(store, "mnist", _records(3, 50.0, "s3"), seq=7)
    back = read_operational(store, "mnist", since=50.0)
    assert list(back.ids) == ["s3:0", "s3:1", "s3:2"]
    assert back.inputs.shape == (3, 28, 28) and back.embeddings.shape == (3, 16)


def test_segments_and_checkpoint_are_private_to_the_sidecar(tmp_path):
    """The WAL and its checkpoint hold the deployment's inputs and state: 0600, whatever the umask."""
    old = os.umask(0o022)
    try:
        wal = WriteAheadLog(tmp_path)
        wal.recover()
        wal.append({"x": 1})
        first = wal.rotate()
        wal.commit(first, {"k": 1})
    finally:
        os.umask(old)
    files = [p for p in tmp_path.iterdir() if p.is_file()]
    assert any(p.name == "checkpoint.json" for p in files)
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in files} == {p.name: "0o600" for p in files}
