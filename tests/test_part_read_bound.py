"""Objects larger than the store's read bound, or declaring more data than it when decoded.

``ObjectStore.max_object_bytes`` bounds what a reader takes from a store (a faulty or hostile
store must not fill its memory). The records' whole-part reader (``read_part``) takes the object
through ``get_bytes``, which enforces it; the sampling scan opens parts for ranged Parquet reads,
which did not. And a part's bytes are only half of it: a few KiB of compressed zeros can declare
megabytes of column data, which decoding allocates. Both readers now refuse either with
ObjectTooLarge naming the part; a part within the bound reads as before. ``.npz`` archives (old
batches, labeled batches, unlabeled pools) are held to it by their members' declared sizes.
"""
from __future__ import annotations

import numpy as np
import pytest

from daic.sampling.scan import scan_pool
from daic.sidecar.records import OperationalRecords, read_part, write_batch
from daic.storage import ObjectTooLarge, open_store
from test_corrupt_objects_fetch import local_ray  # noqa: F401 -- a fixture, asked for by the Ray test
from test_corrupt_objects_records import T0


def _compressible(n: int) -> OperationalRecords:
    """n inputs whose images are all zeros: the part compresses far below its column data."""
    probs = np.full((n, 10), 0.1, dtype=np.float32)
    probs[:, 3] = 0.1000001
    ids = np.array([f"z-{i}:0" for i in range(n)])
    return OperationalRecords(ids=ids, request_ids=ids, times=T0 + np.arange(n) / n, inputs=np.zeros((n, 28, 28)),
                              predictions=probs.argmax(1), probs=probs, embeddings=np.zeros((n, 16)),
                              shadow_probs=probs, p_correct=np.full(n, 0.9), drift=np.zeros(n),
                              model_version=np.full(n, "v0001"))


@pytest.fixture
def part(tmp_path):
    store = open_store(f"file://{tmp_path / 'store'}")
    key = write_batch(store, "mnist", _compressible(2000), seq=1)
    return store, key, len(store.get_bytes(key))


def _scan(store, **engine):
    return scan_pool(store, "mnist", T0 - 10, T0 + 3600, max_parallel=2, **engine)


def test_a_part_within_the_bound_reads(part):
    store, key, size = part
    store.max_object_bytes = 2000 * 28 * 28 * 8 * 2  # above its column data
    assert _scan(store).pool.size == 2000
    assert len(read_part(store, key).ids) == 2000


def test_a_part_declaring_more_column_data_than_the_bound_is_refused_by_both_readers(part):
    store, key, size = part
    store.max_object_bytes = 10 * size  # the object itself is well within the bound ...
    assert 10 * size < 2000 * 28 * 28 * 4  # ... its images alone are not
    for read in (lambda: _scan(store), lambda: read_part(store, key)):
        with pytest.raises(ObjectTooLarge, match="declares .* bytes of column data uncompressed") as info:
            read()
        assert key in str(info.value)


def test_a_part_larger_than_the_bound_is_refused_before_its_footer_is_read(part):
    store, key, size = part
    store.max_object_bytes = size - 1
    for read in (lambda: _scan(store), lambda: read_part(store, key)):
        with pytest.raises(ObjectTooLarge, match="max_object_bytes") as info:
            read()
        assert key in str(info.value)


def test_the_ray_engine_refuses_it_too(part, local_ray):  # noqa: F811 -- the fixture
    """The Ray engine checks every part's footer through the same path before Ray reads it."""
    store, key, size = part
    store.max_object_bytes = 10 * size
    with pytest.raises(ObjectTooLarge, match="declares") as info:
        _scan(store, ray_address="auto")
    assert key in str(info.value)
    store.max_object_bytes = 2000 * 28 * 28 * 8 * 2
    assert _scan(store, ray_address="auto").pool.size == 2000


def _deflated_zeros(n: int) -> bytes:
    import io

    buf = io.BytesIO()
    np.savez_compressed(buf, images=np.zeros((n, 28, 28), np.float32), labels=np.zeros(n, np.int64))
    return buf.getvalue()


def test_an_npz_declaring_more_than_the_bound_is_refused_by_every_reader(tmp_path):
    """Old operational batches, labeled batches and unlabeled pools are ``.npz`` archives: the
    same bound holds for what they declare (deflated zeros: a 30 KiB archive of 2.5 MB)."""
    from daic.sampling.parts import npz_columns
    from daic.training.data import load_labeled_batches
    from daic.training.semi_supervised import load_unlabeled

    store = open_store(f"file://{tmp_path / 'store'}")
    raw = _deflated_zeros(800)
    store.put_bytes("labeled/b1.npz", raw)
    store.max_object_bytes = 20 * len(raw)
    assert 20 * len(raw) < 800 * 28 * 28 * 4
    readers = (lambda: store.get_arrays("labeled/b1.npz"), lambda: load_labeled_batches(store, "labeled/"),
               lambda: load_unlabeled(store, "labeled/b1.npz"),
               lambda: npz_columns(store, "labeled/b1.npz", raw, ("inputs",)))
    for read in readers:
        with pytest.raises(ObjectTooLarge, match="declares .* bytes uncompressed") as info:
            read()
        assert "labeled/b1.npz" in str(info.value)
    store.max_object_bytes = 800 * 28 * 28 * 4 + 800 * 8 + 4096  # its arrays and their headers
    assert store.get_arrays("labeled/b1.npz")["images"].shape == (800, 28, 28)
