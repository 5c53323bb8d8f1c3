"""The teach-and-measure ("dual") design: a deterministic mixture of estimation and failure-seeking
draws with balance-heuristic weights (Veach & Guibas 1995; Owen & Zhou 2000). Checked against
known truth on simulated pools with fixed seeds, like tests/test_sampling_designs.py."""
import numpy as np
import pytest

from daic.components.sample_operational.designs import inclusion_probabilities, make_design
from daic.sampling.active import ActiveModelAssisted
from daic.sampling.dual import TeachAndMeasure, split_batch
from daic.sampling.failure_seeking import FailureSeeking
from daic.sampling.pps import mixed_probabilities
from daic.sampling.sample import Sample
from daic.sampling.sequential import SequentialConfig, run_assessment
from daic.sampling.simulate import ScenarioSpec, simulate_pool
from daic.sampling.stratified import StratifiedNeyman

SPEC = ScenarioSpec("test", accuracy=0.88, oracle_accuracy=0.95, spread=3.0, temperature=1.5)
SIM = simulate_pool(SPEC, n=3000, seed=11)
DRIFT = simulate_pool(ScenarioSpec("drift", accuracy=0.70, oracle_accuracy=0.9, spread=2.0, temperature=2.0),
                      n=3000, seed=12)


def _run(design, sim, budget, batch, seed):
    rng = np.random.default_rng(seed)
    s, c = Sample.empty(), np.zeros(0, bool)
    while s.n_draws < budget:
        new = design.draw(sim.pool, s, c, min(batch, budget - s.n_draws), rng)
        s = s.concat(new)
        c = np.concatenate([c, sim.correct[new.indices]])
    return s, c


@pytest.mark.parametrize("sim", [SIM, DRIFT], ids=["overconfident", "drifted"])
def test_unbiased_and_covers_known_truth(sim):
    """Mean of 1000 estimates within 4 Monte-Carlo SEs of the truth; 95% intervals cover 93-97.5%.
    Two batches, so the working model is recalibrated once between them."""
    design = TeachAndMeasure()
    reps = 1000
    est, cover = np.empty(reps), np.empty(reps, bool)
    for r in range(reps):
        e = design.estimate(sim.pool, *_run(design, sim, 100, 50, seed=r), 0.95)
        est[r], cover[r] = e.accuracy, e.covers(sim.accuracy)
        assert 0.0 <= e.lower <= e.accuracy <= e.upper <= 1.0
    mc_se = est.std(ddof=1) / np.sqrt(reps)
    assert abs(est.mean() - sim.accuracy) < 4 * mc_se, (est.mean(), sim.accuracy, mc_se)
    assert 0.93 <= cover.mean() <= 0.975, cover.mean()


def test_serves_both_ends():
    """More mispredictions found than the estimation designs, a narrower interval than the
    failure-seeking design (means over 150 runs of 200 draws in batches of 50)."""
    designs = [StratifiedNeyman(), ActiveModelAssisted(), FailureSeeking(), TeachAndMeasure()]
    found, width = {}, {}
    for d in designs:
        runs = [d.estimate(SIM.pool, *_run(d, SIM, 200, 50, seed=r), 0.95) for r in range(150)]
        found[d.name] = np.mean([e.n_failures_found for e in runs])
        width[d.name] = np.mean([e.half_width for e in runs])
    assert found["dual"] > 1.2 * max(found["stratified"], found["active"]), found
    assert found["dual"] > 0.8 * found["failure-seeking"], found
    assert width["dual"] < width["failure-seeking"], width


def test_selection_probabilities_are_the_mixture():
    """Every draw carries q = (n_est q_est + n_fail q_fail) / n, computed here independently; a
    failure share of 0 or 1 gives one component's probabilities."""
    d = TeachAndMeasure(failure_share=0.4, adapt=False, initial_uniform_share=None)
    s = d.draw(SIM.pool, Sample.empty(), np.zeros(0, bool), 50, np.random.default_rng(0))
    f = SIM.pool.p_correct
    q_est = mixed_probabilities(np.sqrt(f * (1 - f)), 0.2)
    q_fail = mixed_probabilities(1 - f, 0.2)
    assert split_batch(50, 0.4) == (30, 20)
    assert np.allclose(s.selection_prob, ((30 * q_est + 20 * q_fail) / 50)[s.indices])
    assert np.isclose(((30 * q_est + 20 * q_fail) / 50).sum(), 1.0)
    for share, q in ((0.0, q_est), (1.0, q_fail)):
        one = TeachAndMeasure(failure_share=share, adapt=False, initial_uniform_share=None)
        s1 = one.draw(SIM.pool, Sample.empty(), np.zeros(0, bool), 20, np.random.default_rng(1))
        assert np.allclose(s1.selection_prob, q[s1.indices])
    # known first-order inclusion probabilities travel with the sample (the sampling step stores them)
    pi = inclusion_probabilities(d, SIM.pool, s)
    assert np.allclose(pi, 1 - (1 - s.selection_prob) ** 50) and np.all((pi > 0) & (pi <= 1))


def test_failure_share_draws_toward_failures():
    """With share 1 the draws' mean P(failure) is well above the active design's (share 0)."""
    rng = np.random.default_rng(3)
    f = SIM.pool.p_correct
    mean_fail = {}
    for share in (0.0, 1.0):
        d = TeachAndMeasure(failure_share=share, adapt=False, initial_uniform_share=None)
        s = d.draw(SIM.pool, Sample.empty(), np.zeros(0, bool), 2000, rng)
        mean_fail[share] = float(np.mean(1 - f[s.indices]))
    assert mean_fail[1.0] > 1.3 * mean_fail[0.0], mean_fail


def test_sequential_mode_stops_at_the_target():
    cfg = SequentialConfig(budget=1000, batch_size=50, target_half_width=0.05)
    run = run_assessment(TeachAndMeasure(), SIM.pool, SIM.labeler, cfg, np.random.default_rng(0))
    assert run.stop_reason == "target" and run.estimate.half_width <= 0.05
    assert run.sample.n_draws < 1000 and run.estimate.covers(SIM.accuracy)


def test_by_name_and_bad_parameters():
    assert isinstance(make_design("dual", {"failure_share": 0.3}), TeachAndMeasure)
    with pytest.raises(ValueError, match="failure_share must be in"):
        TeachAndMeasure(failure_share=1.5)
    with pytest.raises(ValueError, match="failure_share must be in"):
        make_design("dual", {"failure_share": True})
    with pytest.raises(ValueError, match="needs selection probabilities"):
        TeachAndMeasure().estimate(SIM.pool, Sample(indices=[0, 1], batch=[0, 0]), np.array([True, False]), 0.95)
