"""The sidecar's cache of fitted assessors: a restart reuses the fit (no minute of CPU before
it is ready), a changed reference or an unreadable file refits."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from daic.serving.loading import load_oracle_reference, load_served_model
from daic.sidecar.assessment import AssessorPool, reference_fingerprint
from test_serving_support import mnist_test_images, registered_store


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return registered_store(tmp_path_factory.mktemp("assessor-cache") / "store")


def _scores(pool, store):
    images, _ = mnist_test_images(64, start=500)
    probs, emb, shadow = load_served_model(store, "mnist", "v0001").predict(images.astype(np.float32))
    return pool.get("v0001").score(probs, emb, shadow)


def test_a_second_pool_loads_the_cached_fit_and_scores_identically(store, tmp_path):
    first = AssessorPool(store, "mnist", window=500, cache_dir=tmp_path)
    before = _scores(first, store)
    assert first.fits == 1 and len(list(tmp_path.glob("v0001-*.pkl"))) == 1
    second = AssessorPool(store, "mnist", window=500, cache_dir=tmp_path)
    after = _scores(second, store)
    assert second.fits == 0
    np.testing.assert_array_equal(before.p_correct, after.p_correct)
    np.testing.assert_array_equal(before.drift, after.drift)


def test_an_unreadable_cache_file_is_refitted_and_rewritten(store, tmp_path):
    AssessorPool(store, "mnist", window=500, cache_dir=tmp_path).get("v0001")
    (cached,) = tmp_path.glob("v0001-*.pkl")
    cached.write_bytes(b"not a pickle")
    pool = AssessorPool(store, "mnist", window=500, cache_dir=tmp_path)
    pool.get("v0001")
    assert pool.fits == 1 and cached.read_bytes() != b"not a pickle"


def test_the_fingerprint_follows_the_reference(store):
    reference, shifted = load_oracle_reference(store, "mnist", "v0001")
    same = reference_fingerprint(reference, shifted)
    assert reference_fingerprint(reference, shifted) == same
    array_field = next(f.name for f in dataclasses.fields(reference)
                       if isinstance(getattr(reference, f.name), np.ndarray)
                       and getattr(reference, f.name).dtype.kind == "f")
    changed = getattr(reference, array_field).copy()
    changed.flat[0] += 1e-3
    assert reference_fingerprint(dataclasses.replace(reference, **{array_field: changed}), shifted) != same
    assert reference_fingerprint(reference, None) != same or shifted is None
