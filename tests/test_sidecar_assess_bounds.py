"""What a flood of made-up filter names costs the sidecar, and the 400s of ``POST /assess``.

Every distinct ``daic.filter`` tag in a response (posted to ``/assess`` or logged) started a store
lookup of the wrapped assessor and, when none was stored, left an entry in
``AssessorPool._wrapped_missing`` that was never removed: memory and store traffic grew with the
number of names anyone sent. Now a malformed name is a 400 naming the tag (never looked up), at
most ``WRAPPED_PENDING_MAX`` lookups are in flight and at most ``WRAPPED_MISSING_MAX`` missing
names are remembered. A response whose widths are not its assessor's gets a 400 naming the field
and both widths (it was numpy's "matmul: Input operand 1 has a mismatch ...").

Lookups are counted by replacing ``daic.filters.assessor.load_wrapped_assessor`` (the one store
read per name); the pool's single worker is drained by queueing a no-op behind them, never by
sleeping. The sidecar app, its oracles and the trained model are real.
"""
from __future__ import annotations

import asyncio
import json
import threading

import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer

from daic.serving.loading import load_served_model
from daic.serving.protocol import build_response
from daic.sidecar.app import build_app
from daic.sidecar.assessment import AssessorPool
from daic.sidecar.config import SidecarConfig
from daic.sidecar.service import SidecarService
from daic.storage import open_store
from test_serving_support import mnist_test_images, registered_store

JSON = {"Content-Type": "application/json"}


def _drain(pool: AssessorPool) -> None:
    pool._worker.submit(lambda: None).result()  # one worker: everything submitted before has run


class _Lookups:
    """Stands for the store read of a wrapped assessor: counts the calls, finds none, and holds
    each call until ``release`` is set; records the most lookups ever pending at once."""

    def __init__(self, pool: AssessorPool | None = None) -> None:
        self.pool, self.calls, self.most_pending = pool, 0, 0
        self.release = threading.Event()
        self.release.set()

    def __call__(self, store, classifier, filter_version, gate):
        self.calls += 1
        if self.pool is not None:
            self.most_pending = max(self.most_pending, len(self.pool._wrapped_pending))
        assert self.release.wait(30), "the test never released the lookups"
        return None


@pytest.fixture
def lookups(monkeypatch):
    fake = _Lookups()
    monkeypatch.setattr("daic.filters.assessor.load_wrapped_assessor", fake)
    return fake


def test_a_flood_of_filter_names_costs_bounded_lookups_and_memory(tmp_path, lookups):
    pool = AssessorPool(open_store(f"file://{tmp_path / 'store'}"), "mnist", window=100)
    lookups.pool = pool
    lookups.release.clear()  # the store is slow: every lookup stays in flight
    names = [f"v{1000 + i:04d}" for i in range(1000)]
    assert all(pool.wrapped_for_scoring(name, "gated") is None for name in names)
    assert len(pool._wrapped_pending) == pool.WRAPPED_PENDING_MAX
    lookups.release.set()
    _drain(pool)
    assert lookups.calls == pool.WRAPPED_PENDING_MAX and not pool._wrapped_pending

    for name in names[:600]:  # one at a time, each looked up and found missing
        pool.wrapped_for_scoring(name, "always")
        _drain(pool)
    assert len(pool._wrapped_missing) == pool.WRAPPED_MISSING_MAX
    assert lookups.calls == pool.WRAPPED_PENDING_MAX + 600
    pool.wrapped_for_scoring(names[599], "always")  # remembered: not asked again before the retry interval
    _drain(pool)
    assert lookups.calls == pool.WRAPPED_PENDING_MAX + 600
    pool.wrapped_for_scoring(names[0], "always")  # forgotten (the oldest): one more lookup
    _drain(pool)
    assert lookups.calls == pool.WRAPPED_PENDING_MAX + 601
    assert len(pool._wrapped_missing) == pool.WRAPPED_MISSING_MAX and lookups.most_pending <= pool.WRAPPED_PENDING_MAX


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    store = registered_store(tmp_path_factory.mktemp("assess-bounds") / "store")
    served = load_served_model(store, "mnist", "v0001")
    images, _ = mnist_test_images(2, start=40)
    outputs = served.outputs(images.astype(np.float32))  # with the served self-agreement
    return {"store": store, "pool": AssessorPool(store, "mnist", window=100), "outputs": outputs}


def _response(world, edit=None, **tags) -> bytes:
    outputs = dict(world["outputs"])
    if edit:
        outputs.update(zip(("probs", "embeddings", "shadow_probs"),
                           edit(outputs["probs"], outputs["embeddings"], outputs["shadow_probs"])))
    body = build_response(**outputs, model="mnist", version="v0001")
    body["meta"]["tags"].update(tags)
    return json.dumps(body).encode()


def _run(world, tmp_path, scenario):
    async def main():
        config = SidecarConfig(store_url=world["store"].url, state_dir=tmp_path / "state", deployment=tmp_path.name,
                               flush_interval_s=600)
        service = SidecarService(config, world["store"], world["pool"])
        async with TestClient(TestServer(build_app(service))) as client:
            return await scenario(client, service)
    return asyncio.run(main())


MALFORMED_FILTERS = ["v1", "V0001", "v0001/../../etc", "../v0001", "v0001 ", "", "v" + "1" * 40, 17, ["v0001"],
                     {"version": "v0001"}, True]


def test_a_malformed_filter_name_is_a_400_naming_the_tag_and_never_looked_up(world, tmp_path, lookups):
    missing_before = dict(world["pool"]._wrapped_missing)

    async def scenario(client, service):
        answers = []
        for name in MALFORMED_FILTERS:
            resp = await client.post("/assess", data=_response(world, **{"daic.filter": name,
                                                                         "daic.filter.gate": "gated"}), headers=JSON)
            answers.append((name, resp.status, (await resp.json()).get("error", "")))
        plain = await client.post("/assess", data=_response(world, **{"daic.filter": None,
                                                                      "daic.filter.gate": None}), headers=JSON)
        return answers, plain.status, (await client.get("/health/live")).status

    answers, plain, live = _run(world, tmp_path, scenario)
    for name, status, error in answers:
        assert status == 400 and "meta.tags.daic.filter must be a filter version like 'v0001'" in error, (name, error)
    assert lookups.calls == 0 and world["pool"]._wrapped_missing == missing_before
    assert plain == 200 and live == 200, "no filter served (null tags): the version's own assessor"


def test_a_flood_of_well_formed_names_on_assess_stays_bounded(world, tmp_path, lookups, monkeypatch):
    pool = world["pool"]
    monkeypatch.setattr(pool, "WRAPPED_MISSING_MAX", 16)
    lookups.pool = pool

    async def scenario(client, service):
        statuses = {}
        for i in range(300):
            resp = await client.post("/assess", data=_response(world, **{"daic.filter": f"v{5000 + i}",
                                                                         "daic.filter.gate": "gated"}), headers=JSON)
            statuses[resp.status] = statuses.get(resp.status, 0) + 1
            assert resp.status != 503 or "not loaded yet" in (await resp.json())["error"]
        await asyncio.to_thread(_drain, pool)
        plain = await client.post("/assess", data=_response(world), headers=JSON)
        return statuses, plain.status, (await client.get("/health/live")).status

    statuses, plain, live = _run(world, tmp_path, scenario)
    assert statuses == {503: 300}
    assert 0 < lookups.calls <= 300 and lookups.most_pending <= pool.WRAPPED_PENDING_MAX
    assert len(pool._wrapped_missing) <= 16 and not pool._wrapped_pending
    assert plain == 200 and live == 200


def _softmax9(probs):
    """Nine classes, still rows that sum to one (so the width is the only thing wrong)."""
    return probs[:, :9] / probs[:, :9].sum(axis=1, keepdims=True)


@pytest.mark.parametrize("edit, words", [
    (lambda p, e, s: (p, e[:, :-1], s), "meta.tags.daic.embeddings has width {dim_short}, expected {dim} columns"),
    (lambda p, e, s: (_softmax9(p), e, _softmax9(s)), "data (probabilities) has width 9, expected 10 classes"),
])
def test_a_wrong_width_on_assess_is_a_400_naming_the_field_and_both_widths(world, tmp_path, edit, words):
    dim = world["outputs"]["embeddings"].shape[1]

    async def scenario(client, service):
        resp = await client.post("/assess", data=_response(world, edit), headers=JSON)
        return resp.status, (await resp.json())["error"]

    status, error = _run(world, tmp_path, scenario)
    assert status == 400 and words.format(dim=dim, dim_short=dim - 1) in error and "'v0001'" in error, error
    assert "matmul" not in error and "operand" not in error
