"""daic.data.fit_shifts: the random shift families that only fit the online assessor (issue 17)."""
from __future__ import annotations

import numpy as np
import pytest

from daic.data.fit_shifts import FIT_SHIFTS, fit_shift
from daic.data.mnist import load_split
from daic.models.reference import shifted_inputs


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    return np.asarray(load_split("val").images[:64], np.float32)


@pytest.mark.parametrize("name", FIT_SHIFTS)
def test_range_shape_determinism(digits, name):
    out = fit_shift(digits, name, 3, seed=5)
    assert out.shape == digits.shape and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    np.testing.assert_array_equal(out, fit_shift(digits, name, 3, seed=5))
    assert not np.array_equal(out, fit_shift(digits, name, 3, seed=6))
    assert not np.array_equal(out, digits)
    np.testing.assert_array_equal(digits, np.asarray(load_split("val").images[:64], np.float32))  # input untouched


@pytest.mark.parametrize("name", FIT_SHIFTS)
def test_the_effect_grows_with_severity(digits, name):
    change = [float(np.abs(fit_shift(digits, name, s, seed=1) - digits).mean()) for s in (1, 3, 5)]
    assert change[0] < change[1] < change[2]


def test_bad_arguments_are_clear_errors(digits):
    with pytest.raises(ValueError, match="unknown fit-only shift 'blur'"):
        fit_shift(digits, "blur", 1)
    for severity in (0, 6, True):
        with pytest.raises(ValueError, match="severity must be one of"):
            fit_shift(digits, FIT_SHIFTS[0], severity)
    with pytest.raises(ValueError, match=r"shape \(N, H, W\)"):
        fit_shift(digits[0], FIT_SHIFTS[0], 1)
    assert fit_shift(digits[:0], FIT_SHIFTS[0], 1).shape == (0, 28, 28)


def test_a_reference_config_names_only_known_families():
    from daic.models.reference import ReferenceConfig

    assert set(ReferenceConfig().fit_shifts) <= set(FIT_SHIFTS)
    with pytest.raises(ValueError, match=r"unknown fit_shifts \['blur'\]"):
        ReferenceConfig(fit_shifts=("randconv", "blur"))


def test_the_shifted_reference_holds_them_beside_the_named_corruptions():
    val = load_split("val")
    images, labels = np.asarray(val.images[:200], np.float32), np.asarray(val.labels[:200])
    x, y, conditions = shifted_inputs(images, labels, per_condition=4, corruptions=("fog",), seed=7,
                                      fit_shifts=("randwarp", "randnoise"))
    assert len(x) == len(y) == len(conditions) == 4 * 5 * 3
    assert sorted({c.split("/")[0] for c in conditions}) == ["fog", "randnoise", "randwarp"]
    plain = shifted_inputs(images, labels, per_condition=4, corruptions=("fog",), seed=7)
    np.testing.assert_array_equal(plain[0], x[:20])  # the named corruptions' rows do not move
