"""The sidecar's checkpoint (``<state-dir>/wal/checkpoint.json``) whose *contents* are wrong.

A real sidecar (its oracles, the trained model and the file:// store are real; the executor's
request logger is played by posting CloudEvents to the app, as tests/test_sidecar_shape_guard.py
does) takes two predictions and one request whose response never comes, and stops: its checkpoint
holds that waiting request (its log segment is deleted at the commit), the joined ids, the
estimator's window and the widths. The checkpoint is then replaced by seeded corrupted variants
(tests/corrupt_variants.py) and a new sidecar opens the same state directory.

The decision (daic.sidecar.checkpoint): a checkpoint that does not parse is refused as a whole and
the sidecar does not start, with one error naming the file, the field and how to start without it
(move it aside); the file is left as it was. Starting fresh instead would drop the waiting request
and re-record joined inputs without anyone deciding so. A variant that still parses (a field only
later releases write dropped) starts, and the waiting request is still there.
"""
from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer

from corrupt_variants import json_variants
from daic.serving.loading import load_served_model
from daic.serving.protocol import build_response
from daic.sidecar.app import build_app
from daic.sidecar.assessment import AssessorPool
from daic.sidecar.config import SidecarConfig
from daic.sidecar.service import SidecarService
from daic.storage import StorageError
from daic.storage.parsed import CorruptObject
from test_serving_support import mnist_test_images, registered_store, seldon_request
from test_sidecar_shape_guard import _event, _post_pair

SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("checkpoint")
    store = registered_store(root / "store")
    served = load_served_model(store, "mnist", "v0001")
    images, _ = mnist_test_images(3, start=40)
    pool = AssessorPool(store, "mnist", window=100)
    config = SidecarConfig(store_url=store.url, state_dir=root / "state", deployment="ckpt", flush_interval_s=600)

    def pair(i):
        request = seldon_request(images[i:i + 1])
        outputs = served.outputs(np.asarray(json.loads(request)["data"]["ndarray"], np.float32))
        return request, json.dumps(build_response(**outputs, model="mnist", version="v0001")).encode()

    async def first_run():
        service = SidecarService(config, store, pool)
        async with TestClient(TestServer(build_app(service))) as client:
            for i in range(2):
                await _post_pair(client, f"joined-{i}", pair(i))
            headers, data = _event("request", "waiting", pair(2)[0])
            assert (await client.post("/", data=data, headers=headers)).status == 200
            assert (await client.post("/admin/flush")).status == 200

    asyncio.run(first_run())
    path = config.wal_dir / "checkpoint.json"
    doc = json.loads(path.read_text())
    assert [e["rid"] for e in doc["pending"]] == ["waiting"] and doc["estimators"] and doc["widths"]
    return {"store": store, "pool": pool, "config": config, "path": path, "original": path.read_bytes()}


def _open(world):
    """Open a new sidecar on the state directory: its pending request ids, or the exception."""
    async def main():
        service = SidecarService(world["config"], world["store"], world["pool"])
        try:
            await service.open()
            return sorted(e.request_id for e in service.join.pending_events())
        finally:
            service.wal.close()
    try:
        return asyncio.run(main())
    except Exception as exc:  # noqa: BLE001 - the caller judges the type
        return exc


def _is_object(data: bytes) -> bool:
    try:
        return isinstance(json.loads(data), dict)
    except ValueError:
        return True  # not JSON at all: WriteAheadLog.recover refuses it, naming the file


@pytest.mark.parametrize("seed", SEEDS)
def test_checkpoint_variants_start_whole_or_are_refused_naming_the_file(world, seed):
    path, original = world["path"], world["original"]
    failures = []
    try:
        for what, data in json_variants(original, seed):
            if not _is_object(data):
                continue  # WriteAheadLog.recover reads those first: test_a_checkpoint_that_is_not_an_object
            path.write_bytes(data)
            got = _open(world)
            if isinstance(got, list):
                if got != ["waiting"]:
                    failures.append(f"{what}: started, but the waiting request is lost ({got})")
            elif isinstance(got, (CorruptObject, RuntimeError)) and str(path) in str(got):
                if "move it aside" not in str(got):
                    failures.append(f"{what}: refused without the way out: {got}")
                if path.read_bytes() != data:
                    failures.append(f"{what}: the refused checkpoint was changed")
            else:
                failures.append(f"{what}: {type(got).__name__}: {str(got)[:200]}")
    finally:
        path.write_bytes(original)
    assert _open(world) == ["waiting"]  # whole again: restores as before
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("edit", [
    lambda d: d.update(pending={"rid": "waiting"}),
    lambda d: d["pending"][0].update(b="{not json"),
    lambda d: d.pop("pending"),
    lambda d: d.update(completed=[1, 2]),
    lambda d: d.update(widths={"v0001": [10]}),
    lambda d: d.update(recent=[["r", "v0001", "x", [], None]]),
    lambda d: d.update(feedback={"v0001": {"n": -1, "correct": 0, "p_correct": [], "is_correct": []}}),
    lambda d: next(iter(d["estimators"].values())).update(version=99),
    lambda d: next(iter(d["estimators"].values()))["window"].update(p_correct=[0.5]),
], ids=["pending-object", "pending-body", "pending-dropped", "completed-ints", "widths-short", "recent-predictions",
        "feedback-negative", "estimator-version", "estimator-window"])
def test_each_part_of_the_wrong_shape_is_refused_naming_its_field(world, edit):
    path, original = world["path"], world["original"]
    doc = json.loads(original)
    edit(doc)
    path.write_text(json.dumps(doc))
    try:
        got = _open(world)
        assert isinstance(got, CorruptObject) and isinstance(got, StorageError), got
        assert str(path) in str(got) and "move it aside" in str(got)
    finally:
        path.write_bytes(original)


def test_fields_of_later_releases_may_be_absent(world):
    """An older checkpoint (no serving, widths, recent) still restores, the waiting request with it."""
    path, original = world["path"], world["original"]
    doc = json.loads(original)
    for key in ("serving", "widths", "recent"):
        doc.pop(key)
    path.write_text(json.dumps(doc))
    try:
        assert _open(world) == ["waiting"]
    finally:
        path.write_bytes(original)


@pytest.mark.parametrize("content", [b"[]", b"null", b"42", b'{"committed_segment": "3"}',
                                     b'{"committed_segment": true}', b'{"committed_segment": -5}'])
def test_a_checkpoint_that_is_not_an_object(world, content):
    """Refused by the write-ahead log before it deletes any segment on the checkpoint's word."""
    path, original = world["path"], world["original"]
    path.write_bytes(content)
    try:
        got = _open(world)
        assert isinstance(got, (CorruptObject, RuntimeError)) and str(path) in str(got), got
    finally:
        path.write_bytes(original)
