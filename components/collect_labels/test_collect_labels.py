"""collect-labels alone, with each backend: simulated, web (the labeling page's store protocol),
label-studio (test_label_studio.py), feedback (objects as the sidecar writes them); and the waiting rules."""
from __future__ import annotations

import json

import numpy as np
import pytest

from daic.components import cycle_store
from daic.components.collect_labels.logic import CollectConfig, run, wait_for_answers
from daic.components.collect_labels.request import LabelRequest
from daic.components.collect_labels.simulated import SimulatedBackend, parse_spec
from daic.components.collect_labels.web import WebBackend
from daic.components.sample_operational.logic import SampleConfig
from daic.components.sample_operational.logic import run as sample
from daic.labeling import LabelBook

SPEC = json.dumps({"name": "sudden", "seed": 3, "batch_size": 50, "n_steps": 8, "drift_start": 4,
                   "corruption": "translate", "severity": 3})


@pytest.fixture
def sampled(operational_store):
    store, stream = operational_store
    sample(store, SampleConfig(sampler="stratified", budget=40, cycle="c1", seed=2))
    truth = dict(zip(stream.ids, stream.labels.tolist()))
    return store, truth


def test_simulated_labels_are_the_scenario_truth(sampled):
    store, truth = sampled
    result = run(store, "c1", CollectConfig(backend="simulated", simulated_scenario=SPEC))
    labels = cycle_store.read_labels(store, "c1")
    record = cycle_store.read_sample(store, "c1")
    assert set(labels) == set(record.sampled_ids)
    assert all(labels[i] == truth[i] for i in labels)
    train = store.get_arrays(cycle_store.train_labels_key("c1"))
    held = cycle_store.read_holdout(store, "c1")
    assert set(train["ids"]) == set(record.train_ids) and set(held["ids"]) == set(record.holdout_ids)
    assert not set(train["ids"]) & set(held["ids"])
    assert [truth[i] for i in train["ids"]] == train["labels"].tolist()
    assert train["images"].shape == (len(train["ids"]), 28, 28)
    assert (result.n_labeled, result.n_train + result.n_holdout) == (len(labels), len(labels))


def test_simulated_finds_inputs_by_image_when_ids_differ(operational_store):
    _, stream = operational_store
    backend = SimulatedBackend(SPEC)
    pick = np.array([3, 250, 399])
    request = LabelRequest(cycle="c", ids=np.array(["req-a:0", "req-b:0", "req-c:0"]),
                           inputs=stream.images[pick], predictions=np.zeros(3, np.int64),
                           confidences=np.ones(3))
    assert backend.poll(request) == {"req-a:0": int(stream.labels[3]), "req-b:0": int(stream.labels[250]),
                                     "req-c:0": int(stream.labels[399])}
    stranger = LabelRequest(cycle="c", ids=np.array(["x:0"]), inputs=np.full((1, 28, 28), 0.5, np.float32),
                            predictions=np.zeros(1, np.int64), confidences=np.ones(1))
    with pytest.raises(ValueError, match="not part of scenario 'sudden'"):
        backend.poll(stranger)


def test_simulated_spec_errors_name_the_field():
    with pytest.raises(ValueError, match="needs simulated_scenario"):
        parse_spec("")
    with pytest.raises(ValueError, match="not valid JSON"):
        parse_spec("{name: x}")
    with pytest.raises(ValueError, match="unexpected keyword argument 'colour'"):
        parse_spec('{"name": "sudden", "colour": 1}')


def test_web_backend_waits_for_people_to_answer(sampled):
    store, truth = sampled
    record = cycle_store.read_sample(store, "c1")
    ids, inputs = cycle_store.read_sample_inputs(store, "c1")
    request = LabelRequest(cycle="c1", ids=ids, inputs=inputs, predictions=np.zeros(len(ids), np.int64),
                           confidences=np.full(len(ids), 0.5))
    backend = WebBackend(store)
    backend.submit(request)
    book = LabelBook(store, "c1")
    assert book.task.ids == list(ids)
    todo = list(ids)
    now = [0.0]

    def person_labels_ten(seconds):  # what happens while the step waits: someone labels 10 inputs
        now[0] += seconds
        for i in todo[:10]:
            book.record(i, "unsure" if i == ids[0] else truth[i], labeler="ann")
        del todo[:10]

    answers, waited = wait_for_answers(backend, request, timeout_s=600, poll_s=30,
                                       clock=lambda: now[0], sleep=person_labels_ten)
    assert len(answers) == len(ids) and answers[ids[0]] is None
    assert waited == 30 * int(np.ceil(len(ids) / 10))
    # the step itself, run again after everything is answered, writes the record (unsure = unlabeled)
    result = run(store, "c1", CollectConfig(backend="web"))
    assert (result.n_requested, result.n_labeled, result.n_unsure) == (len(ids), len(ids) - 1, 1)
    assert ids[0] not in cycle_store.read_labels(store, "c1")
    assert set(record.sampled_ids) - {ids[0]} == set(cycle_store.read_labels(store, "c1"))


def test_timeout_fails_unless_enough_answers(sampled):
    store, truth = sampled
    ids, inputs = cycle_store.read_sample_inputs(store, "c1")
    request = LabelRequest(cycle="c1", ids=ids, inputs=inputs, predictions=np.zeros(len(ids), np.int64),
                           confidences=np.full(len(ids), 0.5))
    backend = WebBackend(store)
    backend.submit(request)
    book = LabelBook(store, "c1")
    for i in ids[:30]:
        book.record(i, truth[i])
    now = [0.0]

    def tick(seconds):
        now[0] += seconds

    with pytest.raises(TimeoutError, match=r"timed out after 60s with 30 of 40 inputs answered"):
        wait_for_answers(backend, request, 60, 20, clock=lambda: now[0], sleep=tick)
    now[0] = 0.0
    answers, _ = wait_for_answers(backend, request, 60, 20, min_answered_share=0.75,
                                  clock=lambda: now[0], sleep=tick)
    assert len(answers) == 30


def test_feedback_backend_reads_the_sidecars_feedback_objects(sampled):
    store, truth = sampled
    ids = cycle_store.read_sample(store, "c1").sampled_ids
    early, late = ids[:25], ids[25:]
    for n, part in enumerate((early, late)):
        store.put_arrays(f"operational/mnist/feedback-2023111{n}T000000000000Z-{n:08d}.npz",
                         ids=part, request_ids=part, times=np.full(len(part), 1.7e9 + n),
                         labels=np.array([truth[i] for i in part]), predictions=np.full(len(part), -1),
                         p_correct=np.full(len(part), np.nan, np.float32),
                         model_version=np.full(len(part), "v0001"))
    result = run(store, "c1", CollectConfig(backend="feedback", timeout_s=1, poll_s=1))
    assert result.n_labeled == len(ids)
    assert all(v == truth[k] for k, v in cycle_store.read_labels(store, "c1").items())


@pytest.mark.parametrize("field,value,match", [
    ("backend", "crowd", "unknown labeler 'crowd'"),
    ("timeout_s", 0, "timeout_s must be > 0"),
    ("poll_s", 0, "poll_s must be in"),
    ("min_answered_share", 0, "min_answered_share must be in"),
])
def test_config_rejects_bad_values(field, value, match):
    with pytest.raises(ValueError, match=match):
        CollectConfig(**{field: value})
