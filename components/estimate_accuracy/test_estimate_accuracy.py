"""estimate-accuracy alone: the drop rule's truth table, and the estimate on labeled samples."""
from __future__ import annotations

import json

import numpy as np
import pytest

from daic.components import cycle_store
from daic.components.collect_labels.logic import CollectConfig
from daic.components.collect_labels.logic import run as collect
from daic.components.estimate_accuracy.decision import DropRule, decide_drop
from daic.components.estimate_accuracy.logic import EstimateConfig, run
from daic.components.sample_operational.logic import SampleConfig
from daic.sidecar.records import read_operational
from daic.components.sample_operational.logic import run as sample

SPEC = json.dumps({"name": "sudden", "seed": 3, "batch_size": 50, "n_steps": 8, "drift_start": 4,
                   "corruption": "translate", "severity": 3})


@pytest.mark.parametrize("accuracy,lower,upper,threshold,outcome", [
    (0.70, 0.65, 0.75, 0.80, "confirmed"),      # whole interval below
    (0.70, 0.65, 0.79999, 0.80, "confirmed"),   # upper just below
    (0.70, 0.65, 0.80, 0.80, "inconclusive"),   # upper touches the threshold
    (0.78, 0.72, 0.84, 0.80, "inconclusive"),   # estimate below, interval straddles
    (0.80, 0.75, 0.85, 0.80, "no-drop"),        # estimate on the threshold
    (0.90, 0.85, 0.95, 0.80, "no-drop"),        # well above
    (0.85, 0.81, 0.88, 0.80, "no-drop"),        # interval wholly above
])
def test_drop_truth_table(accuracy, lower, upper, threshold, outcome):
    decision = decide_drop(accuracy, lower, upper, threshold)
    assert decision.outcome == outcome
    assert decision.confirmed == (outcome == "confirmed")


def test_threshold_comes_from_the_operator_or_the_reference():
    assert DropRule(threshold=0.9).effective_threshold(None) == 0.9
    assert DropRule(threshold=0.9).effective_threshold(0.99) == 0.9
    assert DropRule(max_drop=0.05).effective_threshold(0.98) == pytest.approx(0.93)
    with pytest.raises(ValueError, match="no threshold"):
        DropRule().effective_threshold(None)
    with pytest.raises(ValueError, match="max_drop must be in"):
        DropRule(max_drop=-0.1)
    with pytest.raises(ValueError, match="need 0 <= lower <= accuracy <= upper <= 1"):
        decide_drop(0.5, 0.6, 0.7, 0.8)


@pytest.fixture
def labeled(operational_store):
    store, stream = operational_store
    sample(store, SampleConfig(sampler="stratified", budget=120, cycle="c1", seed=4,
                               since=str(1_700_000_000 + 4 * 60)))  # the drifted half only
    collect(store, "c1", CollectConfig(backend="simulated", simulated_scenario=SPEC))
    window = read_operational(store, "mnist", since=1_700_000_000 + 4 * 60)  # the pool, as logged
    truth = dict(zip(stream.ids, stream.labels))
    true_accuracy = float(np.mean(window.predictions == np.array([truth[i] for i in window.ids])))
    return store, true_accuracy


def test_estimate_covers_the_pools_true_accuracy_and_confirms_the_drop(labeled):
    from daic.operators.status import RunResult

    store, true_accuracy = labeled
    result = run(store, "c1", EstimateConfig(rule=DropRule(threshold=0.7)))
    est = result.estimate
    assert est.lower <= true_accuracy <= est.upper
    assert est.method.startswith("stratified")
    assert result.decision.confirmed  # the translated stream: ~10 % accuracy vs a 0.7 threshold
    saved = store.get_json(cycle_store.key("c1", "estimate.json"))
    assert saved["decision"]["outcome"] == "confirmed"
    # the result record is what the operator reads
    parsed = RunResult.model_validate(store.get_json(cycle_store.key("c1", "result.json")))
    assert parsed.drop_confirmed and parsed.labels_used == est.n_labels


def test_no_drop_when_threshold_is_low(labeled):
    store, true_accuracy = labeled
    result = run(store, "c1", EstimateConfig(rule=DropRule(threshold=0.01)))
    assert result.decision.outcome == "no-drop"
    assert store.get_json(cycle_store.key("c1", "result.json"))["drop_confirmed"] is False


def test_unsure_labels_are_left_out_and_counted(labeled):
    store, _ = labeled
    arrays = store.get_arrays(cycle_store.key("c1", "labels.npz"))
    labels = arrays["labels"].copy()
    labels[:3] = cycle_store.UNLABELED
    cycle_store.write_labels(store, "c1", arrays["ids"], labels, "web")
    result = run(store, "c1", EstimateConfig(rule=DropRule(threshold=0.7)))
    assert result.n_unlabeled_draws == 3
    assert result.estimate.n_draws == cycle_store.read_sample(store, "c1").sample.n_draws - 3


def test_config_errors():
    with pytest.raises(ValueError, match="level must be in"):
        EstimateConfig(level=1.5)
    with pytest.raises(ValueError, match="reference_accuracy must be <= 1"):
        EstimateConfig(reference_accuracy=2.0)


def test_record_says_how_many_labels_srs_would_have_needed(operational_store):
    """Ground truth: an SRS sample with the Wilson interval needed exactly its own size for its
    half-width, so the record must say n; a stratified sample of the same size records Wilson's n
    for the half-width it reached."""
    from daic.components.estimate_accuracy.logic import srs_labels_needed
    from daic.sampling.sample import Estimate

    def wilson_half_width(p, n, z=1.959963984540054):  # Wilson (1927), written out independently
        return z / (1 + z * z / n) * (p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5

    # p = 0.9, +-0.02 at 95 %: 867 labels give 0.020003, 868 give 0.019991 (normal approximation: 864)
    assert wilson_half_width(0.9, 867) > 0.02 >= wilson_half_width(0.9, 868)
    assert srs_labels_needed(Estimate(0.9, 0.88, 0.92, 0.95, 10, 10, 1, "x")) == 868
    assert srs_labels_needed(Estimate(1.0, 1.0, 1.0, 0.95, 10, 10, 0, "x")) == 1  # a zero-width interval
    store, _ = operational_store
    since = str(1_700_000_000 + 4 * 60)
    sample(store, SampleConfig(sampler="srs", sampler_params={"interval": "wilson"}, budget=80, cycle="w",
                               seed=2, since=since))
    collect(store, "w", CollectConfig(backend="simulated", simulated_scenario=SPEC))
    result = run(store, "w", EstimateConfig(rule=DropRule(threshold=0.7)))
    saved = store.get_json(cycle_store.key("w", "estimate.json"))
    assert result.estimate.method == "srs/wilson" and result.estimate.n_labels == 80
    assert saved["srs_labels_needed"] == result.srs_labels_needed == 80


def test_a_late_estimate_attempt_leaves_what_evaluate_wrote(labeled):
    """A retried estimate step finishing after evaluate (KFP retries; the concurrency audit) fills
    the fields evaluate owns only where they are absent, and never wipes them."""
    store, _ = labeled
    first = run(store, "c1", EstimateConfig(rule=DropRule(threshold=0.7)))
    key = cycle_store.key("c1", "result.json")
    fresh = store.get_json(key)
    assert {fresh[k] for k in ("champion_accuracy", "challenger_version", "challenger_accuracy")} == {None}
    evaluated = {"champion_version": "v0001", "champion_accuracy": 0.6, "challenger_version": "v0002",
                 "challenger_accuracy": 0.9}
    store.put_json(key, {**fresh, **evaluated})  # what evaluate merges
    again = run(store, "c1", EstimateConfig(rule=DropRule(threshold=0.7)))
    saved = store.get_json(key)
    assert {k: saved[k] for k in evaluated} == evaluated
    assert saved["labels_used"] == again.estimate.n_labels == first.estimate.n_labels
