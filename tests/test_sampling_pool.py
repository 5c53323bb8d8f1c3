"""Pool validation and the known-truth simulator used by the sampling tests and benchmark."""
import numpy as np
import pytest

from daic.sampling.pool import Pool
from daic.sampling.simulate import SCENARIOS, ScenarioSpec, simulate_pool


def _pool(**over):
    kw = dict(ids=["a", "b", "c"], p_correct=[0.9, 0.5, 1.0], predictions=[1, 2, 3])
    kw.update(over)
    return Pool(**kw)


def test_pool_accepts_valid_input_and_freezes_arrays():
    p_in = np.array([0.9, 0.5, 1.0])
    pool = _pool(p_correct=p_in)
    assert pool.size == 3
    assert pool.predictions.dtype == np.int64
    assert pool.oracle_accuracy == pytest.approx(0.8)
    assert list(pool.order_by_p) == [1, 0, 2]
    with pytest.raises(ValueError):
        pool.p_correct[0] = 0.1  # read-only
    p_in[0] = 0.0  # the caller's array stays theirs
    assert pool.p_correct[0] == 0.9


@pytest.mark.parametrize(
    "over, match",
    [
        (dict(p_correct=[0.9, 1.2, 0.1]), "p_correct must lie in \\[0, 1\\].*1.2"),
        (dict(p_correct=[0.9, -0.1, 0.1]), "p_correct must lie in \\[0, 1\\]"),
        (dict(p_correct=[0.9, np.nan, 0.1]), "p_correct must be finite.*nan"),
        (dict(p_correct=[0.9, 0.1]), "p_correct must have shape \\(3,\\)"),
        (dict(predictions=[1.0, 2.0, 3.0]), "predictions must be integer"),
        (dict(predictions=[1, 2]), "predictions must have shape"),
        (dict(ids=["a", "a", "c"]), "ids must be unique"),
        (dict(ids=[]), "non-empty"),
        (dict(aux=[0.1, np.inf, 0.2]), "aux must be finite"),
    ],
)
def test_pool_rejects_bad_input_naming_the_field(over, match):
    if over.get("ids") == []:
        over = dict(ids=[], p_correct=[], predictions=np.zeros(0, np.int64))
    with pytest.raises(ValueError, match=match):
        _pool(**over)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_simulated_pools_hit_their_accuracies(name):
    sim = simulate_pool(name, n=20_000, seed=3)
    spec = SCENARIOS[name]
    # Bernoulli noise on 20k inputs: sd <= 0.0035, so 0.015 is > 4 sd.
    assert abs(sim.accuracy - spec.accuracy) < 0.015
    assert abs(sim.pool.oracle_accuracy - spec.oracle_accuracy) < 0.005
    # Labels agree with correctness, and the simulated labeler returns them.
    assert np.array_equal(sim.labels == sim.pool.predictions, sim.correct)
    pick = sim.pool.ids[[5, 0, 17]]
    assert np.array_equal(sim.labeler(pick), sim.labels[[5, 0, 17]])


def test_shifted_scenarios_have_overconfident_oracles_and_informative_scores():
    for name in ("drifted", "severe", "label-shift"):
        sim = simulate_pool(name, n=10_000, seed=1)
        assert sim.pool.oracle_accuracy > sim.accuracy + 0.03
        # Informative: inputs the oracle ranks in its bottom fifth fail far more often.
        low = sim.pool.p_correct < np.quantile(sim.pool.p_correct, 0.2)
        assert sim.correct[low].mean() < sim.correct[~low].mean() - 0.15


def test_simulator_is_reproducible_and_validates():
    a, b = simulate_pool("drifted", n=500, seed=9), simulate_pool("drifted", n=500, seed=9)
    assert np.array_equal(a.correct, b.correct) and np.array_equal(a.pool.p_correct, b.pool.p_correct)
    with pytest.raises(ValueError, match="unknown scenario"):
        simulate_pool("nope")
    with pytest.raises(ValueError, match="temperature"):
        ScenarioSpec("x", accuracy=0.9, oracle_accuracy=0.9, temperature=0.5)
    with pytest.raises(KeyError, match="not in the pool"):
        a.labeler(np.array(["missing-id"]))
