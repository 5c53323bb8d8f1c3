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
    out = load_served_model(store, "mnist", "v0001").outputs(images.astype(np.float32))
    return pool.get("v0001").score(out["probs"], out["embeddings"], out["shadow_probs"], out["self_agreement"])


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


def _move_mass(probs: np.ndarray, delta: float = 1e-3) -> np.ndarray:
    """A copy of softmax rows with ``delta`` (at most half the largest entry) moved, in row 0, from its
    largest entry to its smallest: every row still sums to 1 within [0, 1], so the reference validator
    accepts it whatever the trained model's values are."""
    changed = probs.copy()
    order = np.argsort(changed[0])
    lo, hi = int(order[0]), int(order[-1])
    step = min(delta, changed[0, hi] / 2)
    changed[0, hi] -= step
    changed[0, lo] += step
    return changed


def _changes(reference):
    """One small change per field of an OracleReference, each a reference the validator accepts."""
    embeddings = reference.embeddings.copy()
    embeddings[0, 0] += 1e-3
    labels = reference.labels.copy()
    labels[0] = (labels[0] + 1) % reference.n_classes
    return {"probs": _move_mass(reference.probs), "shadow_probs": _move_mass(reference.shadow_probs),
            "embeddings": embeddings, "labels": labels}


def test_the_fingerprint_follows_the_reference(store):
    reference, shifted = load_oracle_reference(store, "mnist", "v0001")
    same = reference_fingerprint(reference, shifted)
    assert reference_fingerprint(reference, shifted) == same
    assert set(_changes(reference)) == {f.name for f in dataclasses.fields(reference)}
    for name, value in _changes(reference).items():
        changed = dataclasses.replace(reference, **{name: value})  # runs the validator
        assert reference_fingerprint(changed, shifted) != same, name
    if shifted is not None:
        assert reference_fingerprint(reference, None) != same


@pytest.mark.parametrize("seed", range(20))
def test_the_changes_are_references_the_validator_accepts(seed):
    """The validator alone, on seeded random references (peaked, flat and tiny-valued softmax rows):
    every change the fingerprint test makes is accepted; adding 1e-3 to one probability, as that test
    once did, is refused whenever the row then sums past the tolerance."""
    from daic.oracles.reference import OracleReference

    rng = np.random.default_rng(seed)
    n, c = 6, 10
    logits = rng.normal(scale=[0.0, 1.0, 30.0][seed % 3], size=(n, c))
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    shadow = np.roll(probs, 1, axis=1)
    reference = OracleReference(probs=probs, embeddings=rng.normal(size=(n, 4)),
                                labels=rng.integers(0, c, n), shadow_probs=shadow)
    for name, value in _changes(reference).items():
        changed = dataclasses.replace(reference, **{name: value})
        assert not np.array_equal(getattr(changed, name), getattr(reference, name)), name
    broken = reference.probs.copy()
    broken[0, 0] += 2e-3
    with pytest.raises(ValueError, match=r"must (sum to 1|lie in \[0, 1\])"):
        dataclasses.replace(reference, probs=broken)
