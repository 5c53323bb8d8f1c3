"""Inputs the sidecar recorded unscored (P(correct) NaN: no usable reference for the version, a
scoring failure) stay in the window's pool: before, one such input made the whole window
unsamplable ("p_correct must be finite"), so a degraded oracle also stopped offline assessment.

Real records (Parquet parts written by the sidecar's writer) on a file store; the estimators'
validity with imputed scores is checked by simulation against a known truth (fixed seeds)."""
from __future__ import annotations

import numpy as np
import pytest

from daic.components.sample_operational.logic import SampleConfig, draw
from daic.sampling.active import ActiveModelAssisted
from daic.sampling.pool import Pool
from daic.sampling.sample import Sample
from daic.sampling.scan import impute_unscored, scan_pool
from daic.sampling.simulate import ScenarioSpec, simulate_pool
from daic.sampling.stratified import StratifiedNeyman
from daic.sidecar.records import OperationalRecords, write_batch
from daic.storage import open_store

T0 = 1_764_000_000.0


def test_impute_unscored():
    p, n = impute_unscored(np.array([0.2, np.nan, 0.6, np.nan]))
    assert n == 2 and p.tolist() == [0.2, 0.4, 0.6, 0.4]
    p, n = impute_unscored(np.array([np.nan, np.nan]))
    assert n == 2 and p.tolist() == [0.5, 0.5]
    p, n = impute_unscored(np.array([0.9, 0.1], np.float32))
    assert n == 0 and np.allclose(p, [0.9, 0.1])


def test_a_window_with_unscored_inputs_is_sampled(tmp_path):
    store = open_store(f"file://{tmp_path}")
    rng = np.random.default_rng(0)
    n = 400
    probs = rng.dirichlet(np.ones(10), size=n)
    p_correct = rng.random(n)
    unscored = rng.random(n) < 0.25
    p_correct[unscored] = np.nan
    drift = np.where(unscored, np.nan, rng.random(n))
    records = OperationalRecords(
        ids=[f"r:{i}" for i in range(n)], request_ids=["r"] * n, times=T0 + np.arange(n, dtype=float),
        inputs=rng.random((n, 28, 28)), predictions=probs.argmax(1), probs=probs, embeddings=rng.random((n, 8)),
        shadow_probs=probs, p_correct=p_correct, drift=drift, model_version=["v1"] * n)
    write_batch(store, "mnist", records, seq=0)

    scan = scan_pool(store, "mnist")
    assert scan.pool.size == n and scan.stats.unscored == int(unscored.sum())
    assert scan.summary()["scan"]["unscored"] == int(unscored.sum())
    assert np.all(np.isfinite(scan.pool.p_correct))
    # every unscored input got the scored inputs' mean (the most frequent value: the others are distinct)
    scored_mean = float(np.nanmean(p_correct.astype(np.float32)))
    values, counts = np.unique(np.round(scan.pool.p_correct, 6), return_counts=True)
    assert counts.max() == int(unscored.sum()) and np.isclose(values[counts.argmax()], scored_mean, atol=1e-6)
    sample = draw(scan.pool, SampleConfig(sampler="stratified", budget=60, seed=1))[0]
    assert sample.n_draws == 60


@pytest.mark.parametrize("design", [StratifiedNeyman(), ActiveModelAssisted()], ids=lambda d: d.name)
def test_estimates_stay_unbiased_and_cover_when_the_unscored_inputs_are_the_hard_ones(design):
    """A fifth of the pool unscored, and those inputs right only 50 % of the time (the oracle failed
    where the traffic was strangest) against ~93 % for the rest: with their P(correct) imputed the
    estimate is still centred on the truth and its 95 % interval covers it (800 repetitions)."""
    sim = simulate_pool(ScenarioSpec("unscored", accuracy=0.92, oracle_accuracy=0.95, spread=3.0, temperature=1.5),
                        n=3000, seed=5)
    rng = np.random.default_rng(7)
    hidden = rng.random(sim.pool.size) < 0.2
    correct = sim.correct.copy()
    correct[hidden] = rng.random(int(hidden.sum())) < 0.5
    p = sim.pool.p_correct.copy()
    p[hidden] = np.nan
    p, n_unscored = impute_unscored(p)
    assert n_unscored == int(hidden.sum())
    pool = Pool(ids=sim.pool.ids, p_correct=p, predictions=sim.pool.predictions)
    truth = correct.mean()
    reps = 800
    est, cover = np.empty(reps), np.empty(reps, bool)
    for r in range(reps):
        draws, c = Sample.empty(), np.zeros(0, bool)
        g = np.random.default_rng(r)
        while draws.n_draws < 100:
            new = design.draw(pool, draws, c, 50, g)
            draws = draws.concat(new)
            c = np.concatenate([c, correct[new.indices]])
        e = design.estimate(pool, draws, c, 0.95)
        est[r], cover[r] = e.accuracy, e.covers(truth)
    mc_se = est.std(ddof=1) / np.sqrt(reps)
    assert abs(est.mean() - truth) < 4 * mc_se, (est.mean(), truth, mc_se)
    assert 0.92 <= cover.mean() <= 0.98, cover.mean()
