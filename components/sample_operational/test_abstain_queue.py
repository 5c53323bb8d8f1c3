"""Abstained inputs queued for labeling (issue 21, item 4): beside the sample, outside its estimate.

The records are the sidecar's format with the model server's abstain flag (here: P(correct) < 0.5,
the rule daic.serving.abstain applies); the sample, the labels (simulated: the scenario's truth)
and the estimate run as in the pipeline."""
from __future__ import annotations

import json

import numpy as np
import pytest

from daic.components import cycle_store
from daic.components.collect_labels.logic import CollectConfig
from daic.components.collect_labels.logic import run as collect
from daic.components.estimate_accuracy.logic import offline_estimate
from daic.components.sample_operational.logic import SampleConfig
from daic.components.sample_operational.logic import run as sample
from daic.sampling.abstain import queue_abstained

SPEC = json.dumps({"name": "sudden", "seed": 3, "batch_size": 50, "n_steps": 8, "drift_start": 4,
                   "corruption": "translate", "severity": 3})


def test_queue_is_the_undrawn_abstained_lowest_p_first_capped():
    p = np.array([0.9, 0.1, 0.3, 0.2, 0.05, 0.3])
    assert queue_abstained(np.array([1, 2, 3, 4, 5]), np.array([4]), p, cap=2).tolist() == [1, 3]
    assert queue_abstained(np.array([2, 5, 2]), np.array([], np.int64), p, cap=10).tolist() == [2, 5]  # tie: lower first
    assert queue_abstained(np.array([1, 2]), np.array([0]), p, cap=0).tolist() == []
    with pytest.raises(ValueError, match="cap must be an integer >= 0"):
        queue_abstained(np.array([1]), np.array([0]), p, cap=-1)
    with pytest.raises(ValueError, match="must lie in the pool"):
        queue_abstained(np.array([9]), np.array([0]), p, cap=1)


def test_abstained_inputs_are_labeled_trained_on_and_kept_out_of_the_estimate(abstaining_store):
    store, stream = abstaining_store
    truth = dict(zip(stream.ids, stream.labels.tolist()))
    base = SampleConfig(sampler="stratified", budget=40, seed=2, cycle="plain", abstained_cap=0)
    sample(store, base)
    sample(store, SampleConfig(sampler="stratified", budget=40, seed=2, cycle="queued", abstained_cap=25))
    plain, queued = cycle_store.read_sample(store, "plain"), cycle_store.read_sample(store, "queued")
    # The design's draws and probabilities are those of the run without a queue.
    assert plain.pool.ids[plain.sample.indices].tolist() == queued.pool.ids[queued.sample.indices].tolist()
    np.testing.assert_array_equal(store.get_arrays("cycles/plain/sample.npz")["inclusion_prob"],
                                  store.get_arrays("cycles/queued/sample.npz")["inclusion_prob"])
    # The queue: abstained, not drawn, lowest P(correct) first, at most the cap.
    drawn = set(plain.sampled_ids)
    from daic.sidecar.records import read_operational

    logged = read_operational(store, "mnist")
    candidates = [(p, i) for i, p, a in zip(logged.ids, logged.p_correct, logged.abstained) if a and i not in drawn]
    assert len(candidates) > 25, "the drifted stream abstains on many inputs"
    want = sorted(i for _, i in sorted(candidates)[:25])
    assert sorted(queued.queued_ids.tolist()) == want
    assert queued.meta["abstained_queued"] == 25 and queued.meta["abstained_in_window"] == int(logged.abstained.sum())
    assert set(queued.queued_ids) <= set(queued.train_ids) and not set(queued.queued_ids) & set(queued.holdout_ids)
    # Labeled with the sample (simulated labeler: the scenario's truth), trained on, not held out.
    result = collect(store, "queued", CollectConfig(backend="simulated", simulated_scenario=SPEC,
                                                    train_weighting="inclusion"))
    labels = cycle_store.read_labels(store, "queued")
    assert set(labels) == set(queued.sampled_ids) | set(queued.queued_ids) and result.n_labeled == len(labels)
    assert all(labels[i] == truth[i] for i in labels)
    train = store.get_arrays(cycle_store.train_labels_key("queued"))
    assert set(queued.queued_ids) <= set(train["ids"]) and np.all(np.isfinite(train["weights"]))
    # The queued inputs are mostly mispredicted: what a retrained model needs to see.
    position = {i: k for k, i in enumerate(queued.pool.ids)}
    wrong = np.mean([labels[i] != queued.pool.predictions[position[i]] for i in queued.queued_ids])
    assert wrong > 0.5
    # The estimate uses the design's draws only: the same as without the queue, given the same labels.
    plain_labels = {i: labels[i] for i in plain.sampled_ids}
    a, _ = offline_estimate(plain, plain_labels, 0.95)
    b, _ = offline_estimate(queued, labels, 0.95)
    assert (a.accuracy, a.lower, a.upper, a.n_labels) == (b.accuracy, b.lower, b.upper, b.n_labels)


def test_records_without_the_flag_queue_nothing(operational_store):
    store, _ = operational_store
    sample(store, SampleConfig(sampler="stratified", budget=40, seed=2, cycle="c1"))
    record = cycle_store.read_sample(store, "c1")
    assert record.queued is None and record.meta["abstained_queued"] == 0
    assert record.label_ids.tolist() == record.sampled_ids.tolist()
