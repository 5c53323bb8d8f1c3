"""sample-operational alone: reading the window, the draws, the held-out part, the record."""
from __future__ import annotations

import csv

import numpy as np
import pytest

from daic.components import cycle_store
from daic.components.sample_operational.designs import DESIGNS, make_design
from daic.components.sample_operational.holdout import split_holdout
from daic.components.sample_operational.logic import SampleConfig, run
from daic.components.sample_operational.operational import parse_time, read_window
from daic.sampling.simulate import simulate_pool
from daic.storage.parsed import CorruptObject

T0 = 1_700_000_000.0  # the fixture's first logged time; 60 s per batch of 50


def test_window_keeps_inputs_in_time_range(operational_store):
    store, stream = operational_store
    everything = read_window(store, "mnist")
    assert len(everything) == 400
    assert list(everything.ids) == list(stream.ids)
    late = read_window(store, "mnist", since=T0 + 4 * 60, until=T0 + 6 * 60)
    assert len(late) == 100
    assert list(late.ids) == list(stream.ids[200:300])


def test_window_errors_name_the_problem(operational_store):
    store, _ = operational_store
    with pytest.raises(ValueError, match="no operational inputs under .*operational/other/"):
        read_window(store, "other")
    with pytest.raises(ValueError, match="until .* must be after since"):
        read_window(store, "mnist", since=5.0, until=1.0)
    store.put_arrays("operational/broken/batch-000000.npz", ids=np.array(["a"]))
    with pytest.raises(CorruptObject, match="batch-000000.npz' lacks request_ids, times, inputs"):
        read_window(store, "broken")


def test_parse_time_accepts_iso_and_seconds():
    assert parse_time("", "since") is None
    assert parse_time("1700000000", "since") == T0
    assert parse_time("2023-11-14T22:13:20Z", "since") == T0
    with pytest.raises(ValueError, match="since must be Unix seconds or an ISO-8601 time"):
        parse_time("yesterday", "since")


@pytest.mark.parametrize("sampler", sorted(DESIGNS))
def test_run_writes_a_sample_record_each_design(operational_store, tmp_path, sampler):
    store, stream = operational_store
    csv_path = tmp_path / "draws.csv"
    config = SampleConfig(sampler=sampler, budget=60, cycle="c1", seed=1)
    result = run(store, config, dataset_path=str(csv_path))
    assert (result.cycle, result.pool_size, result.n_draws) == ("c1", 400, 60)
    record = cycle_store.read_sample(store, "c1")
    assert record.design["name"] == sampler
    assert record.pool.size == 400 and record.sample.n_draws == 60
    # every sampled input is a logged one, and its image is stored with it
    ids, inputs = cycle_store.read_sample_inputs(store, "c1")
    position = {i: k for k, i in enumerate(stream.ids)}
    np.testing.assert_array_equal(inputs, stream.images[[position[i] for i in ids]])
    # held-out and training inputs never overlap, and together cover the sample
    assert not set(record.train_ids) & set(record.holdout_ids)
    assert set(record.train_ids) | set(record.holdout_ids) == set(record.sampled_ids)
    rows = list(csv.DictReader(open(csv_path)))
    assert len(rows) == 60
    probs = np.array([float(r["inclusion_prob"]) for r in rows])
    assert np.all((probs > 0) & (probs <= 1))
    if sampler == "srs":
        np.testing.assert_allclose(probs, 60 / 400)
    # the record handed on carries the same probabilities, one per draw
    np.testing.assert_allclose(store.get_arrays("cycles/c1/sample.npz")["inclusion_prob"], probs, rtol=1e-5)


def test_same_seed_same_sample_other_seed_other_sample(operational_store):
    store, _ = operational_store
    for cycle, seed in (("a", 7), ("b", 7), ("c", 8)):
        run(store, SampleConfig(budget=40, cycle=cycle, seed=seed, since=str(T0)))
    records = [cycle_store.read_sample(store, k) for k in "abc"]
    a, b, c = (r.pool.ids[r.sample.indices] for r in records)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_budget_beyond_window_draws_the_whole_window(operational_store):
    store, _ = operational_store
    result = run(store, SampleConfig(sampler="srs", budget=1000, cycle="all", since=str(T0 + 7 * 60)))
    assert (result.pool_size, result.n_draws) == (50, 50)


@pytest.mark.parametrize("field,value,match", [
    ("budget", 2, "budget must be an integer >= 4"),
    ("sampler", "lucky", "unknown sampler 'lucky'"),
    ("sampler_params", {"n_strata": 3, "bins": 2}, r"has no parameter\(s\) \['bins'\]"),
    ("holdout_share", 1.0, r"holdout_share must be in \(0, 1\)"),
    ("cycle", "../x", "cycle id '../x' is invalid"),
    ("since", "soon", "since must be Unix seconds"),
])
def test_config_rejects_bad_values(field, value, match):
    with pytest.raises(ValueError, match=match):
        SampleConfig(**{field: value})


def test_holdout_keeps_two_per_stratum():
    design = make_design("stratified", {"n_strata": 6})
    pool = simulate_pool(_spec(), n=2000, seed=0).pool
    sample = design.draw(pool, _empty(), np.zeros(0, bool), 40, np.random.default_rng(0))
    mask = split_holdout(sample, 0.2, np.random.default_rng(1))
    per_stratum = np.bincount(sample.stratum[mask], minlength=6)
    assert np.all(per_stratum >= 2)
    with pytest.raises(ValueError, match="too small"):
        split_holdout(sample.head(3), 0.5, np.random.default_rng(0))


@pytest.mark.parametrize("sampler", sorted(DESIGNS))
def test_holdout_part_is_a_valid_sample_of_the_design(sampler):
    """Known truth: over 200 repetitions, the design's estimate on the held-out draws alone is
    unbiased for the pool's accuracy, and its interval covers the truth as often as the interval
    of a fresh sample of the same size does (the designs' own small-sample coverage is the
    sampling module's business; holding out must not make it worse)."""
    sim = simulate_pool(_spec(), n=3000, seed=11)
    design = make_design(sampler)
    truth = sim.accuracy
    estimates, covered, covered_fresh = [], [], []
    for rep in range(200):
        rng = np.random.default_rng(rep)
        sample = design.draw(sim.pool, _empty(), np.zeros(0, bool), 150, rng)
        held = sample.subset(split_holdout(sample, 0.4, rng))
        est = design.estimate(sim.pool, held, sim.correct[held.indices], 0.95)
        estimates.append(est.accuracy)
        covered.append(est.covers(truth))
        fresh = design.draw(sim.pool, _empty(), np.zeros(0, bool), held.n_draws, rng)
        covered_fresh.append(design.estimate(sim.pool, fresh, sim.correct[fresh.indices], 0.95).covers(truth))
    se = np.std(estimates) / np.sqrt(len(estimates))
    assert abs(np.mean(estimates) - truth) < 4 * se + 1e-3
    assert np.mean(covered) >= np.mean(covered_fresh) - 0.06


def _spec():
    from daic.sampling.simulate import ScenarioSpec

    return ScenarioSpec(name="shifted", accuracy=0.85, oracle_accuracy=0.93, temperature=1.5)


def _empty():
    from daic.sampling.sample import Sample

    return Sample.empty()


def _not_yet_written(store):
    """The store as a run sees it while the sidecar still holds the window's records in its
    buffer: no key is listed (until ``_written`` removes the stand-in: the flush lands)."""
    store.list = lambda prefix: []  # an instance attribute: the store keeps its type
    return store


def _written(store):
    del store.list


def test_an_empty_window_is_read_again_until_the_sidecars_write_lands(operational_store):
    from daic.components.sample_operational.logic import scan_window

    store, stream = operational_store
    late = _not_yet_written(store)
    since, until = T0 + 4 * 60, T0 + 6 * 60
    slept = []

    def sleep(s):
        slept.append(s)
        if len(slept) == 2:  # the flush lands during the second wait
            _written(late)

    config = SampleConfig(wait_for_inputs_s=60.0)
    scan = scan_window(late, config, since, until, clock=lambda: until + 5, sleep=sleep)
    assert scan.pool.size == 100 and len(slept) == 2 and all(0 < s <= 2.0 for s in slept)


def test_the_wait_for_an_empty_window_is_bounded(operational_store):
    from daic.components.sample_operational.logic import scan_window

    store, _ = operational_store
    never = _not_yet_written(store)
    until = T0 + 6 * 60
    now = [until + 1.0]
    slept = []

    def sleep(s):
        slept.append(s)
        now[0] += s

    with pytest.raises(ValueError, match="no operational inputs under .* in the window"):
        scan_window(never, SampleConfig(wait_for_inputs_s=7.0), T0, until, clock=lambda: now[0], sleep=sleep)
    assert sum(slept) == pytest.approx(6.0) and now[0] == pytest.approx(until + 7.0)  # up to until + 7 s, no more
    # a window that ended longer ago than the wait, or has no end, or no wait: no second read
    for config, end, clock in ((SampleConfig(), until, lambda: until + 61.0), (SampleConfig(), None, lambda: 0.0),
                               (SampleConfig(wait_for_inputs_s=0), until, lambda: until)):
        slept.clear()
        with pytest.raises(ValueError, match="no operational inputs"):
            scan_window(never, config, T0, end, clock=clock, sleep=sleep)
        assert slept == []
    with pytest.raises(ValueError, match="wait_for_inputs_s must be in"):
        SampleConfig(wait_for_inputs_s=-1)


def test_only_an_empty_window_is_waited_for_whatever_an_error_says(monkeypatch):
    """The wait is for the scan's EmptyWindow, by its type: another ValueError is raised at once,
    even one whose message reads like it."""
    from daic.components.sample_operational import logic

    def scan_pool(*args, **kwargs):
        raise ValueError("no operational inputs could be decoded")  # not an empty window

    monkeypatch.setattr(logic, "scan_pool", scan_pool)
    now, slept = [T0 + 61], []

    def sleep(s):
        slept.append(s)
        now[0] += s

    with pytest.raises(ValueError, match="could be decoded"):
        logic.scan_window(None, SampleConfig(wait_for_inputs_s=60.0), T0, T0 + 60, clock=lambda: now[0], sleep=sleep)
    assert slept == []
