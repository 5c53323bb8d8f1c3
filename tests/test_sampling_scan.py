"""Reading a window's pool by column: the Parquet records, the old .npz batches, the compact pool,
the drawn inputs fetched back, and the same pool (so the same sample) on Ray Data as locally.

Real pyarrow, pandas and Ray (a local Ray with 2 CPUs) on a file store; the S3 case runs against
a real SeaweedFS (the ``s3_env`` fixture)."""
from __future__ import annotations

import zlib

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from daic.components.sample_operational.logic import draw, SampleConfig
from daic.sampling.fetch import fetch_rows
from daic.sampling.scan import id_keys, merge_blocks, scan_pool
from daic.sidecar import records as rec
from daic.sidecar.records import OperationalRecords, read_operational, write_batch
from daic.storage import open_store

T0 = 1_764_000_000.0  # 2025-11-24T16:00:00Z, on an hour boundary


def _records(n, t0, rid, step=1.0, dim=8):
    rng = np.random.default_rng(zlib.crc32(rid.encode()))
    probs = rng.dirichlet(np.ones(10), size=n)
    return OperationalRecords(
        ids=[f"{rid}:{i}" for i in range(n)], request_ids=[rid] * n, times=t0 + np.arange(n) * step,
        inputs=rng.random((n, 28, 28)), predictions=probs.argmax(1), probs=probs, embeddings=rng.random((n, dim)),
        shadow_probs=probs, p_correct=rng.random(n), drift=rng.random(n), model_version=["v1"] * n)


@pytest.fixture
def store(tmp_path):
    """Two hours of parts, one replayed batch (at-least-once), and one old .npz batch."""
    store = open_store(f"file://{tmp_path / 'store'}")
    for k in range(6):
        write_batch(store, "mnist", _records(300, T0 + k * 1200, f"r{k}", step=2.0), seq=k)
    write_batch(store, "mnist", _records(300, T0 + 2 * 1200, "r2", step=2.0), seq=9)  # the replay
    old = _records(50, T0 - 600, "old")
    store.put_arrays(rec.batch_key("mnist", T0 - 600, 99), **old.to_arrays())
    return store


def test_parts_are_hourly_hive_partitions_and_a_batch_across_an_hour_is_split(tmp_path):
    store = open_store(f"file://{tmp_path}")
    key = write_batch(store, "m", _records(100, T0 - 50, "x"), seq=3)
    assert key == "operational/m/date=2025-11-24/hour=15/part-20251124T155910000000Z-00000003.parquet"
    keys = rec.list_parts(store, "m")
    assert keys == [key, "operational/m/date=2025-11-24/hour=16/part-20251124T160000000000Z-00000003.parquet"]
    hours = [pq.read_table(tmp_path / k).column("times").to_numpy() // 3600 for k in keys]
    assert [len(h) for h in hours] == [50, 50] and all(np.unique(h).size == 1 for h in hours)


def test_standard_tools_open_the_records_unchanged(store, tmp_path):
    """pandas and pyarrow read the partitioned directory with partition columns and column
    projection; the images are a column of their own."""
    root = tmp_path / "store" / "operational" / "mnist"
    frame = pd.read_parquet(root, columns=["ids", "p_correct", "hour"], ignore_prefixes=["batch-", "."])
    assert len(frame) == 6 * 300 + 300 and set(frame["hour"].astype(str)) == {"16", "17"}
    table = pq.read_table(root, columns=["inputs"], ignore_prefixes=["batch-", "."],
                          filters=[("hour", "=", 17)])
    assert table.num_rows == 3 * 300 and table.column("inputs").type.list_size == 784


def test_old_npz_batches_are_read_and_converted_once(store):
    everything = read_operational(store, "mnist")
    assert len(everything) == 6 * 300 + 50  # the replayed rows once, the old batch included
    assert np.all(np.diff(everything.times) >= 0)
    converted = rec.convert_npz_batches(store, "mnist")
    assert [k for k, _ in converted] == [rec.batch_key("mnist", T0 - 600, 99)]
    assert not store.list("operational/mnist/batch-")
    after = read_operational(store, "mnist")
    assert list(after.ids) == list(everything.ids)
    np.testing.assert_array_equal(after.inputs, everything.inputs)
    assert rec.convert_npz_batches(store, "mnist") == []


def test_scan_gives_a_compact_deduplicated_pool_and_fetches_drawn_rows(store):
    full = read_operational(store, "mnist")
    scan = scan_pool(store, "mnist")
    assert scan.pool.size == len(full) and scan.stats.duplicates_dropped == 300
    assert scan.pool.ids.dtype == np.uint64 and np.all(np.diff(scan.pool.ids.astype(np.float64)) >= 0)
    position = {k: i for i, k in enumerate(id_keys(full.ids))}
    rows = np.array([position[k] for k in scan.pool.ids])
    np.testing.assert_allclose(scan.pool.p_correct, full.p_correct[rows], rtol=1e-6)
    np.testing.assert_array_equal(scan.pool.predictions, full.predictions[rows])
    picks = np.array([0, 17, scan.pool.size - 1, 900])
    ids, images = fetch_rows(store, scan, picks)
    np.testing.assert_array_equal(ids, full.ids[rows[picks]])
    np.testing.assert_array_equal(images, full.inputs[rows[picks]])
    # the Parquet parts gave about 30 B a row (the four columns), not the ~3 KB images; the old
    # .npz batch is read whole
    old = len(store.get_bytes(rec.batch_key("mnist", T0 - 600, 99)))
    assert scan.stats.bytes_read - old < 100 * (scan.stats.rows_read - 50)


def test_scan_reads_only_the_window(store):
    since, until = T0 + 3600 + 600, T0 + 3600 + 1500
    scan = scan_pool(store, "mnist", since, until)
    full = read_operational(store, "mnist", since, until)
    assert scan.pool.size == len(full) == 150  # part 4's rows 4800..5098 s after T0
    # hour 17's parts 3 and 4 (hour 16 is not listed; part 5 starts after the window, by its
    # name) and the old batch; part 3 is opened but its row group is skipped by its statistics
    assert scan.stats.parts_listed == 3 and scan.stats.row_groups_skipped >= 1
    with pytest.raises(ValueError, match="no operational inputs under .*operational/mnist/ in the window"):
        scan_pool(store, "mnist", T0 + 10 * 3600, T0 + 11 * 3600)
    with pytest.raises(ValueError, match="until .* must be after since"):
        scan_pool(store, "mnist", 5.0, 1.0)


def test_merge_is_independent_of_the_order_blocks_arrive_in():
    rng = np.random.default_rng(0)
    keys = rng.integers(0, 2**63, 1000, dtype=np.uint64)
    blocks = [{"key": keys[i:i + 250], "p_correct": rng.random(250).astype(np.float32),
               "prediction": rng.integers(0, 10, 250).astype(np.int32)} for i in range(0, 1000, 250)]
    blocks.append({**blocks[1]})  # a replayed part
    numbers = [np.full(250, n, np.int32) for n in range(5)]
    a = merge_blocks(blocks, numbers)
    order = [4, 2, 0, 3, 1]
    b = merge_blocks([blocks[i] for i in order], [numbers[i] for i in order])
    assert a[2] == b[2] == 250
    np.testing.assert_array_equal(a[0].ids, b[0].ids)
    np.testing.assert_array_equal(a[1], b[1])
    assert 4 not in set(a[1].tolist())  # the earliest part's copy is kept


def test_ray_data_gives_the_same_pool_and_sample_as_the_local_read(store):
    """With a Ray address the projection and window filter run on Ray Data (2 local CPUs) and
    only compact blocks come back; the pool, and so a seed's sample, are the local read's."""
    ray = pytest.importorskip("ray")
    from daic.training.ray_runtime import shutdown_local

    shutdown_local()  # a Ray kept by an earlier training test in this process
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        since, until = T0 - 900, T0 + 2 * 3600
        local = scan_pool(store, "mnist", since, until)
        on_ray = scan_pool(store, "mnist", since, until, ray_address="auto")
    finally:
        ray.shutdown()
    assert on_ray.stats.engine == "ray" and local.stats.engine == "local"
    np.testing.assert_array_equal(on_ray.pool.ids, local.pool.ids)
    np.testing.assert_array_equal(on_ray.pool.p_correct, local.pool.p_correct)
    np.testing.assert_array_equal(on_ray.part_of, local.part_of)
    for sampler in ("stratified", "failure-seeking"):
        config = SampleConfig(sampler=sampler, budget=40, seed=3)
        a, b = draw(local.pool, config)[0], draw(on_ray.pool, config)[0]
        np.testing.assert_array_equal(a.indices, b.indices)


def test_scan_and_fetch_on_s3(s3_env):
    """The cluster's store: ranged reads through Arrow's S3 filesystem against SeaweedFS."""
    store = open_store("s3://daic-scan-test/records", create_bucket=True)
    write_batch(store, "mnist", _records(400, T0, "s3"), seq=1)
    write_batch(store, "mnist", _records(400, T0, "s3"), seq=2)  # replayed
    scan = scan_pool(store, "mnist", T0, T0 + 3600)
    assert scan.pool.size == 400 and scan.stats.duplicates_dropped == 400
    full = read_operational(store, "mnist")
    ids, images = fetch_rows(store, scan, np.array([5, 200]))
    pos = {i: k for k, i in enumerate(full.ids)}
    np.testing.assert_array_equal(images, full.inputs[[pos[i] for i in ids]])


def test_convert_records_command(store, tmp_path):
    from click.testing import CliRunner

    from daic.cli import main

    url = f"file://{tmp_path / 'store'}"
    out = CliRunner().invoke(main, ["oracle", "convert-records", "--store", url, "--deployment", "mnist"])
    assert out.exit_code == 0, out.output
    assert "1 batch(es) converted" in out.output and not store.list("operational/mnist/batch-")
    bad = CliRunner().invoke(main, ["oracle", "convert-records", "--store", url, "--deployment", "a/b"])
    assert bad.exit_code != 0 and "deployment must be a non-empty name" in bad.output
