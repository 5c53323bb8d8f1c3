"""The sidecar's ingest stays up around its own restarts (daic.sidecar.app.serve): the port takes
events (written ahead) while the champion's reference is still loading, and after SIGTERM it keeps
taking them, not ready, until the executor stopping beside it has gone quiet; nothing taken is
lost. The executor never retries a refused event (executor/logger/worker.go, v1.18.2), so a
refused connection here would be a silent loss upstream."""
from __future__ import annotations

import asyncio
import json
import threading

import aiohttp
import numpy as np

from daic.serving.loading import load_served_model
from daic.serving.protocol import build_response
from daic.sidecar.app import serve
from daic.sidecar.assessment import AssessorPool
from daic.sidecar.config import SidecarConfig
from daic.sidecar.events import encode_cloudevent
from daic.sidecar.records import read_operational
from daic.sidecar.service import SidecarService
from test_serving_support import free_port, mnist_test_images, registered_store, seldon_request


class _SlowChampion(AssessorPool):
    """The registry's champion lookup blocks until the test releases it (a reference that takes
    long to load after a restart)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.release = threading.Event()

    def champion(self):
        self.release.wait(60)
        return super().champion()


def test_ingest_is_up_before_ready_and_through_the_drain(tmp_path):
    store = registered_store(tmp_path / "store")
    served = load_served_model(store, "mnist", "v0001")
    images, _ = mnist_test_images(4, start=50)

    def pair(i):
        request = seldon_request(images[i:i + 1])
        outputs = served.outputs(np.asarray(json.loads(request)["data"]["ndarray"], np.float32))  # with the served self-agreement
        return request, json.dumps(build_response(**outputs, model="mnist", version="v0001")).encode()

    port = free_port()
    config = SidecarConfig(ingest_port=port, port=free_port(), store_url=store.url, state_dir=tmp_path / "state", deployment="life",
                           flush_interval_s=600, drain_quiet_s=3.0, drain_max_s=30.0)
    pool = _SlowChampion(store, "mnist", window=100)
    url = f"http://127.0.0.1:{port}"

    async def post_prediction(session, rid, i):
        request, response = pair(i)
        for kind, body in (("request", request), ("response", response)):
            headers, data = encode_cloudevent(kind, rid, body, source="http://executor:8000/", model_id="classifier")
            async with session.post(url + "/", data=data, headers=headers) as resp:
                assert resp.status == 200, await resp.text()

    async def ready(session):
        async with session.get(url + "/health/ready") as resp:
            return resp.status

    async def main():
        stop = asyncio.Event()
        server = asyncio.create_task(serve(config, SidecarService(config, store, pool), stop))
        async with aiohttp.ClientSession() as session:
            while True:  # wait for the port, not for readiness
                try:
                    status = await ready(session)
                    break
                except aiohttp.ClientConnectionError:
                    assert not server.done(), server
                    await asyncio.sleep(0.05)
            assert status == 503, "the reference is still loading"
            await post_prediction(session, "before-ready", 0)  # taken while not ready
            pool.release.set()
            while await ready(session) != 200:
                await asyncio.sleep(0.05)
            await post_prediction(session, "while-ready", 1)
            stop.set()  # SIGTERM
            while await ready(session) != 503:
                await asyncio.sleep(0.01)
            await post_prediction(session, "while-draining", 2)  # the executor still posting its queue
        await asyncio.wait_for(server, 60)

    asyncio.run(main())
    records = read_operational(store, "life")
    assert sorted(records.request_ids.tolist()) == ["before-ready", "while-draining", "while-ready"]
