"""Logged predictions whose widths do not match their model version (found by fuzzing, b835cd6).

Two responses of one model version that disagree on the embedding width or the number of classes
used to stop the sidecar: ``np.concatenate`` in the scorer raised outside its guard, liveness went
to 500 and every later flush was refused (and with only that fixed, ``OperationalRecords.concat``
in the commit refused every flush instead). Now a prediction whose widths are not those of its
version is refused as unreadable when it is decoded, counted by field, and nothing malformed
reaches a batch that is concatenated; behind that, the scorer and the commit group by widths, so
even a prediction that slipped past the check cannot stop the service.

The sidecar, its oracles and the trained model are real; the object store is the real file://
store. Every scenario is driven by the app's own endpoints (``/admin/flush`` waits until
everything posted before it is processed), never by sleeping.
"""
from __future__ import annotations

import asyncio
import json
import uuid

import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer

from daic.serving.loading import load_served_model
from daic.serving.protocol import build_response
from daic.sidecar.app import build_app
from daic.sidecar.assessment import AssessorPool
from daic.sidecar.config import SidecarConfig
from daic.sidecar.records import OperationalRecords, read_operational, read_part, write_parts
from daic.sidecar.service import SidecarService
from test_serving_support import mnist_test_images, registered_store, seldon_request


def _event(kind, puid, body):
    headers = {"Ce-Specversion": "1.0", "Ce-Type": f"io.seldon.serving.inference.{kind}",
               "Ce-Source": "http://executor:8000/", "Ce-Id": str(uuid.uuid4()), "Content-Type": "application/json",
               "Ce-Modelid": "classifier", "Ce-Requestid": puid, "Ce-Protocol": "seldon"}
    return headers, body


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    store = registered_store(tmp_path_factory.mktemp("shape-guard") / "store")
    served = load_served_model(store, "mnist", "v0001")
    images, _ = mnist_test_images(8, start=300)

    def pair(i, edit=None):
        """(request, response) bytes of image ``i``; ``edit(probs, emb, shadow)`` may change the outputs."""
        request = seldon_request(images[i:i + 1])
        outputs = served.outputs(np.asarray(json.loads(request)["data"]["ndarray"], np.float32))
        if edit:
            outputs.update(zip(("probs", "embeddings", "shadow_probs"),
                               edit(outputs["probs"], outputs["embeddings"], outputs["shadow_probs"])))
        return request, json.dumps(build_response(**outputs, model="mnist", version="v0001")).encode()

    return {"store": store, "pool": AssessorPool(store, "mnist", window=100), "pair": pair,
            "dim": int(served.predict(images[:1].astype(np.float32))[1].shape[1])}


def short_embeddings(probs, emb, shadow):
    return probs, emb[:, :-1], shadow


def nine_classes(probs, emb, shadow):
    return probs[:, :9], emb, shadow[:, :9]


def _run(store, pool, tmp_path, scenario, state="state"):
    async def main():
        config = SidecarConfig(store_url=store.url, state_dir=tmp_path / state, deployment=tmp_path.name,
                               flush_interval_s=600)
        service = SidecarService(config, store, pool)
        async with TestClient(TestServer(build_app(service))) as client:
            return await scenario(client, service)
    return asyncio.run(main())


async def _metric(client, name, **labels) -> float:
    text = await (await client.get("/metrics")).text()
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def _post_pair(client, puid, pair):
    for kind, body in zip(("request", "response"), pair):
        headers, data = _event(kind, puid, body)
        resp = await client.post("/", data=data, headers=headers)
        assert resp.status == 200, await resp.text()


async def _outcome(client):
    flushed = await client.post("/admin/flush")
    live = await client.get("/health/live")
    return {"flush": (flushed.status, await flushed.json()), "live": live.status,
            "unreadable": await _metric(client, "daic_sidecar_events_dropped_total", reason="unreadable"),
            "mismatch": {f: await _metric(client, "daic_sidecar_predictions_width_mismatch_total", field=f)
                         for f in ("probs", "embeddings", "shadow_probs")}}


@pytest.mark.parametrize("edit, field, where", [(short_embeddings, "embeddings", "meta.tags.daic.embeddings"),
                                               (nine_classes, "probs", "data (probabilities)")])
def test_a_prediction_of_the_wrong_width_is_refused_and_the_sidecar_keeps_going(world, tmp_path, caplog, edit, field,
                                                                                where):
    good, bad, later = world["pair"](0), world["pair"](1, edit), world["pair"](2)

    async def scenario(client, service):
        await _post_pair(client, "good", good)
        await _post_pair(client, "bad", bad)
        first = await _outcome(client)
        await _post_pair(client, "later", later)  # the service still takes, scores and writes
        second = await _outcome(client)
        estimate = await (await client.get("/estimate")).json()
        return first, second, estimate

    with caplog.at_level("WARNING", logger="daic.sidecar.service"):
        first, second, estimate = _run(world["store"], world["pool"], tmp_path, scenario)
    assert first["live"] == 200 and first["flush"][0] == 200 and first["flush"][1]["batch"], first
    assert first["unreadable"] == 2, "the refused prediction's request and response"
    assert first["mismatch"][field] == 1 and sum(first["mismatch"].values()) == 1, first
    assert second["live"] == 200 and second["flush"][0] == 200 and second["flush"][1]["batch"], second
    assert estimate["n"] == 2 and estimate["sidecar"]["failed"] is None
    records = read_operational(world["store"], tmp_path.name)
    assert sorted(records.request_ids.tolist()) == ["good", "later"]
    assert records.embeddings.shape[1] == world["dim"] and records.probs.shape[1] == 10
    expected, got = (f"{world['dim']}", f"{world['dim'] - 1}") if field == "embeddings" else ("10", "9")
    line = next(r.getMessage() for r in caplog.records if "width" in r.getMessage())
    assert f"{where} has width {got}, expected {expected}" in line and "'v0001'" in line and "'bad'" in line, line


def test_many_bad_widths_in_one_batch_do_not_outvote_the_assessor(world, tmp_path):
    """The version's assessor is loaded: its reference's widths decide, however many disagree."""
    bad = [world["pair"](i, short_embeddings) for i in range(3)]

    async def scenario(client, service):
        for i, pair in enumerate(bad):
            await _post_pair(client, f"bad-{i}", pair)
        await _post_pair(client, "good", world["pair"](3))
        return await _outcome(client)

    outcome = _run(world["store"], world["pool"], tmp_path, scenario)
    assert outcome["live"] == 200 and outcome["flush"][0] == 200 and outcome["mismatch"]["embeddings"] == 3
    assert read_operational(world["store"], tmp_path.name).request_ids.tolist() == ["good"]


def test_without_an_assessor_the_first_widths_accepted_hold_across_a_restart(world, tmp_path):
    """A version whose reference cannot be loaded (no assessor: recorded unscored): the widths of
    most of its first batch are held, checkpointed, and refuse a minority then and after a restart."""
    store = registered_store(tmp_path / "store")
    store.delete("models/mnist/v0001/oracle_reference.npz")
    pool = AssessorPool(store, "mnist", window=100)

    async def first(client, service):
        for i in range(2):
            await _post_pair(client, f"good-{i}", world["pair"](i))
        await _post_pair(client, "bad-0", world["pair"](2, short_embeddings))
        return await _outcome(client)

    async def after_restart(client, service):
        await _post_pair(client, "bad-1", world["pair"](3, short_embeddings))
        await _post_pair(client, "good-2", world["pair"](4))
        return await _outcome(client)

    one = _run(store, pool, tmp_path, first)
    two = _run(store, AssessorPool(store, "mnist", window=100), tmp_path, after_restart)
    for outcome in (one, two):
        assert outcome["live"] == 200 and outcome["flush"][0] == 200 and outcome["mismatch"]["embeddings"] == 1
    assert pool.ready("v0001") is None, "the test needs a version without an assessor"
    assert sorted(read_operational(store, tmp_path.name).request_ids.tolist()) == ["good-0", "good-1", "good-2"]


def test_behind_the_check_the_scorer_and_the_commit_still_hold(world, tmp_path, monkeypatch):
    """Defence in depth: with the ingestion check switched off, mismatched widths of one version
    reach the scorer and the commit; neither stops the service, and nothing accepted is lost."""
    monkeypatch.setattr(SidecarService, "_width_refusal", lambda self, version, outputs, expected: None)
    good, bad = world["pair"](5), world["pair"](6, short_embeddings)

    async def scenario(client, service):
        await _post_pair(client, "good", good)
        await _post_pair(client, "bad", bad)
        return await _outcome(client), service.store.list(f"operational/{tmp_path.name}/")

    outcome, keys = _run(world["store"], world["pool"], tmp_path, scenario)
    assert outcome["live"] == 200 and outcome["flush"][0] == 200, outcome
    widths = sorted(read_part(world["store"], key).embeddings.shape[1] for key in keys)
    assert widths == [world["dim"] - 1, world["dim"]], "one part per width, both kept"


def test_write_parts_writes_one_part_per_width_and_never_overwrites(tmp_path):
    from daic.storage import open_store

    store = open_store(f"file://{tmp_path / 'store'}")
    rng = np.random.default_rng(7)

    def records(n, dim, classes, rid):
        probs = rng.dirichlet(np.ones(classes), n).astype(np.float32)
        return OperationalRecords(ids=[f"{rid}:{i}" for i in range(n)], request_ids=[rid] * n,
                                  times=np.full(n, 1_700_000_000.0), inputs=np.zeros((n, 28, 28), np.float32),
                                  predictions=probs.argmax(1), probs=probs,
                                  embeddings=rng.normal(size=(n, dim)).astype(np.float32), shadow_probs=probs,
                                  p_correct=np.full(n, 0.5), drift=np.full(n, 0.5), model_version=["v0001"] * n)

    parts = [records(2, 8, 10, "a"), records(1, 6, 10, "b"), records(3, 8, 10, "c"), records(1, 8, 9, "d")]
    with pytest.raises(ValueError, match="embedding sizes"):
        OperationalRecords.concat(parts)
    keys = write_parts(store, "dep", parts, 3)
    assert len(keys) == len(set(keys)) == 3
    back = {tuple(sorted(set(read_part(store, k).request_ids.tolist()))): read_part(store, k) for k in keys}
    assert set(back) == {("a", "c"), ("b",), ("d",)}
    assert back[("a", "c")].embeddings.shape == (5, 8) and back[("d",)].probs.shape == (1, 9)
