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


def test_assessor_wires_the_band_model_into_its_estimators():
    from statistics import NormalDist

    from daic.oracles.pipeline import AssessorConfig, OnlineAssessor, ShiftedReference
    from daic.oracles.reference import OracleReference
    from daic.oracles.window_model import WindowSynthesis

    def synthetic(n, rng, noise=0.0, shift=0.0):
        labels = rng.integers(0, 2, size=n)
        emb = np.where(labels[:, None] == 1, [1.0, 0, 0, 0], [-1.0, 0, 0, 0]) + rng.normal(scale=0.3, size=(n, 4))
        emb[:, 1] += shift
        flip = rng.uniform(size=n) < 0.02 + noise
        pred = np.where(flip, 1 - labels, labels)
        conf = np.where(flip, rng.uniform(0.5, 0.8, n), rng.uniform(0.8, 1.0, n))
        probs = np.where(pred[:, None] == 1, np.column_stack([1 - conf, conf]), np.column_stack([conf, 1 - conf]))
        return OracleReference(probs, emb, labels, probs.copy())

    rng = np.random.default_rng(5)
    ref = synthetic(3000, rng)
    parts = [synthetic(300, rng, noise=nz, shift=s) for s, nz in ((0.3, 0.1), (0.6, 0.3), (1.0, 0.5))]
    sref = OracleReference(*(np.concatenate([getattr(r, f) for r in parts])
                             for f in ("probs", "embeddings", "labels", "shadow_probs")))
    shifted = ShiftedReference(sref, np.repeat(["a/1", "b/1", "c/1"], 300))
    synthesis = WindowSynthesis(n_windows=90, min_size=50, max_size=100)
    off = OnlineAssessor(AssessorConfig(k=5, cv_folds=3, synthesis=synthesis, band_model=False)).fit(ref, shifted)
    on = OnlineAssessor(AssessorConfig(k=5, cv_folds=3, synthesis=synthesis)).fit(ref, shifted)
    assert off.band_model is None and on.band_model is not None
    test = synthetic(400, rng, noise=0.2, shift=0.5)
    scores = on.score(test.probs, test.embeddings, test.shadow_probs)
    est = on.new_estimator(max_count=1000)
    assert est.band_model is on.band_model
    est.update(scores)
    e = est.estimate()
    # The band is the band model's half-width (or the window's own sampling error, if larger),
    # and error_sd keeps its meaning: half / z.
    z = NormalDist().inv_cdf(0.975)
    from daic.oracles.window_model import WindowColumns

    cols = WindowColumns(scores.p_correct, scores.drift, scores.far.astype(float),
                         (scores.predicted == scores.shadow_predicted).astype(float), scores.confidence,
                         scores.predicted, scores.shadow_predicted)
    p = scores.p_correct
    want_half, want_q = on.band_model.predict(band_features(on.window_model.features(cols)[None], e.accuracy,
                                                            np.sqrt((p * (1 - p)).sum()) / len(p)))
    half = z * e.error_sd
    assert abs(half - max(want_half[0], z * np.sqrt((p * (1 - p)).sum()) / len(p))) < 1e-9
    assert e.trusted == bool(want_q[0] <= on.config.trusted_error and e.far_fraction <= 0.1)
    assert abs(min(1.0, e.accuracy + half) - e.upper) < 1e-9 and abs(max(0.0, e.accuracy - half) - e.lower) < 1e-9
    plain = on.new_estimator(max_count=1000)
    plain.band_model = None
    plain.update(scores)
    assert plain.estimate().accuracy == e.accuracy  # the band model moves the band, never the estimate
    resumed = on.estimator_from_state(est.to_state())
    assert resumed.band_model is on.band_model and resumed.estimate() == e


def _draw_scale(n, rng, groups=5):
    """Model error ~ N(0, sigma(x)) with sigma = 0.005 + 0.05 x0, plus sampling noise of known SD
    s (the last feature column, as band_features puts it): |error| has a known spread."""
    wf = rng.uniform(size=(n, 9))
    est = rng.uniform(0.5, 1.0, size=n)
    ssd = rng.uniform(0.002, 0.02, size=n)
    sigma = 0.005 + 0.05 * wf[:, 0]
    err = rng.normal(size=n) * np.sqrt(sigma**2 + ssd**2)
    return band_features(wf, est, ssd), np.abs(err), rng.integers(0, groups, size=n), np.sqrt(sigma**2 + ssd**2)


def test_scale_method_covers_at_its_level_and_adds_the_sampling_sd_exactly():
    x, y, g, _ = _draw_scale(3000, np.random.default_rng(3))
    band = BandModel(0.95, 0.9, seed=0, method="scale").fit(x, y, g)
    xt, yt, _, sd = _draw_scale(5000, np.random.default_rng(4))
    half, q90 = band.predict(xt)
    assert 0.94 <= (yt <= half).mean() <= 0.97     # 95 % band on fresh draws
    assert 0.87 <= (yt <= q90).mean() <= 0.93      # the trust quantile is a 90 % quantile
    lo, hi = xt[:, 0] < 0.2, xt[:, 0] > 0.8
    assert half[lo].mean() < 0.5 * half[hi].mean()  # adaptive in the feature that drives the error
    # A window's own sampling SD enters the band exactly: a larger one widens it, others equal.
    row = xt[:1].copy()
    wide = row.copy()
    wide[0, -1] = 0.2
    assert band.predict(wide)[0][0] > band.predict(row)[0][0]
    assert band.predict(wide)[0][0] >= 0.2 * band.corrections[0.95] - 1e-12
    avg = BandModel.average([band, BandModel(0.95, 0.9, seed=1, method="scale").fit(x, y, g)])
    assert avg.method == "scale" and avg.predict(xt[:5])[0].shape == (5,)
    with pytest.raises(ValueError, match="unknown band method"):
        BandModel(method="bogus")


def test_assessor_default_band_is_the_scale_method():
    from daic.oracles.pipeline import AssessorConfig

    assert AssessorConfig().band_model and AssessorConfig().band_method == "scale"
    with pytest.raises(ValueError, match="band_method"):
        AssessorConfig(band_method="bogus")
