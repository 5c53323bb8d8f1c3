"""daic.sampling.paired: the paired comparison of two models on the same labeled draws, against
known truth (exact sign-test values, hand-computed samples, simulated pools with a known
difference; fixed seeds)."""
from __future__ import annotations

import numpy as np
import pytest

from daic.components.sample_operational.designs import make_design
from daic.components.sample_operational.holdout import split_holdout
from daic.sampling.paired import compare_paired, sign_test_p
from daic.sampling.pool import Pool
from daic.sampling.sample import Sample
from daic.sampling.simulate import challenger_correctness, simulate_pool


def _pool(n: int) -> Pool:
    return Pool(ids=np.array([f"i{k}" for k in range(n)]), p_correct=np.linspace(0.5, 1.0, n),
                predictions=np.zeros(n, np.int64))


def test_sign_test_exact_values():
    assert sign_test_p(4, 0) == pytest.approx(1 / 16)
    assert sign_test_p(5, 0) == pytest.approx(1 / 32)
    assert sign_test_p(3, 3) == pytest.approx(42 / 64)  # P(X >= 3), X ~ Bin(6, 1/2)
    assert sign_test_p(0, 0) == 1.0 and sign_test_p(0, 4) == 1.0


def test_srs_by_hand():
    """60 draws, B right and A wrong on k of them, equal elsewhere: difference k/60; better only
    once the sign test rejects at 5 % (k = 5: p = 1/32), though the t bound is positive from k = 3."""
    pool, n = _pool(1000), 60
    sample = Sample(indices=np.arange(n), batch=np.zeros(n, np.int64))
    a = np.ones(n, bool)
    for k, better in ((3, False), (4, False), (5, True)):
        a_k = a.copy()
        a_k[:k] = False
        c = compare_paired(make_design("srs"), pool, sample, a_k, a, 0.95)
        assert (c.difference, c.b_only, c.a_only) == (pytest.approx(k / n), k, 0)
        assert c.lower > 0 and c.better is better
    tie = compare_paired(make_design("srs"), pool, sample, a, a, 0.95)
    assert (tie.difference, tie.lower, tie.better) == (0.0, 0.0, False)
    assert "discordant 0 for / 0 against" in tie.describe()


def test_a_stratum_whose_draws_all_agree_still_has_a_variance():
    """Two discordant draws, both in one stratum of two draws: that stratum's sample variance is 0;
    the floor (the whole sample's) keeps the bound from collapsing onto the estimate."""
    pool = _pool(1000)
    design = make_design("stratified", {"n_strata": 5})
    strata = np.repeat(np.arange(5), 2)
    sample = Sample(indices=np.arange(0, 1000, 100), batch=np.zeros(10, np.int64), stratum=strata)
    b = np.ones(10, bool)
    a = b.copy()
    a[strata == 0] = False
    c = compare_paired(design, pool, sample, a, b, 0.95)
    assert c.difference == pytest.approx(0.2)  # stratum 0 weighs 1/5 and differs on both draws
    assert c.lower < 0 and not c.better


@pytest.mark.parametrize("design_name", ["srs", "stratified"])
@pytest.mark.parametrize("adversarial", [False, True])
def test_an_equal_challenger_is_rarely_called_better(design_name, adversarial):
    """Known truth: B as accurate as A on the pool (150 gains, 150 losses of 5,000). Over 300 cycles
    of 200 labels with 30 % held out, B is called better in at most 5 % of them (the one-sided level)."""
    sim = simulate_pool("drifted", n=5000, seed=1)
    rng = np.random.default_rng(3)
    a = sim.correct
    b = challenger_correctness(a, sim.pool.p_correct, 150, 150, adversarial, rng)
    assert b.mean() == a.mean()
    design = make_design(design_name)
    better = 0
    for _ in range(300):
        s = design.draw(sim.pool, Sample.empty(), np.zeros(0, bool), 200, rng)
        h = s.subset(split_holdout(s, 0.3, rng))
        better += compare_paired(design, sim.pool, h, a[h.indices], b[h.indices], 0.95).better
    assert better / 300 <= 0.05


@pytest.mark.parametrize("design_name", ["srs", "stratified"])
def test_a_much_better_challenger_is_found(design_name):
    """And it can fail the other way: B 10 points better (550 gains, 50 losses) is called better in
    most cycles, and the bound never lies above the true difference by much."""
    sim = simulate_pool("drifted", n=5000, seed=1)
    rng = np.random.default_rng(4)
    a = sim.correct
    b = challenger_correctness(a, sim.pool.p_correct, 550, 50, False, rng)
    truth = float(b.mean() - a.mean())
    design = make_design(design_name)
    better = covered = 0
    for _ in range(200):
        s = design.draw(sim.pool, Sample.empty(), np.zeros(0, bool), 200, rng)
        h = s.subset(split_holdout(s, 0.3, rng))
        c = compare_paired(design, sim.pool, h, a[h.indices], b[h.indices], 0.95)
        better += c.better
        covered += c.lower <= truth
    assert better / 200 >= 0.5
    assert covered / 200 >= 0.9


@pytest.mark.parametrize("design_name", ["failure-seeking", "active", "dual"])
def test_with_replacement_designs_are_refused(design_name):
    sim = simulate_pool("drifted", n=2000, seed=1)
    design = make_design(design_name)
    s = design.draw(sim.pool, Sample.empty(), np.zeros(0, bool), 60, np.random.default_rng(0))
    with pytest.raises(ValueError, match=f"with-replacement design '{design_name}'"):
        compare_paired(design, sim.pool, s, sim.correct[s.indices], sim.correct[s.indices], 0.95)


def test_bad_input_is_a_clear_error():
    pool = _pool(100)
    sample = Sample(indices=np.arange(10), batch=np.zeros(10, np.int64))
    ones = np.ones(10, bool)
    with pytest.raises(ValueError, match="correct must have shape"):
        compare_paired(make_design("srs"), pool, sample, ones[:9], ones, 0.95)
    with pytest.raises(ValueError, match="level must be in"):
        compare_paired(make_design("srs"), pool, sample, ones, ones, 1.5)
    with pytest.raises(ValueError, match="at least 2 labeled draws"):
        compare_paired(make_design("srs"), pool, sample.head(1), ones[:1], ones[:1], 0.95)
    with pytest.raises(ValueError, match="needs a sample with strata"):
        compare_paired(make_design("stratified"), pool, sample, ones, ones, 0.95)


def test_sample_subset_keeps_every_field_and_checks_its_mask():
    s = Sample(indices=np.arange(4), batch=np.zeros(4, np.int64), selection_prob=np.full(4, 0.1),
               stratum=np.array([0, 1, 0, 1]), control=np.full(4, 0.9), control_mean=np.full(4, 0.8))
    sub = s.subset(np.array([True, False, False, True]))
    assert sub.indices.tolist() == [0, 3] and sub.stratum.tolist() == [0, 1]
    assert sub.selection_prob.tolist() == [0.1, 0.1] and sub.control_mean.tolist() == [0.8, 0.8]
    assert s.subset(np.zeros(4, bool)).n_draws == 0
    with pytest.raises(ValueError, match="boolean with shape"):
        s.subset(np.array([0, 3]))  # positions, not a mask
    with pytest.raises(ValueError, match="boolean with shape"):
        s.subset(np.ones(3, bool))


def test_the_simulated_challenger_has_the_difference_it_is_asked_for():
    sim = simulate_pool("drifted", n=2000, seed=2)
    a = sim.correct
    for adversarial in (False, True):
        b = challenger_correctness(a, sim.pool.p_correct, 60, 20, adversarial, np.random.default_rng(0))
        assert int(b.sum()) - int(a.sum()) == 40 and int(np.sum(b & ~a)) == 60 and int(np.sum(a & ~b)) == 20
    hard = challenger_correctness(a, sim.pool.p_correct, 10, 0, True, np.random.default_rng(0))
    assert sim.pool.p_correct[hard & ~a].max() <= np.sort(sim.pool.p_correct[~a])[9]  # the least sure errors
    with pytest.raises(ValueError, match="cannot make"):
        challenger_correctness(a, sim.pool.p_correct, int((~a).sum()) + 1, 0, False, np.random.default_rng(0))
