"""The sampling scan (daic.sampling.scan) over operational parts whose *contents* are wrong.

The scan reads four columns of each part itself (ranged Parquet reads, not the records' whole-part
reader), so it meets a corrupt part on its own path. A part written by the sidecar's own writer
(``write_batch``), and an old ``.npz`` batch, are replaced by the seeded variants of
tests/test_corrupt_objects_records.py (truncated, not Parquet/npz, a column dropped or retyped, a
NaN time, a prediction outside the classes) and by a P(correct) outside [0, 1]. ``scan_pool``
(the local engine, which sample-operational, fit-filter and train's unlabelled pool use) must give
a pool or raise one CorruptObject naming the part's key (a StorageError naming it where the store
refuses the bytes first), never a ValueError/IndexError/KeyError without the key; and a NaN
P(correct), an input recorded unscored, is not a corruption. A null or empty id, which the writer
never writes, is refused by both engines, local and Ray (the Ray engine's other faults are in
tests/test_corrupt_objects_fetch.py, whose private local Ray these tests borrow).
"""
from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from corrupt_variants import npz_bytes, npz_variants
from daic.sampling.scan import scan_pool
from daic.sidecar.records import batch_key, list_parts, write_batch
from daic.storage import StorageError, open_store
from daic.storage.parsed import CorruptObject
from test_corrupt_objects_fetch import local_ray  # noqa: F401 -- a fixture, asked for by the Ray tests
from test_corrupt_objects_records import T0, _records, _table_bytes, parquet_variants

SEEDS = (0, 1, 2)


def _scan(store, since=T0 - 10, **engine):
    return scan_pool(store, "mnist", since, T0 + 3600, max_parallel=2, **engine)


def _check(store, key, variants):
    original = store.get_bytes(key)
    failures = []
    for what, data in variants:
        store.put_bytes(key, data)
        try:
            scan = _scan(store)
        except CorruptObject as exc:
            if key not in str(exc):
                failures.append(f"{what}: CorruptObject without the key: {exc}")
            continue
        except StorageError as exc:
            if key not in str(exc):
                failures.append(f"{what}: StorageError without the key: {exc}")
            continue
        except ValueError as exc:
            # valid rows, all outside the window (times 0..11 "as integers"): the scan's own answer
            if "no operational inputs under" not in str(exc):
                failures.append(f"{what}: ValueError: {str(exc)[:200]}")
            continue
        except Exception as exc:  # noqa: BLE001 -- the failure being looked for
            failures.append(f"{what}: {type(exc).__name__}: {str(exc)[:200]}")
            continue
        p = scan.pool.p_correct
        if not (np.isfinite(p).all() and ((p >= 0) & (p <= 1)).all() and (scan.pool.predictions >= 0).all()):
            failures.append(f"{what}: a pool holding values no pool holds")
    store.put_bytes(key, original)
    assert _scan(store).pool.size == 12
    assert not failures, f"{key}:\n" + "\n".join(failures)


def _p_correct_out_of_range(raw: bytes):
    table = pq.read_table(io.BytesIO(raw))
    p = table.column("p_correct").to_numpy().copy()
    p[3] = 1.5
    yield "p_correct 1.5", _table_bytes(table.set_column(table.schema.get_field_index("p_correct"), "p_correct",
                                                         pa.array(p)))


@pytest.mark.parametrize("seed", SEEDS)
def test_parquet_part_variants(tmp_path, seed):
    store = open_store(f"file://{tmp_path / 'store'}")
    write_batch(store, "mnist", _records(), seq=1)
    [key] = list_parts(store, "mnist")
    raw = store.get_bytes(key)
    _check(store, key, [*parquet_variants(raw, seed), *_p_correct_out_of_range(raw)])


@pytest.mark.parametrize("seed", SEEDS)
def test_old_npz_batch_variants(tmp_path, seed):
    store = open_store(f"file://{tmp_path / 'npz'}")
    key = batch_key("mnist", T0, 3)
    store.put_bytes(key, npz_bytes(**_records(seed=seed).to_arrays()))
    _check(store, key, npz_variants(store.get_bytes(key), seed))


def test_a_part_without_predictions_is_one_error_naming_it(tmp_path):
    store = open_store(f"file://{tmp_path / 'store'}")
    write_batch(store, "mnist", _records(), seq=1)
    [key] = list_parts(store, "mnist")
    table = pq.read_table(io.BytesIO(store.get_bytes(key)))
    store.put_bytes(key, _table_bytes(table.drop_columns(["predictions"])))
    with pytest.raises(CorruptObject, match=rf"{key}.*predictions"):
        _scan(store)


def test_unscored_inputs_are_not_a_corruption(tmp_path):
    store = open_store(f"file://{tmp_path / 'store'}")
    write_batch(store, "mnist", _records(), seq=1)
    scan = _scan(store)
    assert scan.pool.size == 12 and scan.stats.unscored == 1


def _id_at(table: pa.Table, row: int, value) -> bytes:
    ids = table.column("ids").to_pylist()
    ids[row] = value
    return _table_bytes(table.set_column(table.schema.get_field_index("ids"), "ids", pa.array(ids, pa.string())))


@pytest.mark.parametrize("engine", ["local", "ray"])
@pytest.mark.parametrize("since", [T0 - 10, T0 + 6], ids=["row in the window", "row before the window"])
@pytest.mark.parametrize("value", [None, ""], ids=["null id", "empty id"])
def test_both_engines_refuse_a_part_with_a_null_or_empty_id(request, tmp_path, value, since, engine):
    """Two parts, one holding a null (or empty) id at T0+3: both engines hashed it into the pool like
    any id (fetch_rows refused a null one only if it was drawn; an empty one never). Both refuse the
    part now, naming it, also when that row lies before the window in a part read whole
    (scan._window_groups): Ray's workers keep the row for the driver to refuse, as a NaN time."""
    ray = {"ray_address": "auto"} if engine == "ray" else {}
    if ray:
        request.getfixturevalue("local_ray")
    store = open_store(f"file://{tmp_path / 'ids'}")
    write_batch(store, "mnist", _records(), seq=1)
    write_batch(store, "mnist", _records(seed=1), seq=2)
    key = list_parts(store, "mnist")[1]
    original = store.get_bytes(key)
    store.put_bytes(key, _id_at(pq.read_table(io.BytesIO(original)), 3, value))
    refused = rf"{store.url}: operational part '{key}': column 'ids' holds a null or empty id"
    with pytest.raises(CorruptObject, match=refused):
        _scan(store, since, **ray)
    store.put_bytes(key, original)
    assert _scan(store, since, **ray).pool.size == (24 if since < T0 else 12)
