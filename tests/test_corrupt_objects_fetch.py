"""The drawn inputs read back (``fetch_rows``) and the Ray scan, over operational parts whose
*contents* are wrong, or that are gone.

``fetch_rows`` reads the parts the scan read, again and later (after the draw; in collect-labels'
rounds, hours later) and by other columns (``ids`` and ``inputs``, which the scan never reads), so
it meets a part the scan found whole but that was tampered with, damaged or deleted since, and a
part whose images alone are wrong. The Ray engine reads the four scan columns with Ray Data's own
Parquet reader rather than ``_scan_part``. Each must give what was logged (the inputs, the pool) or raise
one StorageError naming the part -- a CorruptObject (KeyNotFound when it is gone) -- never an Arrow,
numpy or Ray error without it, and never images the records cannot hold (NaN, outside [0, 1]).

Every fault here is planted in a part written by the sidecar's own writer (or an old ``.npz`` batch
in the layout earlier releases wrote) after the scan that read it whole: the wrong shape or dtype,
NaN/inf and out-of-range pixels, null values, a truncated object, garbage bytes (the whole object,
or one column's pages behind an intact footer), another part's rows, no rows, the object deleted,
an npz lacking an array; then the seeded variants of tests/test_corrupt_objects_records.py. The
steps that fetch (sample-operational, collect-labels' rounds, train's unlabelled pool, fit-filter's
pool) are checked to fail with that same error. On Ray, the scan's own faults, and a NaN, infinite
or null time, which both engines must refuse alike (Ray's pushed-down window filter dropped its row
unseen). A file store throughout, as the scan tests; the S3 case runs against a real SeaweedFS (the
``s3_env`` fixture).
"""
from __future__ import annotations

import dataclasses
import io
import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from corrupt_variants import DAMAGED_OBJECT, check_planted, npz_bytes, npz_variants
from daic.components import cycle_store
from daic.sampling.fetch import fetch_rows
from daic.sampling.scan import scan_pool
from daic.sidecar import records as rec
from daic.sidecar.records import batch_key, list_parts, write_batch
from daic.storage import KeyNotFound, StorageError, open_store
from daic.storage.parsed import CorruptObject
from test_corrupt_objects_records import T0, _records, _table_bytes, parquet_variants

SEEDS = (0, 1, 2)
WIDTH = rec.IMAGE_SHAPE[0] * rec.IMAGE_SHAPE[1]


def _scan(store, **kw):
    return scan_pool(store, "mnist", T0 - 10, T0 + 3600, max_parallel=2, **kw)


def _fetch_all(store, scan):
    """Every input of the pool, so a fault in any row is met."""
    return fetch_rows(store, scan, np.arange(scan.pool.size), max_parallel=2)


@pytest.fixture
def parquet_part(tmp_path):
    """(store, key, scan, (ids, images) fetched) of one whole Parquet part."""
    store = open_store(f"file://{tmp_path / 'store'}")
    write_batch(store, "mnist", _records(), seq=1)
    [key] = list_parts(store, "mnist")
    scan = _scan(store)
    return store, key, scan, _fetch_all(store, scan)


@pytest.fixture
def npz_part(tmp_path):
    """The same for an old ``.npz`` batch."""
    store = open_store(f"file://{tmp_path / 'npz'}")
    key = batch_key("mnist", T0, 3)
    store.put_bytes(key, npz_bytes(**_records().to_arrays()))
    scan = _scan(store)
    return store, key, scan, _fetch_all(store, scan)


# -- planted faults: each must be refused, naming the part ------------------------------------

def _at(table: pa.Table, name: str, column) -> pa.Table:
    return table.set_column(table.schema.get_field_index(name), name, column)


def _images(images: np.ndarray, value_type=pa.float32()) -> pa.Array:
    flat = images.reshape(len(images), -1)
    return pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1), value_type), flat.shape[1])


def _one_pixel(table: pa.Table, value: float) -> bytes:
    images = rec.column_as_numpy(table, "inputs").copy()
    images[5, 3, 4] = value
    return _table_bytes(_at(table, "inputs", _images(images)))


def _garbage_over(raw: bytes, column: str) -> bytes:
    """``raw`` with every page of ``column`` (its first row group) overwritten, the footer intact:
    the footer and schema read as before, only reading the column fails."""
    meta = pq.read_metadata(io.BytesIO(raw))
    group = meta.row_group(0)
    chunk = next(group.column(i) for i in range(group.num_columns)
                 if group.column(i).path_in_schema.split(".")[0] == column)
    start = chunk.dictionary_page_offset or chunk.data_page_offset
    data = bytearray(raw)
    data[start:start + chunk.total_compressed_size] = bytes([0xAB]) * chunk.total_compressed_size
    return bytes(data)


PARQUET_FAULTS = {
    # the wrong shape
    "inputs 10 wide": lambda t, raw: _table_bytes(_at(t, "inputs", _images(np.zeros((t.num_rows, 10))))),
    "inputs 28 x 27": lambda t, raw: _table_bytes(_at(t, "inputs", _images(np.zeros((t.num_rows, 28 * 27))))),
    "inputs of variable length": lambda t, raw: _table_bytes(_at(t, "inputs", pa.array(
        [[0.5] * (WIDTH - i % 2) for i in range(t.num_rows)], pa.list_(pa.float32())))),
    # the wrong dtype
    "inputs as strings": lambda t, raw: _table_bytes(_at(t, "inputs", pa.array(["x"] * t.num_rows))),
    "inputs as integers": lambda t, raw: _table_bytes(_at(t, "inputs", _images(np.ones((t.num_rows, WIDTH), np.int32),
                                                                                pa.int32()))),
    "ids as integers": lambda t, raw: _table_bytes(_at(t, "ids", pa.array(range(t.num_rows), pa.int64()))),
    "inputs dropped": lambda t, raw: _table_bytes(t.drop_columns(["inputs"])),
    "ids dropped": lambda t, raw: _table_bytes(t.drop_columns(["ids"])),
    # values no image holds
    "a NaN pixel": lambda t, raw: _one_pixel(t, np.nan),
    "an infinite pixel": lambda t, raw: _one_pixel(t, np.inf),
    "a pixel of 1.5": lambda t, raw: _one_pixel(t, 1.5),
    "a pixel of -0.25": lambda t, raw: _one_pixel(t, -0.25),
    "a null image": lambda t, raw: _table_bytes(_at(t, "inputs", pa.FixedSizeListArray.from_arrays(
        pa.array(rec.column_as_numpy(t, "inputs").reshape(-1)), WIDTH,
        mask=pa.array(np.arange(t.num_rows) == 4)))),
    "a null id": lambda t, raw: _table_bytes(_at(t, "ids", pa.array([None, *t.column("ids").to_pylist()[1:]],
                                                                     pa.string()))),
    # a damaged object
    **DAMAGED_OBJECT,
    "garbage over the inputs pages": lambda t, raw: _garbage_over(raw, "inputs"),
    "garbage over the ids pages": lambda t, raw: _garbage_over(raw, "ids"),
    # another object under the key
    "another part's rows": lambda t, raw: rec.encode_part(_records(seed=7)),
    "no rows": lambda t, raw: _table_bytes(t.slice(0, 0)),
}


@pytest.mark.parametrize("fault", sorted(PARQUET_FAULTS))
def test_a_faulty_parquet_part_is_one_error_naming_it(parquet_part, fault):
    store, key, scan, _ = parquet_part
    raw = store.get_bytes(key)
    store.put_bytes(key, PARQUET_FAULTS[fault](pq.read_table(io.BytesIO(raw)), raw))
    with pytest.raises(CorruptObject, match=rf"{store.url}: operational part '{key}'"):
        _fetch_all(store, scan)


def _npz(**changes):
    def make(arrays):
        out = {**arrays, **changes}
        return npz_bytes(**{k: v(arrays) if callable(v) else v for k, v in out.items() if v is not None})
    return make


def _npz_pixel(value):
    def set_pixel(arrays):
        images = arrays["inputs"].copy()
        images[5, 3, 4] = value
        return images
    return _npz(inputs=set_pixel)


NPZ_FAULTS = {
    "inputs dropped": _npz(inputs=None),
    "ids dropped": _npz(ids=None),
    "inputs flattened to (N, 784)": _npz(inputs=lambda a: a["inputs"].reshape(len(a["inputs"]), -1)),
    "inputs 28 x 27": _npz(inputs=lambda a: a["inputs"][:, :, :27]),
    "inputs as strings": _npz(inputs=lambda a: np.full(a["inputs"].shape, "x")),
    "inputs as integers": _npz(inputs=lambda a: np.ones(a["inputs"].shape, np.int64)),
    "ids one short": _npz(ids=lambda a: a["ids"][:-1]),
    "a NaN pixel": _npz_pixel(np.nan),
    "an infinite pixel": _npz_pixel(-np.inf),
    "a pixel of 1.5": _npz_pixel(1.5),
    "a pixel of -0.25": _npz_pixel(-0.25),
    "another batch's rows": lambda arrays: npz_bytes(**_records(seed=7).to_arrays()),
    "empty": lambda arrays: b"",
    "random bytes": lambda arrays: random.Random(7).randbytes(4096),
    "json instead": lambda arrays: b'{"not": "an npz"}',
}


@pytest.mark.parametrize("fault", sorted(NPZ_FAULTS))
def test_a_faulty_npz_batch_is_one_error_naming_it(npz_part, fault):
    store, key, scan, _ = npz_part
    store.put_bytes(key, NPZ_FAULTS[fault](store.get_arrays(key)))
    with pytest.raises(CorruptObject, match=rf"{store.url}: operational part '{key}'"):
        _fetch_all(store, scan)


def test_a_truncated_npz_batch_is_one_error_naming_it(npz_part):
    store, key, scan, _ = npz_part
    store.put_bytes(key, store.get_bytes(key)[:-100])
    with pytest.raises(CorruptObject, match=rf"'{key}': not a numpy .npz archive"):
        _fetch_all(store, scan)


@pytest.mark.parametrize("kind", ["parquet_part", "npz_part"])
def test_a_part_deleted_since_the_scan_is_key_not_found_naming_it(kind, request):
    store, key, scan, _ = request.getfixturevalue(kind)
    store.delete(key)
    with pytest.raises(KeyNotFound, match=rf"no object '{key}'"):
        _fetch_all(store, scan)


# -- seeded variants: read as logged, or refused naming the part -------------------------------

def _same_as(expected):
    def check(got):
        ids, images = got
        if not (np.array_equal(ids, expected[0]) and np.array_equal(images, expected[1])):
            return "other inputs than those logged"
        return None
    return check


@pytest.mark.parametrize("seed", SEEDS)
def test_parquet_part_variants(parquet_part, seed):
    """A variant that leaves ``ids`` and ``inputs`` whole (a NaN time) reads as logged."""
    store, key, scan, expected = parquet_part
    check_planted(store, key, parquet_variants(store.get_bytes(key), seed), lambda: _fetch_all(store, scan),
                  _same_as(expected))


@pytest.mark.parametrize("seed", SEEDS)
def test_npz_batch_variants(npz_part, seed):
    store, key, scan, expected = npz_part
    check_planted(store, key, npz_variants(store.get_bytes(key), seed), lambda: _fetch_all(store, scan),
                  _same_as(expected))


def test_fetch_on_s3(s3_env):
    """Arrow's S3 filesystem against SeaweedFS: a deleted part and a NaN pixel are named too."""
    store = open_store("s3://daic-fetch-faults/records", create_bucket=True)
    write_batch(store, "mnist", _records(), seq=1)
    [key] = list_parts(store, "mnist")
    scan = _scan(store)
    raw = store.get_bytes(key)
    store.put_bytes(key, _one_pixel(pq.read_table(io.BytesIO(raw)), np.nan))
    with pytest.raises(CorruptObject, match=rf"'{key}': column 'inputs' holds a NaN"):
        _fetch_all(store, scan)
    store.delete(key)
    with pytest.raises(KeyNotFound, match=rf"no object '{key}'"):
        _fetch_all(store, scan)


# -- the steps that fetch fail with that error --------------------------------------------------

@pytest.fixture
def drawn(tmp_path):
    """(store, key) of one part of 60 inputs, a cycle "c1" drawn from it in rounds (pool kept)."""
    from daic.components.sample_operational.logic import SampleConfig, run

    store = open_store(f"file://{tmp_path / 'steps'}")
    write_batch(store, "mnist", _records(n=60), seq=1)
    [key] = list_parts(store, "mnist")
    run(store, SampleConfig(budget=20, round_size=4, cycle="c1", since=str(int(T0) - 10), until=str(int(T0) + 3600)))
    return store, key


def _nan_images(store, key):
    table = pq.read_table(io.BytesIO(store.get_bytes(key)))
    store.put_bytes(key, _table_bytes(_at(table, "inputs", _images(np.full((table.num_rows, WIDTH), np.nan)))))


def _train_pool(store):
    from daic.components.train.unlabeled import write_unlabeled_pool

    return write_unlabeled_pool(store, "c1", limit=10)


def _filter_pool(store):
    from daic.components.fit_filter.logic import write_pool

    return write_pool(store, "c1", limit=10)


def _next_round(store):
    from daic.components.collect_labels.rounds import RoundsPlan, draw_round
    from daic.components.sample_operational.logic import read_pool

    record = cycle_store.read_sample(store, "c1")
    _, inputs = cycle_store.read_sample_inputs(store, "c1")
    plan = RoundsPlan.from_meta(store, "c1", record.meta["rounds"])
    return draw_round(store, "c1", record, inputs, {}, read_pool(store, "c1"), plan, round_no=1)


def _new_sample(store):
    from daic.components.sample_operational.logic import SampleConfig, run

    return run(store, SampleConfig(budget=10, cycle="c2", since=str(int(T0) - 10), until=str(int(T0) + 3600)))


STEPS = {"sample-operational": _new_sample, "collect-labels round": _next_round,
         "train unlabelled pool": _train_pool, "fit-filter pool": _filter_pool}


@pytest.mark.parametrize("step, fault", [*((step, "NaN images") for step in sorted(STEPS)),
                                         ("collect-labels round", "deleted")])
def test_the_steps_that_fetch_fail_naming_the_part(drawn, step, fault):
    """The steps let the scan's errors through to their caller (the KFP step fails with the message,
    the CLI prints it as one line; fit-filter records it as the reason for no filter): a fetch's
    is the same StorageError, and nothing is written from a half-read window. (Only the rounds
    fetch from a pool read earlier, so only they can meet a part deleted since: the other steps
    scan again, and a window without parts is the scan's "no operational inputs".)"""
    store, key = drawn
    before = set(store.list("cycles/"))
    if fault == "deleted":
        store.delete(key)
    else:
        _nan_images(store, key)
    with pytest.raises(StorageError, match=rf"'{key}'"):
        STEPS[step](store)
    assert set(store.list("cycles/")) == before


# -- the Ray engine ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def local_ray():
    """A private local Ray (2 CPUs) for this module's Ray scans."""
    ray = pytest.importorskip("ray")
    from daic.training.ray_runtime import shutdown_local

    shutdown_local()  # a Ray kept by an earlier training test in this process
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _column(t: pa.Table, name: str, change) -> bytes:
    values = t.column(name).to_numpy().copy()
    change(values)
    return _table_bytes(_at(t, name, pa.array(values)))


RAY_FAULTS = {
    **DAMAGED_OBJECT,
    "predictions dropped": lambda t, raw: _table_bytes(t.drop_columns(["predictions"])),
    "ids as integers": PARQUET_FAULTS["ids as integers"],
    "p_correct as strings": lambda t, raw: _table_bytes(_at(t, "p_correct", pa.array(["x"] * t.num_rows))),
    "garbage over the times pages": lambda t, raw: _garbage_over(raw, "times"),
    "garbage over the p_correct pages": lambda t, raw: _garbage_over(raw, "p_correct"),
    "a P(correct) of 1.5": lambda t, raw: _column(t, "p_correct", lambda v: v.__setitem__(3, 1.5)),
    "a negative prediction": lambda t, raw: _column(t, "predictions", lambda v: v.__setitem__(3, -7)),
}


@pytest.mark.parametrize("fault", sorted(RAY_FAULTS))
def test_the_ray_scan_names_a_faulty_part(local_ray, tmp_path, fault):
    """Two parts, one faulty: Ray Data's own errors named no part ("Unable to merge", "Parquet magic
    bytes not found", a worker's traceback), and a part lacking ``predictions`` became a pool."""
    store = open_store(f"file://{tmp_path / 'ray'}")
    write_batch(store, "mnist", _records(), seq=1)
    write_batch(store, "mnist", _records(seed=1), seq=2)
    key = list_parts(store, "mnist")[1]
    raw = store.get_bytes(key)
    store.put_bytes(key, RAY_FAULTS[fault](pq.read_table(io.BytesIO(raw)), raw))
    with pytest.raises(CorruptObject, match=rf"{store.url}: operational part '{key}'"):
        _scan(store, ray_address="auto")


def _time_at(t: pa.Table, row: int, value) -> bytes:
    times = t.column("times").to_pylist()
    times[row] = value
    return _table_bytes(_at(t, "times", pa.array(times, pa.float64())))


TIME_FAULTS = {
    "a NaN time": lambda t: _time_at(t, 3, float("nan")),
    "an infinite time": lambda t: _time_at(t, 3, float("inf")),
    "a null time": lambda t: _time_at(t, 3, None),
    "every time NaN": lambda t: _table_bytes(_at(t, "times", pa.array(np.full(t.num_rows, np.nan)))),
}


def _on(engine: str) -> dict:
    return {"ray_address": "auto"} if engine == "ray" else {}


@pytest.mark.parametrize("engine", ["local", "ray"])
@pytest.mark.parametrize("fault", sorted(TIME_FAULTS))
def test_both_engines_refuse_a_part_with_a_bad_time(local_ray, tmp_path, fault, engine):
    """A NaN (or infinite, or null) time is in no window: a window filter drops its row, and its
    input, unseen. The local engine refused the part; Ray's pushed-down filter dropped the row
    before any code saw it, and the scan went on with the input missing. Both refuse it now."""
    store = open_store(f"file://{tmp_path / 'times'}")
    write_batch(store, "mnist", _records(), seq=1)
    write_batch(store, "mnist", _records(seed=1), seq=2)
    key = list_parts(store, "mnist")[1]
    store.put_bytes(key, TIME_FAULTS[fault](pq.read_table(io.BytesIO(store.get_bytes(key)))))
    with pytest.raises(CorruptObject, match=rf"{store.url}: operational part '{key}': column 'times' holds a NaN"):
        _scan(store, **_on(engine))


def _in_groups_of_4(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=4, write_statistics=["times"])
    return buf.getvalue()


@pytest.fixture
def straddling(tmp_path):
    """(store, since, until, straddling key, outside key): a part of three row groups (times T0+0..3,
    4..7, 8..11) whose first lies before the window, and a part wholly before it, in its hour."""
    store = open_store(f"file://{tmp_path / 'straddle'}")
    write_batch(store, "mnist", _records(), seq=1)
    write_batch(store, "mnist", dataclasses.replace(_records(seed=1), times=T0 - 700 + np.arange(12.0)), seq=2)
    outside, straddle = list_parts(store, "mnist")
    store.put_bytes(straddle, _in_groups_of_4(pq.read_table(io.BytesIO(store.get_bytes(straddle)))))
    return store, T0 + 6, T0 + 3600, straddle, outside


def test_both_engines_read_the_same_rows_of_a_part_straddling_the_window(local_ray, straddling):
    """Which rows are checked is decided per part, on its footer, by one function for both engines
    (scan._window_groups): a part with any row group in the window is read whole -- a NaN time in
    its row group before the window is refused by both (the local engine skipped that row group,
    Ray's filter that row) -- and a part wholly outside is read by neither, its NaN time unseen by
    both; the pools are the same."""
    store, since, until, straddle, outside = straddling
    table = pq.read_table(io.BytesIO(store.get_bytes(outside)))
    store.put_bytes(outside, _time_at(table, 3, float("nan")))  # statistics: T0-700 .. T0-689
    local = scan_pool(store, "mnist", since, until, max_parallel=2)
    on_ray = scan_pool(store, "mnist", since, until, ray_address="auto")
    assert local.pool.size == 6 and local.stats.row_groups_skipped == on_ray.stats.row_groups_skipped == 1
    np.testing.assert_array_equal(on_ray.pool.ids, local.pool.ids)
    np.testing.assert_array_equal(on_ray.part_of, local.part_of)
    table = pq.read_table(io.BytesIO(store.get_bytes(straddle)))
    times = table.column("times").to_numpy().copy()
    times[1] = np.nan
    store.put_bytes(straddle, _in_groups_of_4(_at(table, "times", pa.array(times))))
    assert pq.read_metadata(io.BytesIO(store.get_bytes(straddle))).row_group(0).column(1).statistics.max < since
    for engine in ("local", "ray"):
        with pytest.raises(CorruptObject, match=rf"'{straddle}': column 'times' holds a NaN"):
            scan_pool(store, "mnist", since, until, max_parallel=2, **_on(engine))
