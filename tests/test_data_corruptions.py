"""The corruption suite: contract (shape, dtype, range), determinism, severity grading, errors."""
from __future__ import annotations

import numpy as np
import pytest

from daic.data.corruptions import CORRUPTIONS, IDENTITY, SEVERITIES, corrupt
from daic.data.mnist import load_split

# Corruptions with no random component: the seed must not change them.
SEEDLESS = {"gaussian_blur", "pixelate", "brightness", "contrast", "edges"}


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.array(load_split("test").images[:200])


def test_suite_is_large_enough_and_names_are_unique():
    assert len(CORRUPTIONS) >= 12
    assert len(set(CORRUPTIONS)) == len(CORRUPTIONS)
    assert IDENTITY not in CORRUPTIONS
    assert SEVERITIES == (1, 2, 3, 4, 5)


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_contract_and_change_at_every_severity(images, name):
    batch = images[:32]
    before = batch.copy()
    for severity in SEVERITIES:
        out = corrupt(batch, name, severity, seed=3)
        assert out.shape == batch.shape
        assert out.dtype == np.float32
        assert np.isfinite(out).all()
        assert out.min() >= 0.0 and out.max() <= 1.0
        # every image is changed, not just the batch on average
        per_image = np.abs(out - batch).mean(axis=(1, 2))
        assert (per_image > 1e-3).mean() >= 0.9, (name, severity, per_image)
    assert np.array_equal(batch, before), "input was modified in place"


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_effect_grows_with_severity(images, name):
    for seed in (0, 1):
        change = [float(np.abs(corrupt(images, name, s, seed) - images).mean()) for s in SEVERITIES]
        assert all(b > a for a, b in zip(change, change[1:])), (name, seed, change)


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_deterministic_under_seed(images, name):
    batch = images[:16]
    a = corrupt(batch, name, 3, seed=7)
    b = corrupt(batch, name, 3, seed=7)
    assert np.array_equal(a, b)
    c = corrupt(batch, name, 3, seed=8)
    if name in SEEDLESS:
        assert np.array_equal(a, c)
    else:
        assert not np.array_equal(a, c)


def test_images_in_one_batch_get_different_randomness(images):
    same = np.repeat(images[:1], 4, axis=0)
    out = corrupt(same, "rotate", 3, seed=0)
    assert not np.array_equal(out[0], out[1])


def test_single_image_and_read_only_input():
    data = load_split("test")  # read-only cached arrays
    one = corrupt(data.images[0], "fog", 2, seed=0)
    assert one.shape == (28, 28) and one.dtype == np.float32
    batch = corrupt(data.images[:3], "fog", 2, seed=0)
    assert batch.shape == (3, 28, 28)


def test_identity_returns_a_copy_at_any_severity(images):
    for severity in (0, 1, 5, 9):
        out = corrupt(images[:4], IDENTITY, severity, seed=0)
        assert np.array_equal(out, images[:4])
        assert out is not images
    out[0, 0, 0] = 0.5
    assert images[0, 0, 0] == 0.0


def test_empty_batch(images):
    out = corrupt(images[:0], "elastic", 2, seed=0)
    assert out.shape == (0, 28, 28) and out.dtype == np.float32


def test_float64_input_is_accepted_and_returned_as_float32(images):
    out = corrupt(images[:2].astype(np.float64), "shear", 1, seed=0)
    assert out.dtype == np.float32


def test_unknown_name_lists_valid_choices(images):
    with pytest.raises(ValueError) as err:
        corrupt(images[:2], "snow", 1, seed=0)
    assert "'snow'" in str(err.value)
    for name in ("identity",) + CORRUPTIONS:
        assert name in str(err.value)


@pytest.mark.parametrize("severity", [0, 6, -1, 2.5, True, "3"])
def test_bad_severity(images, severity):
    with pytest.raises(ValueError, match=r"severity must be one of \(1, 2, 3, 4, 5\)"):
        corrupt(images[:2], "rotate", severity, seed=0)


@pytest.mark.parametrize("seed", [-1, 1.5, None, "0"])
def test_bad_seed(images, seed):
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        corrupt(images[:2], "rotate", 1, seed=seed)


def test_bad_images():
    with pytest.raises(ValueError, match="uint8"):
        corrupt(np.zeros((2, 28, 28), dtype=np.uint8), "rotate", 1)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        corrupt(np.full((2, 28, 28), 255.0), "rotate", 1)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        corrupt(np.full((2, 28, 28), np.nan), "rotate", 1)
    with pytest.raises(ValueError, match=r"shape \(N, H, W\)"):
        corrupt(np.zeros((2, 1, 28, 28)), "rotate", 1)


def test_translate_moves_mass_by_the_severity_distance(images):
    """Translation is exact (integer shift): the centre of mass moves by about the set distance."""
    rows = np.arange(28)[None, :, None]
    cols = np.arange(28)[None, None, :]

    def centre(x):
        mass = x.sum(axis=(1, 2))
        return np.stack([(x * rows).sum(axis=(1, 2)) / mass, (x * cols).sum(axis=(1, 2)) / mass], 1)

    moved = corrupt(images, "translate", 2, seed=0)
    dist = np.linalg.norm(centre(moved) - centre(images), axis=1)
    # severity 2 shifts by 3 pixels (rounded to the pixel grid: between 2.8 and 3.2 in norm)
    assert np.median(dist) == pytest.approx(3.0, abs=0.3)


def test_contrast_keeps_mean_and_shrinks_spread(images):
    out = corrupt(images, "contrast", 3, seed=0)
    assert np.allclose(out.mean(axis=(1, 2)), images.mean(axis=(1, 2)), atol=1e-5)
    ratio = out.std(axis=(1, 2)) / images.std(axis=(1, 2))
    assert np.allclose(ratio, 0.25, atol=1e-4)
