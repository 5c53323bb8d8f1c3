"""The sidecar's operational records (daic.sidecar.records) whose *contents* are wrong.

A Parquet part is written by the sidecar's own writer (``write_batch``), an old ``.npz`` batch in
the layout earlier releases wrote; each is replaced by seeded corrupted variants (truncated, not
Parquet/npz, a column dropped, of another type or width, a NaN time, a prediction outside the
classes). Every reader of whole parts (``read_part``, ``read_operational``, ``daic oracle
records``, ``daic oracle convert-records``) must return valid records or raise one CorruptObject
naming the key (a StorageError: the CLI prints one line, exit 1), never a ValueError/TypeError/
IndexError from inside; put back whole, the part reads again.

The policy is *one clear error*, never skip-and-count: a reader that skipped a corrupt part would
assess or sample a window with a hole in it and say nothing; and the sidecar itself never reads a
part (it only writes them), so its loops cannot meet one.
"""
from __future__ import annotations

import io
import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from corrupt_variants import npz_bytes, npz_variants
from daic.cli import main
from daic.sidecar.records import (COLUMNS, OperationalRecords, batch_key, list_parts, read_operational, read_part,
                                  to_table, write_batch)
from daic.storage import StorageError, open_store
from daic.storage.parsed import CorruptObject

SEEDS = (0, 1, 2)
T0 = 1_700_000_000.0


def _records(n=12, seed=0):
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(10), n).astype(np.float32)
    ids = np.array([f"r{seed}-{i}:0" for i in range(n)])
    return OperationalRecords(ids=ids, request_ids=ids, times=T0 + np.arange(n), inputs=rng.random((n, 28, 28)),
                              predictions=probs.argmax(1), probs=probs, embeddings=rng.random((n, 16)),
                              shadow_probs=probs, p_correct=np.r_[np.full(n - 1, 0.8), np.nan],
                              drift=np.zeros(n), model_version=np.full(n, "v0001"))


@pytest.fixture
def store(tmp_path):
    store = open_store(f"file://{tmp_path / 'store'}")
    write_batch(store, "mnist", _records(), seq=1)
    return store


def _table_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def parquet_variants(raw: bytes, seed: int):
    """Whole-object corruptions of a part, then seeded columns dropped, retyped, narrowed, poisoned."""
    rng = random.Random(seed)
    yield "empty", b""
    yield "truncated", raw[: len(raw) // 2]
    yield "tail cut", raw[:-9]
    yield "json instead", b'{"not": "parquet"}'
    table = pq.read_table(io.BytesIO(raw))
    names = list(table.column_names)
    rng.shuffle(names)
    for name in names[:6]:
        n = table.num_rows
        yield f"{name} dropped", _table_bytes(table.drop_columns([name]))
        yield f"{name} as strings", _table_bytes(table.set_column(table.schema.get_field_index(name), name,
                                                                  pa.array(["x"] * n)))
        yield f"{name} as integers", _table_bytes(table.set_column(table.schema.get_field_index(name), name,
                                                                   pa.array(list(range(n)), pa.int64())))
    at = table.schema.get_field_index
    n = table.num_rows
    times = table.column("times").to_numpy().copy()
    times[rng.randrange(n)] = np.nan
    yield "a NaN time", _table_bytes(table.set_column(at("times"), "times", pa.array(times)))
    pred = table.column("predictions").to_numpy().copy()
    pred[rng.randrange(n)] = rng.choice((-7, 10, 99))
    yield "a prediction outside the classes", _table_bytes(table.set_column(at("predictions"), "predictions",
                                                                             pa.array(pred)))
    narrow = pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(n * 10, np.float32)), 10)
    yield "inputs 10 wide", _table_bytes(table.set_column(at("inputs"), "inputs", narrow))
    yield "shadow_probs 9 classes", _table_bytes(table.set_column(
        at("shadow_probs"), "shadow_probs", pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(n * 9, np.float32)), 9)))


def _readers(store):
    return [("read_part", lambda key: read_part(store, key)),
            ("read_operational", lambda key: read_operational(store, "mnist")),
            ("read_operational window", lambda key: read_operational(store, "mnist", T0, T0 + 3600))]


def _check(store, key, variants):
    original = store.get_bytes(key)
    failures = []
    for what, data in variants:
        store.put_bytes(key, data)
        for name, read in _readers(store):
            try:
                read(key)
            except CorruptObject as exc:
                if key not in str(exc):
                    failures.append(f"{what} / {name}: CorruptObject without the key: {exc}")
            except StorageError as exc:  # get_arrays' own refusal of bytes that are not an npz
                if key not in str(exc):
                    failures.append(f"{what} / {name}: StorageError without the key: {exc}")
            except Exception as exc:  # noqa: BLE001 - any other type is the bug this test looks for
                failures.append(f"{what} / {name}: {type(exc).__name__}: {str(exc)[:200]}")
        out = CliRunner().invoke(main, ["oracle", "records", "--store", store.url])
        if out.exit_code not in (0, 1) or (out.exit_code == 1 and (key not in out.output or "Traceback" in out.output)) \
                or not isinstance(out.exception, (SystemExit, type(None))):
            failures.append(f"{what} / daic oracle records: exit {out.exit_code} {type(out.exception).__name__}: "
                            f"{out.output[-200:]!r}")
    store.put_bytes(key, original)
    assert len(read_part(store, key)) == 12
    assert not failures, f"{key}:\n" + "\n".join(failures)


@pytest.mark.parametrize("seed", SEEDS)
def test_parquet_part_variants(store, seed):
    [key] = list_parts(store, "mnist")
    _check(store, key, parquet_variants(store.get_bytes(key), seed))


@pytest.mark.parametrize("seed", SEEDS)
def test_old_npz_batch_variants(tmp_path, seed):
    store = open_store(f"file://{tmp_path / 'npz'}")
    key = batch_key("mnist", T0, 3)
    store.put_bytes(key, npz_bytes(**_records(seed=seed).to_arrays()))
    assert len(read_part(store, key)) == 12
    _check(store, key, npz_variants(store.get_bytes(key), seed))


def test_convert_records_names_a_corrupt_batch_and_keeps_it(tmp_path):
    store = open_store(f"file://{tmp_path / 'npz'}")
    key = batch_key("mnist", T0, 3)
    arrays = _records().to_arrays()
    arrays["predictions"] = arrays["predictions"].astype(str)
    store.put_bytes(key, npz_bytes(**arrays))
    out = CliRunner().invoke(main, ["oracle", "convert-records", "--store", store.url])
    assert out.exit_code == 1 and key in out.output and "predictions" in out.output, out.output
    assert store.exists(key)  # nothing converted, nothing deleted


def test_a_valid_part_with_unscored_inputs_still_reads(store):
    """P(correct) NaN is an input recorded unscored, not a corruption."""
    [key] = list_parts(store, "mnist")
    records = read_part(store, key)
    assert np.isnan(records.p_correct).sum() == 1 and set(COLUMNS) <= set(records.to_arrays())
    assert to_table(records).num_rows == 12
