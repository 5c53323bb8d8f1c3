"""Labels in rounds (.rounds): the collect-labels step drives the rounds against each backend
(simulated, web, feedback, Label Studio's stand-in at the HTTP boundary), the design adapts between
rounds, and the loop stops at the target half-width or the budget. The person (or server) answers
inside the injected ``sleep``: what happens while the step waits, without real waiting."""
from __future__ import annotations

import json

import numpy as np
import pytest

from daic.components import cycle_store
from daic.components.collect_labels.label_studio import LabelStudioBackend, LabelStudioClient
from daic.components.collect_labels.logic import CollectConfig, run
from daic.components.estimate_accuracy.logic import EstimateConfig
from daic.components.estimate_accuracy.logic import run as estimate
from daic.components.sample_operational.logic import SampleConfig
from daic.components.sample_operational.logic import run as sample
from daic.components.testing.label_studio_standin import StandInServer
from daic.labeling import LabelBook

SPEC = json.dumps({"name": "sudden", "seed": 3, "batch_size": 50, "n_steps": 8, "drift_start": 4,
                   "corruption": "translate", "severity": 3})


class Clock:
    """A fake clock whose sleep first lets ``act`` answer what is pending."""

    def __init__(self, act=None):
        self.now, self.act, self.sleeps = 0.0, act, 0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.sleeps += 1
        if self.act:
            self.act()


def _rounds(store):
    return store.get_json(cycle_store.key("c1", "rounds.json"))["rounds"]


@pytest.mark.parametrize("sampler", ["stratified", "dual", "srs"])
def test_simulated_rounds_spend_the_budget_in_nested_rounds(operational_store, sampler):
    store, stream = operational_store
    truth = dict(zip(stream.ids, stream.labels.tolist()))
    sample(store, SampleConfig(sampler=sampler, budget=80, round_size=20, cycle="c1", seed=2))
    first = cycle_store.read_sample(store, "c1")
    assert first.sample.n_draws == 20 and first.meta["rounds"]["budget"] == 80
    result = run(store, "c1", CollectConfig(backend="simulated", simulated_scenario=SPEC))
    record = cycle_store.read_sample(store, "c1")
    rounds = _rounds(store)
    assert [r["n_draws"] for r in rounds] == [20, 40, 60, 80] and rounds[-1]["stop"] == "budget"
    assert [r["stop"] for r in rounds[:-1]] == [None] * 3
    assert record.sample.n_draws == 80 and record.sample.n_batches == 4
    # the first round's draws keep their place: the later rounds only append
    first_ids = first.pool.ids[first.sample.indices]
    assert record.pool.ids[record.sample.indices[:20]].tolist() == first_ids.tolist()
    assert record.holdout[:20].tolist() == first.holdout.tolist()
    # every drawn input is labeled with its truth and its image is the logged one
    labels = cycle_store.read_labels(store, "c1")
    assert set(labels) == set(record.sampled_ids) and all(labels[i] == truth[i] for i in labels)
    ids, inputs = cycle_store.read_sample_inputs(store, "c1")
    where = {i: k for k, i in enumerate(stream.ids)}
    assert np.allclose(inputs, stream.images[[where[i] for i in ids]])
    assert result.n_labeled == len(labels) and result.n_holdout == len(record.holdout_ids)
    # inclusion probabilities for every draw, and the estimate step reads the grown record
    assert store.get_arrays(cycle_store.key("c1", "sample.npz"))["inclusion_prob"].shape == (80,)
    out = estimate(store, "c1", EstimateConfig(reference_accuracy=0.9))
    assert out.estimate.n_draws == 80 and out.estimate.lower <= rounds[-1]["accuracy"] <= out.estimate.upper
    if sampler != "srs":  # without replacement for srs; the with-replacement one may repeat inputs
        assert len(set(record.holdout_ids)) >= 2


def test_rounds_stop_at_the_target_half_width(operational_store):
    store, _ = operational_store
    sample(store, SampleConfig(sampler="active", budget=300, round_size=25, cycle="c1", seed=1,
                               target_half_width=0.2, min_draws=50))
    run(store, "c1", CollectConfig(backend="simulated", simulated_scenario=SPEC))
    rounds = _rounds(store)
    assert rounds[-1]["stop"] == "target" and rounds[-1]["half_width"] <= 0.2
    assert rounds[-1]["n_draws"] < 300 and rounds[-1]["n_draws"] >= 50
    assert all(r["n_draws"] < 50 or r["half_width"] > 0.2 for r in rounds[:-1])


def test_rounds_stop_when_the_window_is_exhausted(operational_store):
    store, _ = operational_store
    sample(store, SampleConfig(sampler="srs", budget=1000, round_size=150, cycle="c1", seed=1))
    run(store, "c1", CollectConfig(backend="simulated", simulated_scenario=SPEC))
    rounds = _rounds(store)
    assert [r["n_draws"] for r in rounds] == [150, 300, 400] and rounds[-1]["stop"] == "pool"


def test_web_rounds_grow_the_task_and_keep_the_answers(operational_store):
    store, stream = operational_store
    truth = dict(zip(stream.ids, stream.labels.tolist()))
    sample(store, SampleConfig(sampler="stratified", budget=60, round_size=20, cycle="c1", seed=2))
    book = LabelBook(store, "c1")
    seen_totals = []

    def person():  # labels everything the page shows, as a person with the page open would
        if not store.exists(book.prefix + "task.json"):
            return
        fresh = LabelBook(store, "c1")
        seen_totals.append(len(fresh.task.ids))
        done = fresh.answers()
        for i in fresh.task.ids:
            if i not in done:
                fresh.record(i, truth[i], labeler="ann")

    clock = Clock(person)
    result = run(store, "c1", CollectConfig(backend="web", timeout_s=3600, poll_s=5), clock=clock, sleep=clock.sleep)
    record = cycle_store.read_sample(store, "c1")
    assert sorted(set(seen_totals)) == [20, 40, 60]  # the person saw the task grow, round by round
    assert LabelBook(store, "c1").task.ids == record.sampled_ids.tolist()
    assert result.n_labeled == len(record.sampled_ids) and [r["n_draws"] for r in _rounds(store)] == [20, 40, 60]
    assert all(a.labeler == "ann" for a in LabelBook(store, "c1").answers().values())


def test_feedback_rounds_wait_for_ground_truth_of_each_round(operational_store):
    store, stream = operational_store
    truth = dict(zip(stream.ids, stream.labels.tolist()))
    sample(store, SampleConfig(sampler="srs", budget=45, round_size=15, cycle="c1", seed=4))
    sent = set()

    def clerk():  # late ground truth for what the cycle sampled, as the sidecar stores feedback
        ids = [i for i in cycle_store.read_sample(store, "c1").sampled_ids if i not in sent]
        if ids:
            n = len(sent)
            store.put_arrays(f"operational/mnist/feedback-20231114T00000{n % 10}000000Z-{n:08d}.npz",
                             ids=np.array(ids), times=np.full(len(ids), 1.7e9 + n),
                             labels=np.array([truth[i] for i in ids]))
            sent.update(ids)

    clock = Clock(clerk)
    result = run(store, "c1", CollectConfig(backend="feedback", timeout_s=3600, poll_s=5), clock=clock,
                 sleep=clock.sleep)
    assert result.n_labeled == 45 and [r["n_draws"] for r in _rounds(store)] == [15, 30, 45]
    assert clock.sleeps == 3  # one wait per round, each answered by the next feedback


def test_label_studio_rounds_import_only_the_new_inputs(operational_store):
    store, stream = operational_store
    truth = dict(zip(stream.ids, stream.labels.tolist()))
    sample(store, SampleConfig(sampler="stratified", budget=40, round_size=20, cycle="c1", seed=2))
    with StandInServer() as server:
        standin = server.standin
        client = LabelStudioClient(server.url, standin.personal_token, "auto", sleep=lambda s: None)
        backend = LabelStudioBackend(store, client=client)
        sizes = []

        def annotator():
            tasks = standin.tasks(1)
            sizes.append(len(tasks))
            for task in tasks:
                if not task.get("annotations"):
                    standin.annotate(task, str(truth[task["data"]["daic_id"]]))

        clock = Clock(annotator)
        result = run(store, "c1", CollectConfig(backend="label-studio"), backend=backend, clock=clock,
                     sleep=clock.sleep)
        ids = [t["data"]["daic_id"] for t in standin.tasks(1)]
    record = cycle_store.read_sample(store, "c1")
    assert sorted(ids) == sorted(record.sampled_ids.tolist()) and len(ids) == len(set(ids))  # no duplicates
    assert sizes == [20, 40] and result.n_labeled == 40
    assert store.get_json(cycle_store.key("c1", "label-studio.json"))["tasks"] == 40
    assert cycle_store.read_labels(store, "c1") == {i: truth[i] for i in record.sampled_ids}


@pytest.mark.parametrize("weighting", ["uniform", "inclusion", "mispredicted"])
def test_training_weights_travel_with_the_labels(operational_store, weighting):
    store, stream = operational_store
    truth = dict(zip(stream.ids, stream.labels.tolist()))
    sample(store, SampleConfig(sampler="dual", budget=60, cycle="c1", seed=2))
    run(store, "c1", CollectConfig(backend="simulated", simulated_scenario=SPEC, train_weighting=weighting))
    batch = store.get_arrays(cycle_store.train_labels_key("c1"))
    w = batch["weights"]
    assert w.shape == batch["labels"].shape and np.all(w > 0)
    record = cycle_store.read_sample(store, "c1")
    pred = dict(zip(record.pool.ids, record.pool.predictions))
    wrong = np.array([pred[i] != truth[i] for i in batch["ids"]])
    if weighting == "uniform":
        assert np.allclose(w, 1.0)
    elif weighting == "mispredicted":
        assert wrong.any() and (~wrong).any()
        assert np.allclose(w[wrong] / w[~wrong].mean(), 2.0)
    else:  # inverse inclusion probability: the inputs the design over-sampled weigh less
        pi = store.get_arrays(cycle_store.key("c1", "sample.npz"))["inclusion_prob"]
        drawn = record.pool.ids[record.sample.indices]
        pi_of = {}
        for i, p in zip(drawn, pi):
            pi_of[i] = min(p, pi_of.get(i, 1.0))
        inv = np.array([1 / pi_of[i] for i in batch["ids"]])
        assert np.corrcoef(inv, w)[0, 1] > 0.9


def test_bad_rounds_settings_are_refused():
    with pytest.raises(ValueError, match="round_size must be 0 or >= 4"):
        SampleConfig(round_size=2)
    with pytest.raises(ValueError, match="target_half_width must be in"):
        SampleConfig(target_half_width=0.7)
    with pytest.raises(ValueError, match="unknown train_weighting"):
        CollectConfig(train_weighting="boost")
