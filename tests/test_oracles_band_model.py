"""Conformalized quantile band (daic.oracles.band_model) with known truth."""
import numpy as np
import pytest

from daic.oracles.band_model import BandModel, _conformal_quantile, band_features


def _draw(n, rng, groups=5):
    """Errors ~ N(0, sd(x)) with sd = 0.01 + 0.1 x0 (x1 is noise): |error| quantile known."""
    x = rng.uniform(size=(n, 2))
    sd = 0.01 + 0.1 * x[:, 0]
    err = rng.normal(size=n) * sd
    return x, np.abs(err), rng.integers(0, groups, size=n), sd


def test_conformal_quantile_is_the_finite_sample_rank():
    s = np.arange(1.0, 20.0)  # 19 scores: ceil(20 * 0.9) = 18th smallest
    assert _conformal_quantile(s, 0.9) == 18.0
    assert _conformal_quantile(s, 0.999) == 19.0


def test_band_covers_at_its_level_and_tracks_the_known_spread():
    rng = np.random.default_rng(0)
    x, y, g, _ = _draw(2000, rng, groups=3)
    band = BandModel(0.95, 0.9, seed=0).fit(x, y, g)
    xt, yt, _, sd = _draw(5000, np.random.default_rng(1))
    half, q90 = band.predict(xt)
    assert (yt <= half).mean() >= 0.94          # coverage at the 95 % level (fresh draws)
    assert 0.86 <= (yt <= q90).mean() <= 0.95   # the trust quantile is a 90 % quantile
    # Adaptive: narrow where the spread is small, wide where it is large (true 95 % half-width
    # of |N(0, sd)| is 1.96 sd).
    lo, hi = xt[:, 0] < 0.2, xt[:, 0] > 0.8
    assert half[lo].mean() < 0.5 * half[hi].mean()
    assert abs(np.median(half[hi] / (1.96 * sd[hi])) - 1) < 0.25
    avg = BandModel.average([band, BandModel(0.95, 0.9, seed=1).fit(x, y, g)])
    h2, _ = avg.predict(xt[:5])
    assert h2.shape == (5,) and np.all(h2 >= 0)


def test_band_model_rejects_bad_input():
    rng = np.random.default_rng(2)
    x, y, g, _ = _draw(200, rng)
    with pytest.raises(ValueError, match="at least 2 groups"):
        BandModel().fit(x, y, np.zeros(200, int))
    with pytest.raises(ValueError, match=">= 0"):
        BandModel().fit(x, -y, g)
    with pytest.raises(ValueError, match="must match"):
        BandModel().fit(x, y[:10], g)
    with pytest.raises(ValueError, match="band_level"):
        BandModel(band_level=1.0)
    from daic.oracles.base import NotFittedError
    with pytest.raises(NotFittedError):
        BandModel().predict(x)
    assert band_features(np.zeros((3, 9)), np.ones(3), np.ones(3)).shape == (3, 11)
