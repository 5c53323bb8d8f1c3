"""Abstained inputs (issue 21, item 4) when labels are asked for in rounds: queued with the first
round (.rounds says why), capped, labeled once, trained on, never held out, and out of everything
the rounds decide (the design's draws, its inclusion probabilities, the estimates, the stop).

The records are the sidecar's format with the model server's abstain flag (P(correct) < 0.5, the
rule daic.serving.abstain applies); a run with ``abstained_cap=0`` on the same store is the
reference the queued run must match draw for draw."""
from __future__ import annotations

import json
import types

import numpy as np
import pytest

from daic.components import cycle_store
from daic.components.collect_labels.logic import CollectConfig, run
from daic.components.collect_labels.rounds import carry_queue
from daic.components.estimate_accuracy.logic import EstimateConfig
from daic.components.estimate_accuracy.logic import run as estimate
from daic.components.sample_operational.logic import SampleConfig
from daic.components.sample_operational.logic import run as sample
from daic.labeling import LabelBook
from daic.sidecar.records import read_operational

SPEC = json.dumps({"name": "sudden", "seed": 3, "batch_size": 50, "n_steps": 8, "drift_start": 4,
                   "corruption": "translate", "severity": 3})
CAP = 30


def _config(cycle: str, cap: int) -> SampleConfig:
    return SampleConfig(sampler="stratified", budget=120, round_size=30, seed=5, cycle=cycle, abstained_cap=cap)


def test_carry_queue_grows_with_the_round_and_drops_what_it_drew():
    q = np.array([True, False, True, True])
    out = carry_queue(q, 2, np.array([2, 4, 1]))
    assert out.tolist() == [True, False, False, True, False, False]
    assert q.tolist() == [True, False, True, True]  # the record's array is not changed in place
    assert carry_queue(None, 3, np.array([0])) is None


def test_rounds_queue_the_abstained_inputs_with_the_first_round(abstaining_store):
    store, stream = abstaining_store
    truth = dict(zip(stream.ids, stream.labels.tolist()))
    logged = read_operational(store, "mnist")
    p_of = dict(zip(logged.ids, logged.p_correct))
    abstained = {i for i, a in zip(logged.ids, logged.abstained) if a}

    sample(store, _config("plain", 0))
    sample(store, _config("queued", CAP))
    first = cycle_store.read_sample(store, "queued")
    plain_first = cycle_store.read_sample(store, "plain")
    # The first round: the design's draws as without the queue; the queue beside them, capped,
    # the abstained inputs not drawn with the lowest P(correct).
    assert first.meta["rounds"]["round_size"] == 30 and first.sample.n_draws == 30
    assert first.pool.ids[first.sample.indices].tolist() == plain_first.pool.ids[plain_first.sample.indices].tolist()
    drawn = set(first.sampled_ids)
    candidates = sorted((p_of[i], i) for i in abstained - drawn)
    assert len(candidates) > CAP, "the drifted stream abstains on more inputs than the cap"
    assert sorted(first.queued_ids.tolist()) == sorted(i for _, i in candidates[:CAP])
    assert first.meta["abstained_queued"] == CAP and first.meta["abstained_in_window"] == len(abstained)
    assert cycle_store.read_sample_inputs(store, "queued")[0].tolist() == first.label_ids.tolist()

    for cycle in ("plain", "queued"):
        run(store, cycle, CollectConfig(backend="simulated", simulated_scenario=SPEC, train_weighting="inclusion"))
    plain, record = cycle_store.read_sample(store, "plain"), cycle_store.read_sample(store, "queued")
    # Every round drew what it draws without the queue (the queued labels do not aim the design),
    # with the same inclusion probabilities and the same estimates, and stopped at the same point.
    assert record.sample.n_draws == 120 and record.sample.n_batches == 4
    assert record.pool.ids[record.sample.indices].tolist() == plain.pool.ids[plain.sample.indices].tolist()
    assert record.holdout.tolist() == plain.holdout.tolist()
    np.testing.assert_array_equal(store.get_arrays(cycle_store.key("plain", "sample.npz"))["inclusion_prob"],
                                  store.get_arrays(cycle_store.key("queued", "sample.npz"))["inclusion_prob"])
    trace = store.get_json(cycle_store.key("queued", "rounds.json"))["rounds"]
    plain_trace = store.get_json(cycle_store.key("plain", "rounds.json"))["rounds"]
    assert [(r["n_draws"], r.get("accuracy"), r.get("half_width"), r["stop"]) for r in trace] == \
        [(r["n_draws"], r.get("accuracy"), r.get("half_width"), r["stop"]) for r in plain_trace]
    assert all(r["n_inputs"] == r["n_queued"] + len(set(record.pool.ids[record.sample.indices[:r["n_draws"]]]))
               for r in trace)
    a = estimate(store, "plain", EstimateConfig(reference_accuracy=0.9)).estimate
    b = estimate(store, "queued", EstimateConfig(reference_accuracy=0.9)).estimate
    assert (a.accuracy, a.lower, a.upper, a.n_labels, a.n_draws) == (b.accuracy, b.lower, b.upper, b.n_labels,
                                                                     b.n_draws)
    # The queue at the end: the first round's queue less what a later round drew (a draw now, and
    # held out if that draw is); never longer than the cap, never held out, trained on, labeled.
    later = set(record.sampled_ids) & set(first.queued_ids)
    assert later, "a later round draws some queued input (seeded): the case carry_queue handles"
    assert set(record.queued_ids) == set(first.queued_ids) - later
    assert record.meta["abstained_queued"] == CAP - len(later)
    assert not set(record.queued_ids) & set(record.holdout_ids)
    assert set(record.queued_ids) <= set(record.train_ids)
    labels = cycle_store.read_labels(store, "queued")
    assert set(labels) == set(record.sampled_ids) | set(record.queued_ids)
    assert all(labels[i] == truth[i] for i in labels)
    train = store.get_arrays(cycle_store.train_labels_key("queued"))
    assert set(record.queued_ids) <= set(train["ids"]) and np.all(np.isfinite(train["weights"]))
    assert not set(train["ids"]) & set(record.holdout_ids)
    held = store.get_arrays(cycle_store.key("queued", "holdout.npz"))
    assert set(held["ids"]) == set(record.holdout_ids) == set(plain.holdout_ids)


def test_a_person_labels_each_queued_input_once_from_the_first_round_on(abstaining_store):
    store, stream = abstaining_store
    truth = dict(zip(stream.ids, stream.labels.tolist()))
    sample(store, _config("c1", CAP))
    queued = set(cycle_store.read_sample(store, "c1").queued_ids)
    tasks, recorded = [], []

    def person():  # labels everything the page shows that is not answered yet
        if not store.exists(LabelBook(store, "c1").prefix + "task.json"):
            return
        book = LabelBook(store, "c1")
        tasks.append(list(book.task.ids))
        done = book.answers()
        for i in book.task.ids:
            if i not in done:
                book.record(i, truth[i], labeler="ann")
                recorded.append(i)

    now = [0.0]

    def sleep(seconds):
        now[0] += seconds
        person()

    result = run(store, "c1", CollectConfig(backend="web", timeout_s=3600, poll_s=5), clock=lambda: now[0],
                 sleep=sleep)
    record = cycle_store.read_sample(store, "c1")
    assert queued <= set(tasks[0])  # on the page with the first round
    assert all(t[:len(s)] == s for s, t in zip(tasks, tasks[1:]))  # each round only appends
    assert len(recorded) == len(set(recorded)) == len(record.label_ids)  # each input labeled once
    assert result.n_labeled == len(record.label_ids) and record.sample.n_draws == 120


def test_the_pipeline_parameter_reaches_the_sampling_step(abstaining_store, tmp_path):
    """abstained_cap: a pipeline parameter (default 100; a cycle sets it in spec.pipeline.parameters),
    wired to sample-operational in the checked-in YAML, and the component hands it to the step."""
    import yaml

    from daic.components.sample_operational.component import sample_operational
    from daic.pipelines.compile import COMPILED
    from daic.pipelines.local_run import pipeline_parameters, resolve_params

    assert pipeline_parameters()["abstained_cap"] == 100
    assert resolve_params({"abstained_cap": 7})["abstained_cap"] == 7
    spec = next(yaml.safe_load_all((COMPILED / "assess_and_improve.yaml").read_text()))
    assert spec["root"]["inputDefinitions"]["parameters"]["abstained_cap"]["defaultValue"] == 100
    wired = spec["root"]["dag"]["tasks"]["sample-operational"]["inputs"]["parameters"]["abstained_cap"]
    assert wired == {"componentInputParameter": "abstained_cap"}

    store, _ = abstaining_store
    artifact = types.SimpleNamespace(path=str(tmp_path / "sample.csv"), metadata={})
    for cycle, cap in (("c7", 7), ("c0", 0)):
        sample_operational.python_func(
            store_url=store.url, deployment="mnist", sampler="stratified", sampler_params={}, budget=40,
            holdout_share=0.3, seed=2, since="", until="", cycle=cycle, sample=artifact, round_size=20,
            abstained_cap=cap)
    assert cycle_store.read_sample(store, "c7").meta["abstained_queued"] == 7
    assert cycle_store.read_sample(store, "c0").queued is None
