"""Designs and estimators: allocation by hand, unbiasedness and coverage by simulation (fixed seeds)."""
import numpy as np
import pytest

from daic.sampling.active import ActiveModelAssisted
from daic.sampling.failure_seeking import FailureSeeking
from daic.sampling.pool import Pool
from daic.sampling.sample import Sample
from daic.sampling.simulate import ScenarioSpec, simulate_pool
from daic.sampling.srs import SRS
from daic.sampling.stratified import StratifiedNeyman, neyman_allocation, stratify

# A known-accuracy pool: drifted (over-confident oracle), small so that thousands of repetitions
# run in seconds.
SPEC = ScenarioSpec("test", accuracy=0.88, oracle_accuracy=0.95, spread=3.0, temperature=1.5)
SIM = simulate_pool(SPEC, n=3000, seed=11)
TRUTH = SIM.accuracy


def _run(design, budget, batch, seed):
    rng = np.random.default_rng(seed)
    s, c = Sample.empty(), np.zeros(0, bool)
    while s.n_draws < budget:
        new = design.draw(SIM.pool, s, c, min(batch, budget - s.n_draws), rng)
        s = s.concat(new)
        c = np.concatenate([c, SIM.correct[new.indices]])
    return s, c


def test_neyman_allocation_hand_computed():
    # N_h S_h = 10 : 30 : 60 -> 20 labels split 2 : 6 : 12 (exact Neyman, integers).
    got = neyman_allocation(np.array([100, 100, 100]), np.array([0.1, 0.3, 0.6]), 20)
    assert got.tolist() == [2, 6, 12]
    # Sizes matter as much as spreads: N_h S_h = 500 : 250 -> 30 labels 20 : 10.
    assert neyman_allocation(np.array([1000, 500]), np.array([0.5, 0.5]), 30).tolist() == [20, 10]
    # Every stratum gets the minimum of 2, and never more than it holds.
    assert neyman_allocation(np.array([3, 1000]), np.array([0.5, 0.01]), 40).tolist()[0] == 3
    assert neyman_allocation(np.array([50, 50]), np.array([0.0, 1.0]), 10).tolist() == [2, 8]


def test_neyman_allocation_is_nested():
    sizes, sds = np.array([400, 300, 200, 100]), np.array([0.05, 0.2, 0.35, 0.5])
    step = neyman_allocation(sizes, sds, 30)
    step = neyman_allocation(sizes, sds, 45, start=step)
    assert step.tolist() == neyman_allocation(sizes, sds, 75).tolist()
    with pytest.raises(ValueError, match="cannot allocate"):
        neyman_allocation(sizes, sds, 1001)


def test_stratify_equal_sizes_by_confidence():
    strata = stratify(SIM.pool, 5)
    assert np.bincount(strata).tolist() == [600] * 5
    p = SIM.pool.p_correct
    assert p[strata == 0].max() <= p[strata == 1].min()


def test_stratified_draws_follow_the_allocation_without_replacement():
    d = StratifiedNeyman(n_strata=4)
    s, c = _run(d, 200, 50, seed=0)
    assert np.unique(s.indices).size == 200
    strata = d.strata(SIM.pool)
    assert np.array_equal(s.stratum, strata[s.indices])
    want = neyman_allocation(np.bincount(strata), d.oracle_sds(SIM.pool, strata), 200)
    assert np.bincount(s.stratum, minlength=4).tolist() == want.tolist()


DESIGNS = [SRS(), StratifiedNeyman(), FailureSeeking(), ActiveModelAssisted()]


@pytest.mark.parametrize("design", DESIGNS, ids=lambda d: d.name)
def test_estimators_are_unbiased_and_cover(design):
    """Mean over 1500 repetitions within 4 Monte-Carlo SEs of the truth; 95% intervals cover
    93-97.5% of the time. Budget 100 in two batches, so the adaptive designs adapt once."""
    reps = 1500
    est, cover, hw = np.empty(reps), np.empty(reps, bool), np.empty(reps)
    for r in range(reps):
        s, c = _run(design, 100, 50, seed=r)
        e = design.estimate(SIM.pool, s, c, 0.95)
        est[r], cover[r], hw[r] = e.accuracy, e.covers(TRUTH), e.half_width
        assert 0.0 <= e.lower <= e.accuracy <= e.upper <= 1.0
    mc_se = est.std(ddof=1) / np.sqrt(reps)
    assert abs(est.mean() - TRUTH) < 4 * mc_se, (est.mean(), TRUTH, mc_se)
    assert 0.93 <= cover.mean() <= 0.975, cover.mean()


def test_designs_find_more_failures_than_srs():
    found = {}
    for d in DESIGNS:
        found[d.name] = np.mean([d.estimate(SIM.pool, *_run(d, 100, 50, seed=r), 0.95).n_failures_found
                                 for r in range(40)])
    assert found["failure-seeking"] > 2 * found["srs"]
    assert found["active"] > 1.3 * found["srs"]
    assert found["stratified"] > 1.3 * found["srs"]


def test_without_replacement_designs_refuse_more_draws_than_the_pool():
    tiny = Pool(ids=[f"i{k}" for k in range(30)], p_correct=np.linspace(0.5, 1, 30), predictions=np.zeros(30, int))
    for d in (SRS(), StratifiedNeyman(n_strata=3)):
        with pytest.raises(ValueError, match="exceed the 30 inputs"):
            d.draw(tiny, Sample.empty(), np.zeros(0, bool), 31, np.random.default_rng(0))
    # With-replacement designs may draw more than the pool holds (inputs repeat, labeled once).
    s = FailureSeeking().draw(tiny, Sample.empty(), np.zeros(0, bool), 60, np.random.default_rng(0))
    assert s.n_draws == 60 and s.distinct.size <= 30


def test_bad_arguments_raise_clear_errors():
    s, c = _run(SRS(), 20, 20, seed=0)
    with pytest.raises(ValueError, match="correct must have shape"):
        SRS().estimate(SIM.pool, s, c[:-1], 0.95)
    with pytest.raises(ValueError, match="level"):
        SRS().estimate(SIM.pool, s, c, 1.5)
    with pytest.raises(ValueError, match="positive integer"):
        SRS().draw(SIM.pool, Sample.empty(), np.zeros(0, bool), 0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="needs selection probabilities"):
        ActiveModelAssisted().estimate(SIM.pool, s, c, 0.95)
    with pytest.raises(ValueError, match=">= 2 labels"):
        d = StratifiedNeyman(n_strata=10)
        d.estimate(SIM.pool, *_run(d, 12, 12, seed=0), 0.95)
    with pytest.raises(ValueError, match="uniform_share"):
        ActiveModelAssisted(uniform_share=0.0)
    with pytest.raises(ValueError, match="min_per_stratum"):
        StratifiedNeyman(min_per_stratum=1)


def test_skewness_uses_the_floored_variance():
    """When the model-based floor binds, the skew correction is scaled by it: a floor far above
    the sample variance leaves an (almost) symmetric interval, whatever the sample's skewness."""
    from daic.sampling.pps import mean_interval

    terms = np.array([1.0] * 45 + [0.2] * 5)  # strongly left-skewed sample
    _, lo, hi = mean_interval(terms, 0.95, skew_correction=True)
    m = terms.mean()
    assert (hi - m) / (m - lo) < 0.9  # skewed sample, no floor: clearly asymmetric
    floor = np.full(terms.size, 100 * terms.var(ddof=1))
    _, lo, hi = mean_interval(terms, 0.95, floor, skew_correction=True)
    assert (hi - m) / (m - lo) == pytest.approx(1.0, abs=0.02)


def test_active_interval_is_not_needlessly_wide_at_99_percent():
    """A calibrated oracle at 99% accuracy, one batch of 50 labels: the interval covers and its
    mean half-width stays within 1.7x of 1.96 x the estimator's spread (the sample skewness over
    the sample variance, before the floored scale, made it ~2x)."""
    spec = ScenarioSpec("clean-test", accuracy=0.99, oracle_accuracy=0.99, spread=3.5)
    sim = simulate_pool(spec, n=5000, seed=3)
    d = ActiveModelAssisted()
    est, cover, hw = [], [], []
    for r in range(600):
        s = d.draw(sim.pool, Sample.empty(), np.zeros(0, bool), 50, np.random.default_rng(r))
        e = d.estimate(sim.pool, s, sim.correct[s.indices], 0.95)
        est.append(e.accuracy), cover.append(e.covers(sim.accuracy)), hw.append(e.half_width)
    assert np.mean(cover) >= 0.95
    assert np.mean(hw) <= 1.7 * 1.96 * np.std(est), (np.mean(hw), np.std(est))


def test_skew_correction_widen_only():
    """widen_only: each endpoint is the outer of Hall's and the symmetric t endpoint (the skewed side grows,
    the other does not shrink)."""
    from scipy import stats

    from daic.sampling.pps import mean_interval

    terms = np.array([1.0] * 45 + [0.2] * 5)
    m, lo, hi = mean_interval(terms, 0.95, skew_correction=True, widen_only=True)
    _, _, hi_hall = mean_interval(terms, 0.95, skew_correction=True)
    _, lo_t, hi_t = mean_interval(terms, 0.95, skew_correction=False)
    half = stats.t.ppf(0.975, terms.size - 1) * terms.std(ddof=1) / np.sqrt(terms.size)
    assert (lo_t, hi_t) == pytest.approx((m - half, m + half))
    assert lo < lo_t - 0.1 * half  # the long (left) tail's side is extended
    assert hi == pytest.approx(hi_t)  # and the other side keeps the symmetric endpoint,
    assert hi_hall < hi_t - 0.05 * half  # which Hall's correction alone pulls in
