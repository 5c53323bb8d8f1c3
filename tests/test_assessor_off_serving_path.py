"""The assessor off the serving path (issue 22): a champion change never stops scoring.

The new champion's fit is gated on an Event the test holds: everything asserted while it is held
happened while the fit was still running, so "scoring did not wait for it" is shown by order, not
by timing. The gate's wait has a timeout only so that a regression (a scoring call that does wait
on the fit) fails the test instead of hanging it: the fit then records that its gate timed out.
Also: a version registered with ``fit_assessor=True`` is loaded by the sidecar, never fitted there.
"""
from __future__ import annotations

import asyncio
import json
import threading

import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer

from daic.models import assessor_store
from daic.models.registry import ModelRegistry
from daic.serving.loading import load_served_model
from daic.serving.protocol import build_response
from daic.sidecar.app import build_app
from daic.sidecar.assessment import AssessorPool
from daic.sidecar.config import SidecarConfig
from daic.sidecar.events import encode_cloudevent
from daic.sidecar.records import read_operational
from daic.sidecar.service import SidecarService
from test_serving_support import mnist_test_images, register_version, registered_store, seldon_request

GATE_S = float(__import__("os").environ.get("DAIC_TEST_GATE_S", "120"))  # a safety net against a hang, never reached when the code is right


class GatedFit:
    """The real fit, except for the versions in ``gated``: those wait for ``release``."""

    def __init__(self, gated_calls: set[int]):
        self.gated_calls = gated_calls
        self.calls = 0
        self.entered = threading.Event()
        self.release = threading.Event()
        self.gate_timed_out: list[bool] = []

    def __call__(self, reference, shifted):
        self.calls += 1
        if self.calls in self.gated_calls:
            self.entered.set()
            self.gate_timed_out.append(not self.release.wait(GATE_S))
        return assessor_store.fit(reference, shifted)


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """Champion v0001 and a registered, not promoted v0002 (neither with a stored assessor)."""
    base = tmp_path_factory.mktemp("off-path")
    store = registered_store(base / "store")
    v2 = register_version(store, promote=False)
    served = {v: load_served_model(store, "mnist", v) for v in ("v0001", v2)}
    return {"store": store, "v2": v2, "served": served}


def _copy(template, tmp_path):
    """A copy of the template store for one test (the template stays without stored assessors)."""
    import shutil

    from daic.storage import open_store

    shutil.copytree(template["store"].root, tmp_path / "store")
    return open_store(f"file://{tmp_path / 'store'}")


def test_the_pool_scores_old_and_new_versions_while_the_new_fit_is_held(template, tmp_path):
    store, v2 = _copy(template, tmp_path), template["v2"]
    fit = GatedFit(gated_calls={2})
    pool = AssessorPool(store, "mnist", window=100, fit=fit)
    a1 = pool.get("v0001")  # warm-up: the first champion is waited for
    assert pool.for_scoring("v0001") == (a1, True)

    future = pool.prepare(v2)  # what the periodic champion check does on a change
    assert fit.entered.wait(GATE_S), "the background fit never started"
    # The fit is held: every call below returns without it.
    assert pool.for_scoring("v0001") == (a1, True)
    assert pool.for_scoring(v2) == (a1, False), "the new version is scored with the old one's assessor"
    standin = pool.estimator_for(v2, None)
    assert getattr(standin, "stand_in", False)
    assert pool.ready(v2) is None and pool.loaded_versions() == ["v0001"]
    assert not future.done() and not fit.release.is_set()

    fit.release.set()
    a2 = future.result(GATE_S)
    assert fit.gate_timed_out == [False], "something waited on the held fit"
    assert a2 is not a1 and pool.for_scoring(v2) == (a2, True)
    own = pool.estimator_for(v2, standin)
    assert not getattr(own, "stand_in", False) and own.window_model is a2.window_model
    assert pool.estimator_for(v2, own) is own
    assert pool.fits == 2 and pool.loads == 0


def _pair(served, version, images):
    request = seldon_request(images)
    outputs = served.outputs(np.asarray(json.loads(request)["data"]["ndarray"], dtype=np.float32))  # with the served self-agreement
    return request, json.dumps(build_response(**outputs, model="mnist", version=version)).encode()


async def _post_prediction(client, rid, request, response):
    for kind, body in (("request", request), ("response", response)):
        headers, data = encode_cloudevent(kind, rid, body, source="http://executor:8000", model_id="classifier")
        resp = await client.post("/", data=data, headers=headers)
        assert resp.status == 200, await resp.text()


def test_a_champion_change_while_scoring_goes_on(template, tmp_path):
    """The sidecar end to end: after the pointer moves, predictions of both versions are scored and
    written while the new champion's fit is held; once it is ready the new version's window is
    rebuilt with its own assessor and keeps every input."""
    store = _copy(template, tmp_path)
    v2, served = template["v2"], template["served"]
    fit = GatedFit(gated_calls={2})
    pool = AssessorPool(store, "mnist", window=100, fit=fit)
    images, _ = mnist_test_images(24, start=300)

    async def main():
        config = SidecarConfig(store_url=store.url, state_dir=tmp_path / "state", deployment="swap",
                               flush_interval_s=600, reference_check_s=3600)
        service = SidecarService(config, store, pool)
        async with TestClient(TestServer(build_app(service))) as client:
            assert service.champion == "v0001"
            for i in range(4):
                await _post_prediction(client, f"old-{i}", *_pair(served["v0001"], "v0001", images[i:i + 1]))
            ModelRegistry(store, "mnist").promote(v2)
            await service.check_champion(wait=False)  # the periodic check
            assert service.champion == v2
            assert await asyncio.to_thread(fit.entered.wait, GATE_S), "the new champion's fit never started"
            # Held fit: traffic of both versions is scored and written.
            for i in range(4, 12):
                version = "v0001" if i % 2 else v2
                await _post_prediction(client, f"during-{i}", *_pair(served[version], version, images[i:i + 1]))
            await service.request_flush()
            during = read_operational(store, "swap")
            assert not fit.release.is_set() and pool.ready(v2) is None
            assert len(during) == 12 and np.isfinite(during.p_correct).all() and np.isfinite(during.drift).all()
            assert sorted(set(during.model_version.tolist())) == ["v0001", v2]
            assert getattr(service.estimators[v2], "stand_in", False)
            fit.release.set()
            await asyncio.to_thread(pool.prepare(v2).result, GATE_S)
            for i in range(12, 16):
                await _post_prediction(client, f"after-{i}", *_pair(served[v2], v2, images[i:i + 1]))
            await service.request_flush()
            estimator = service.estimators[v2]
            assert not getattr(estimator, "stand_in", False)
            assert estimator.estimate().n == 4 + 4  # the 4 stand-in-scored inputs stayed in its window
            return fit.gate_timed_out

    assert asyncio.run(main()) == [False], "something waited on the held fit"


def test_a_version_registered_with_its_assessor_is_loaded_not_fitted(template, tmp_path):
    store = _copy(template, tmp_path)
    reference, shifted = ModelRegistry(store, "mnist").load_oracle_reference("v0001")
    fitted = assessor_store.fit_references_and_store(store, "mnist", "v0001", reference, shifted)

    def refuse(reference, shifted):
        raise AssertionError("the sidecar fitted a version whose assessor is stored")

    pool = AssessorPool(store, "mnist", window=100, fit=refuse)
    loaded = pool.get("v0001")
    assert pool.loads == 1 and pool.fits == 0
    images, _ = mnist_test_images(16, start=700)
    out = template["served"]["v0001"].outputs(images.astype(np.float32))
    signals = (out["probs"], out["embeddings"], out["shadow_probs"], out["self_agreement"])
    np.testing.assert_array_equal(loaded.score(*signals).p_correct, fitted.score(*signals).p_correct)
    # Pickled by other code: not loaded (fitted instead).
    data = assessor_store.dumps(fitted)
    assert assessor_store.loads(data) is not None
    other = data.replace(assessor_store.code_fingerprint().encode(), b"0" * 16)
    assert assessor_store.loads(other) is None
    assert assessor_store.loads(b"not a pickle") is None


def test_a_stored_assessor_fitted_on_other_references_is_refitted(template, tmp_path):
    """References rebuilt after the assessor was stored (a re-registration) make it stale: the pool
    fits anew instead of scoring with an assessor of other references."""
    from daic.sidecar.assessment import reference_fingerprint

    store = _copy(template, tmp_path)
    reference, shifted = ModelRegistry(store, "mnist").load_oracle_reference("v0001")
    fitted = assessor_store.fit(reference, shifted)
    assessor_store.store_assessor(store, "mnist", "v0001", fitted, reference_fingerprint(reference))  # not these
    data = store.get_bytes(assessor_store.key("mnist", "v0001"))
    assert assessor_store.loads(data, reference_fingerprint(reference)) is not None
    assert assessor_store.loads(data, reference_fingerprint(reference, shifted)) is None
    fits = []

    def fit(reference, shifted):
        fits.append(1)
        return fitted

    pool = AssessorPool(store, "mnist", window=100, fit=fit)
    pool.get("v0001")
    assert pool.loads == 0 and pool.fits == 1 and fits == [1]
