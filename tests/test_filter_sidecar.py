"""The sidecar's estimate behind the input filter (issue 21): a response whose tags name a filter
(daic.filter, daic.filter.gate) is scored with the wrapped model's assessor, fitted on filtered
references (daic.filters.assessor) and loaded in the background; without one, or without the
tags, with the model's own."""
from __future__ import annotations

import dataclasses
import json
from collections import OrderedDict

import numpy as np
import pytest

from daic.filters.assessor import assessor_version, fit_wrapped_assessor, load_wrapped_assessor, wrapped_references
from daic.filters.network import FilterNet
from daic.filters.registry import FilterRegistry
from daic.models.card import DataLineage
from daic.models.registry import ModelRegistry
from daic.sidecar.assessment import AssessorPool
from daic.sidecar.records import read_operational
from test_sidecar_service import _event, _pair, _post, _run, registry  # noqa: F401 - the module fixture
from test_serving_support import mnist_test_images


def _filter(store, **configure) -> str:
    net = FilterNet()
    if configure:
        net.configure(**configure)
    return FilterRegistry(store, "mnist").register_filter(
        net=net, data=DataLineage(dataset="mnist", base_count=10), wraps_version="v0001",
        metrics={"gate_threshold": 0.0}).version


def _drain(pool: AssessorPool) -> None:
    pool._worker.submit(lambda: None).result()  # one worker: everything submitted before has run


def test_references_pass_through_the_filter_in_the_served_gate(registry):  # noqa: F811
    store = registry["store"]
    model, shadow = ModelRegistry(store, "mnist").load_networks("v0001")
    identity = FilterNet()  # untrained: a pass-through, so the references are the model's own
    plain, _ = wrapped_references(model, shadow, identity, "always", 0.0, val_limit=32, shift_per_condition=0)
    blank = FilterNet().configure(canonical=False)
    with np.errstate(all="ignore"):
        blank.out.bias.data.fill_(-10.0)  # maps every input to black
    blanked, _ = wrapped_references(model, shadow, blank, "always", 0.0, val_limit=32, shift_per_condition=0)
    gated_off, _ = wrapped_references(model, shadow, blank, "gated", 1e9, val_limit=32, shift_per_condition=0)
    assert plain.labels.shape == (32,) and np.array_equal(plain.labels, blanked.labels)
    assert np.allclose(blanked.probs, blanked.probs[0]), "every filtered input is the same black image"
    assert not np.allclose(plain.probs, blanked.probs)
    np.testing.assert_allclose(gated_off.probs, plain.probs, atol=1e-6)  # the gate let nothing through


def test_fit_store_and_the_pool_loads_it_in_the_background(registry):  # noqa: F811
    store = registry["store"]
    version = _filter(store)
    done = fit_wrapped_assessor(store, "mnist", version, "always", val_limit=64, shift_per_condition=0)
    assert done["wraps"] == "v0001" and done["key"].endswith(f"{assessor_version(version, 'always')}/assessor.pkl")
    assert load_wrapped_assessor(store, "mnist", version, "always") is not None
    assert load_wrapped_assessor(store, "mnist", version, "gated") is None
    pool = AssessorPool(store, "mnist", window=100)
    assert pool.wrapped_for_scoring(version, "always") is None  # not loaded yet: never waits
    _drain(pool)
    assert pool.wrapped_for_scoring(version, "always") is not None
    assert pool.wrapped_for_scoring(version, "gated") is None
    _drain(pool)
    assert pool.wrapped_for_scoring(version, "gated") is None
    assert (version, "gated") in pool._wrapped_missing and not pool._wrapped_pending  # none stored: not asked again
    fit_wrapped_assessor(store, "mnist", version, "gated", val_limit=64, shift_per_condition=0)
    pool._wrapped_missing[(version, "gated")] -= pool.WRAPPED_RETRY_S  # the retry interval has passed
    assert pool.wrapped_for_scoring(version, "gated") is None
    _drain(pool)
    assert pool.wrapped_for_scoring(version, "gated") is not None, "stored since: found on the retry"


def test_a_tagged_response_is_scored_with_the_wrapped_assessor(registry, tmp_path, monkeypatch):  # noqa: F811
    pool = registry["pool"]
    own = pool.get(registry["v1"])

    class Marked:
        """The model's own assessor, with every P(correct) set to a mark."""

        def __init__(self, mark):
            self.mark = mark

        def score(self, probs, embeddings, shadow_probs, *args):
            scores = own.score(probs, embeddings, shadow_probs, *args)
            return dataclasses.replace(scores, p_correct=np.full(len(probs), self.mark))

        def __getattr__(self, name):  # its window model, estimators: the own assessor's
            return getattr(own, name)

    monkeypatch.setattr(pool, "_wrapped", OrderedDict({("v0042", "always"): Marked(0.123)}))
    images, _ = mnist_test_images(6)
    bodies = {}
    for rid, tags in (("plain", None), ("behind", {"daic.filter": "v0042", "daic.filter.gate": "always"}),
                      ("no-assessor", {"daic.filter": "v0043", "daic.filter.gate": "always"}),
                      ("removed", {"daic.filter": None, "daic.filter.gate": None})):
        request, response, _ = _pair(registry, registry["v1"], images[:2])
        if tags is not None:
            body = json.loads(response)
            body["meta"]["tags"].update(tags)
            response = json.dumps(body).encode()
        bodies[rid] = (request, response)

    async def scenario(client, service):
        for rid, (request, response) in bodies.items():
            await _post(client, _event("request", rid, request))
            await _post(client, _event("response", rid, response))
        await client.post("/admin/flush")
        return dict(service.estimators)

    estimators = _run(registry, tmp_path, scenario)
    assert registry["v1"] in estimators
    records = read_operational(registry["store"], tmp_path.name)
    by_request = {rid: records.p_correct[records.request_ids == rid] for rid in bodies}
    assert np.allclose(by_request["behind"], 0.123)
    for rid in ("plain", "no-assessor", "removed"):  # the model's own assessor
        assert not np.allclose(by_request[rid], 0.123)
        np.testing.assert_allclose(by_request[rid], by_request["plain"], atol=1e-9)


@pytest.mark.parametrize("tags", [{}, {"daic.filter": "v1"}, {"daic.filter": "v1", "daic.filter.gate": "off"},
                                  {"daic.filter": 3, "daic.filter.gate": "always"}])
def test_tags_that_name_no_served_filter_are_ignored(tags):
    from types import SimpleNamespace

    from daic.sidecar.service import _filter_of

    pair = SimpleNamespace(response=SimpleNamespace(body={"meta": {"tags": tags}}))
    assert _filter_of(pair) is None
    pair.response.body["meta"]["tags"] = {"daic.filter": "v1", "daic.filter.gate": "gated"}
    assert _filter_of(pair) == ("v1", "gated")


def test_the_estimator_follows_the_assessor_its_scores_come_from(registry, monkeypatch):  # noqa: F811
    pool, v1 = registry["pool"], registry["v1"]
    own = pool.get(v1)
    key = ("v0042", "gated")
    monkeypatch.setattr(pool, "_wrapped", OrderedDict({key: own}))
    first = pool.estimator_for(v1, None)
    assert getattr(first, "behind", None) is None
    behind = pool.estimator_behind(v1, first, key)  # the filter went in: rebuilt with the wrapped terms
    assert behind is not first and behind.behind == key
    assert pool.estimator_behind(v1, behind, key) is behind  # kept while the scores come from it
    back = pool.estimator_for(v1, behind)  # the filter came out: the version's own terms again
    assert back is not behind and getattr(back, "behind", None) is None
    assert pool.estimator_for(v1, back) is back
