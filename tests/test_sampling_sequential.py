"""The sequential driver: batches, the stopping rule, the budget, and coverage under the rule."""
import numpy as np
import pytest

from daic.sampling.active import ActiveModelAssisted
from daic.sampling.sequential import SequentialConfig, run_assessment
from daic.sampling.simulate import ScenarioSpec, simulate_pool
from daic.sampling.srs import SRS
from daic.sampling.stratified import StratifiedNeyman

SIM = simulate_pool(ScenarioSpec("t", accuracy=0.9, oracle_accuracy=0.95, spread=3.0, temperature=1.5), n=4000, seed=5)


class CountingLabeler:
    """The simulated human, remembering every request."""

    def __init__(self):
        self.requests = []

    def __call__(self, ids):
        self.requests.append(np.asarray(ids))
        return SIM.labeler(ids)


@pytest.mark.parametrize("design", [SRS(), StratifiedNeyman(), ActiveModelAssisted()], ids=lambda d: d.name)
def test_stops_at_the_first_batch_meeting_the_target(design):
    cfg = SequentialConfig(budget=2000, batch_size=40, target_half_width=0.04, min_draws=80)
    lab = CountingLabeler()
    run = run_assessment(design, SIM.pool, lab, cfg, np.random.default_rng(1))
    assert run.stop_reason == "target"
    # Recompute the stopping check after every batch: it fails before the last batch, holds at it.
    checks = []
    for k in range(len(run.trace)):
        n = (k + 1) * cfg.batch_size
        sub = run.sample.head(n)
        e = design.estimate(SIM.pool, sub, run.correct[:n], cfg.effective_stop_level)
        checks.append(n >= cfg.min_draws and e.half_width <= cfg.target_half_width)
    assert checks[-1] and not any(checks[:-1])
    # Batches respected, labels asked once per input, reported interval at the reported level.
    assert all(len(r) <= cfg.batch_size for r in lab.requests)
    asked = np.concatenate(lab.requests)
    assert asked.size == np.unique(asked).size == run.estimate.n_labels
    assert run.estimate.level == 0.95 and run.estimate.half_width <= cfg.target_half_width
    assert np.array_equal(run.labels, SIM.labeler(run.labeled_ids))


def test_budget_is_never_exceeded():
    cfg = SequentialConfig(budget=130, batch_size=50, target_half_width=0.001)
    lab = CountingLabeler()
    run = run_assessment(SRS(), SIM.pool, lab, cfg, np.random.default_rng(2))
    assert run.stop_reason == "budget"
    assert run.sample.n_draws == 130 and [len(r) for r in lab.requests] == [50, 50, 30]
    assert run.sample.batch.tolist() == [0] * 50 + [1] * 50 + [2] * 30


def test_without_target_spends_the_budget_and_rejects_budget_beyond_pool():
    run = run_assessment(SRS(), SIM.pool, SIM.labeler, SequentialConfig(budget=100), np.random.default_rng(0))
    assert run.stop_reason == "budget" and run.estimate.n_labels == 100
    with pytest.raises(ValueError, match="exceeds the 4000 inputs"):
        run_assessment(SRS(), SIM.pool, SIM.labeler, SequentialConfig(budget=4001), np.random.default_rng(0))


def test_coverage_holds_under_the_stopping_rule():
    """Stopping on the half-width must not break the 95% interval (SRS, the design whose
    half-width depends most on the estimate)."""
    cfg = SequentialConfig(budget=3000, batch_size=50, target_half_width=0.03)
    reps = 400
    cover = np.empty(reps, bool)
    for r in range(reps):
        run = run_assessment(SRS(), SIM.pool, SIM.labeler, cfg, np.random.default_rng(100 + r))
        cover[r] = run.estimate.covers(SIM.accuracy)
    assert cover.mean() >= 0.93, cover.mean()


def test_bad_config_and_bad_labeler():
    with pytest.raises(ValueError, match="budget"):
        SequentialConfig(budget=0)
    with pytest.raises(ValueError, match="target_half_width"):
        SequentialConfig(budget=10, target_half_width=0.7)
    with pytest.raises(ValueError, match="stop_level"):
        SequentialConfig(budget=10, stop_level=0.9)
    with pytest.raises(ValueError, match="labeler returned shape"):
        run_assessment(SRS(), SIM.pool, lambda ids: np.zeros(len(ids) + 1, int), SequentialConfig(budget=10),
                       np.random.default_rng(0))
    with pytest.raises(ValueError, match="integer class labels"):
        run_assessment(SRS(), SIM.pool, lambda ids: np.zeros(len(ids)), SequentialConfig(budget=10),
                       np.random.default_rng(0))
