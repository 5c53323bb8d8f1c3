"""OracleReference: shape/value validation and the npz round trip the registry relies on."""
import numpy as np
import pytest

from daic.oracles.reference import FIELDS, OracleReference


def _arrays(n=6, c=3, d=4, seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, c))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    shadow = np.roll(probs, 1, axis=1)
    return {
        "probs": probs,
        "embeddings": rng.normal(size=(n, d)),
        "labels": rng.integers(0, c, size=n),
        "shadow_probs": shadow,
    }


def test_round_trip_keeps_values_and_types():
    ref = OracleReference.from_arrays(_arrays())
    back = OracleReference.from_arrays(ref.to_arrays())
    assert set(ref.to_arrays()) == set(FIELDS)
    np.testing.assert_allclose(back.probs, ref.probs, atol=1e-6)
    np.testing.assert_allclose(back.embeddings, ref.embeddings, atol=1e-6)
    np.testing.assert_array_equal(back.labels, ref.labels)
    assert back.labels.dtype == np.int64
    assert len(back) == 6 and back.n_classes == 3


def test_accuracy_and_correct_are_exact():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    ref = OracleReference(probs, np.zeros((4, 2)), np.array([0, 1, 1, 0]), probs)
    np.testing.assert_array_equal(ref.correct, [True, True, False, False])
    assert ref.accuracy == 0.5
    sub = ref.subset(np.array([0, 1]))
    assert sub.accuracy == 1.0


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("probs", np.ones((6, 3)), "sum to 1"),
        ("probs", np.full((6,), 0.5), "shape"),
        ("embeddings", np.zeros((5, 4)), "embeddings"),
        ("embeddings", np.full((6, 4), np.nan), "NaN"),
        ("labels", np.array([0, 1, 2, 3, 0, 1]), "labels must lie"),
        ("labels", np.zeros(6) + 0.5, "integers"),
        ("shadow_probs", np.full((6, 4), 0.25), "classes"),
    ],
)
def test_bad_arrays_are_named(field, value, message):
    arrays = _arrays()
    arrays[field] = value
    with pytest.raises(ValueError, match=message):
        OracleReference.from_arrays(arrays)


def test_missing_field_is_named():
    arrays = _arrays()
    del arrays["shadow_probs"]
    with pytest.raises(ValueError, match="shadow_probs"):
        OracleReference.from_arrays(arrays)
