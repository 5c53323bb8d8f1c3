"""The abstained pass (``daic.sampling.abstain.abstained_positions``) over operational parts whose
*contents* are wrong, or that are gone.

After the scan, sample-operational reads the window's parts again for the ``abstained`` flag, to
queue those inputs for labelling. It reads only ``ids``, ``times`` and ``abstained`` of the row
groups the scan read (never the images), and must give the flags logged or raise one StorageError
naming the part -- a CorruptObject (KeyNotFound when it is gone) -- never an Arrow or numpy error
without it, and never a queue built from a flag that is not one: a flag column of strings read
``astype(bool)`` was all True, and queued every input of the window for labelling in silence.

Every fault is planted in a part written by the sidecar's own writer after the scan that read it
whole: the flag retyped (strings, integers, floats), null, one value short (a damaged page header),
its pages garbage; ``ids`` or ``times`` dropped, a NaN time, a null id; the object truncated,
cut, empty, random or deleted. A part without the column (written before the flag) is no fault.
The step that runs the pass (sample-operational) is checked to fail with that same error.
"""
from __future__ import annotations

import dataclasses
import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from daic.sampling.abstain import abstained_positions
from daic.sampling.parts import FOOTER_GUESS, ScanStats
from daic.sampling.scan import id_keys, scan_pool
from daic.sidecar.records import batch_key, list_parts, write_batch
from daic.storage import KeyNotFound, StorageError, open_store
from daic.storage.parsed import CorruptObject
from corrupt_variants import DAMAGED_OBJECT
from test_corrupt_objects_fetch import _at, _garbage_over
from test_corrupt_objects_records import T0, _records, _table_bytes

FLAGGED = np.arange(12) % 3 == 0  # inputs 0, 3, 6, 9 of the part abstained on


def _flagged_records(n=12, seed=0):
    return dataclasses.replace(_records(n=n, seed=seed), abstained=np.arange(n) % 3 == 0)


def _window():
    return T0 - 10, T0 + 3600


def _abstained(store, scan, stats=None):
    return abstained_positions(store, scan, *_window(), max_parallel=2, stats=stats)


@pytest.fixture
def part(tmp_path):
    """(store, key, scan) of one whole Parquet part with four inputs flagged abstained."""
    store = open_store(f"file://{tmp_path / 'store'}")
    write_batch(store, "mnist", _flagged_records(), seq=1)
    [key] = list_parts(store, "mnist")
    return store, key, scan_pool(store, "mnist", *_window(), max_parallel=2)


def test_the_flags_logged_are_read_by_column(part):
    """The flagged inputs' pool positions, from the part's tail (its footer) and a few hundred bytes
    of its three columns: not the images, most of the part."""
    store, key, scan = part
    stats = ScanStats()
    got = _abstained(store, scan, stats)
    ids = _flagged_records().ids
    assert sorted(scan.pool.ids[got].tolist()) == sorted(id_keys(ids[FLAGGED]).tolist())
    size = len(store.get_bytes(key))
    assert stats.parts_read == 1 and stats.rows_read == 12
    assert stats.bytes_read < FOOTER_GUESS + 1024 < size / 3, (stats.bytes_read, size)  # 12 images: 37 KB


def _flag(table: pa.Table, values) -> bytes:
    return _table_bytes(_at(table, "abstained", values))


def _one_short(raw: bytes) -> bytes:
    """``raw`` with the flag's data page header saying 11 values for the row group's 12 rows (the
    footer intact): a flag column of another length than the ids beside it."""
    meta = pq.read_metadata(io.BytesIO(raw))
    group = meta.row_group(0)
    chunk = next(group.column(i) for i in range(group.num_columns) if group.column(i).path_in_schema == "abstained")
    start = chunk.dictionary_page_offset or chunk.data_page_offset
    header = raw[start:start + 16]
    at = header.index(b"\x2c\x15\x18")  # DataPageHeader { num_values: 12 } (Thrift compact, zigzag)
    data = bytearray(raw)
    data[start + at + 2] = 0x16  # 11
    return bytes(data)


def _nan_time(table: pa.Table) -> bytes:
    times = table.column("times").to_numpy().copy()
    times[3] = np.nan
    return _table_bytes(_at(table, "times", pa.array(times)))


FAULTS = {
    # the flag of another type: all True through astype(bool), or silently truncated to 0/1
    "abstained as strings": lambda t, raw: _flag(t, pa.array(np.where(FLAGGED, "yes", "no"))),
    "abstained as 'False' strings": lambda t, raw: _flag(t, pa.array(["False"] * t.num_rows)),
    "abstained as integers": lambda t, raw: _flag(t, pa.array(FLAGGED.astype(np.int8))),
    "abstained as floats": lambda t, raw: _flag(t, pa.array(FLAGGED * 0.5)),
    # values no flag holds, or of another length
    "a null flag": lambda t, raw: _flag(t, pa.array([None, *FLAGGED[1:].tolist()], pa.bool_())),
    "abstained one short": lambda t, raw: _one_short(raw),
    "garbage over the abstained pages": lambda t, raw: _garbage_over(raw, "abstained"),
    # the columns the flag is read with
    "ids dropped": lambda t, raw: _table_bytes(t.drop_columns(["ids"])),
    "times dropped": lambda t, raw: _table_bytes(t.drop_columns(["times"])),
    "a NaN time": lambda t, raw: _nan_time(t),
    "a null id": lambda t, raw: _table_bytes(_at(t, "ids", pa.array([None, *t.column("ids").to_pylist()[1:]],
                                                                     pa.string()))),
    # a damaged object
    **DAMAGED_OBJECT,
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_a_faulty_part_is_one_error_naming_it(part, fault):
    store, key, scan = part
    raw = store.get_bytes(key)
    store.put_bytes(key, FAULTS[fault](pq.read_table(io.BytesIO(raw)), raw))
    with pytest.raises(CorruptObject, match=rf"{store.url}: operational part '{key}'"):
        _abstained(store, scan)


def test_the_error_says_what_is_wrong(part):
    store, key, scan = part
    table = pq.read_table(io.BytesIO(store.get_bytes(key)))
    store.put_bytes(key, FAULTS["abstained as strings"](table, b""))
    with pytest.raises(CorruptObject, match=r"column 'abstained' is string, expected abstained \(booleans\)"):
        _abstained(store, scan)
    store.put_bytes(key, FAULTS["abstained one short"](table, _table_bytes(table)))
    with pytest.raises(CorruptObject, match=r"not a readable Parquet file: .*abstained expected length 12 but got length 11"):
        _abstained(store, scan)


def test_a_part_deleted_since_the_scan_is_key_not_found_naming_it(part):
    store, key, scan = part
    store.delete(key)
    with pytest.raises(KeyNotFound, match=rf"no object '{key}'"):
        _abstained(store, scan)


def test_parts_without_the_flag_and_old_npz_batches_queue_nothing(part, tmp_path):
    """Written before the flag existed: no input abstained on (records.OPTIONAL), not a fault."""
    store, key, scan = part
    table = pq.read_table(io.BytesIO(store.get_bytes(key)))
    store.put_bytes(key, _table_bytes(table.drop_columns(["abstained"])))
    assert _abstained(store, scan).tolist() == []
    npz = open_store(f"file://{tmp_path / 'npz'}")
    npz.put_arrays(batch_key("mnist", T0, 3), **_flagged_records().to_arrays())
    stats = ScanStats()
    assert _abstained(npz, scan_pool(npz, "mnist", *_window()), stats).tolist() == []
    assert stats.bytes_read == 0  # not fetched whole for a flag no release wrote into one


def test_sample_operational_fails_naming_the_part_and_writes_nothing(part):
    """The step lets the pass's error through, as it does the scan's and the fetch's (the KFP step
    fails with the message): no cycle is written from a queue read off a wrong flag."""
    from daic.components.sample_operational.logic import SampleConfig, run

    store, key, _ = part
    since, until = _window()
    config = SampleConfig(budget=4, cycle="c1", since=str(int(since)), until=str(int(until)))
    table = pq.read_table(io.BytesIO(store.get_bytes(key)))
    store.put_bytes(key, FAULTS["abstained as strings"](table, b""))
    with pytest.raises(StorageError, match=rf"'{key}': column 'abstained'"):
        run(store, config)
    assert store.list("cycles/") == []
    run(store, dataclasses.replace(config, abstained_cap=0))  # no queue asked for: the flag is not read
    assert store.list("cycles/")
