"""Kill the sidecar process (SIGKILL) after it acknowledged events, start it again: every
acknowledged prediction ends up in the object store, exactly once; a SIGTERM flushes."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import requests

from daic.serving.loading import load_served_model
from daic.serving.protocol import build_response
from daic.serving.stack import terminate
from daic.sidecar.events import encode_cloudevent
from daic.sidecar.records import list_parts, read_operational, read_part
from test_serving_support import (
    free_port, mnist_test_images, registered_store, seldon_request, wait_http_ready)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("restart")
    store = registered_store(base / "store")
    version = "v0001"
    return {"base": base, "store": store, "served": load_served_model(store, "mnist", version), "version": version}


class Sidecar:
    """``daic oracle serve`` as a subprocess; automatic flushes are off, so only the test's
    explicit flushes, the crash and the restart decide what reaches the store."""

    def __init__(self, world, port):
        self.world, self.port, self.public_port = world, port, free_port()
        self.url = f"http://127.0.0.1:{port}"  # the ingest port (events and admin, loopback)
        self.log = world["base"] / "sidecar.log"
        self.proc = None

    def start(self):
        cmd = [sys.executable, "-m", "daic.cli", "oracle", "serve", "--ingest-port", str(self.port),
               "--port", str(self.public_port),
               "--store", self.world["store"].url, "--state-dir", str(self.world["base"] / "state"),
               "--deployment", "restart", "--flush-interval", "3600", "--batch-rows", "100000"]
        with open(self.log, "ab") as fh:
            self.proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        wait_http_ready(self.proc, self.url + "/health/ready", self.log, 90, "the sidecar to become ready")

    def post(self, kind, rid, body):
        headers, data = encode_cloudevent(kind, rid, body, source="http://executor", model_id="classifier")
        resp = requests.post(self.url + "/", data=data, headers=headers, timeout=10)
        assert resp.status_code == 200, resp.text  # acknowledged: from here on it must not be lost
        return resp


def _pair(world, images):
    req = seldon_request(images)
    outputs = world["served"].outputs(np.asarray(json.loads(req)["data"]["ndarray"], np.float32))  # with the served self-agreement
    return req, json.dumps(build_response(**outputs, model="mnist", version=world["version"])).encode()


def test_sigkill_after_acknowledgement_loses_nothing(world):
    images, _ = mnist_test_images(60)
    pairs = {f"r{i:02d}": _pair(world, images[2 * i:2 * i + 2]) for i in [*range(6), *range(10, 14), *range(20, 25), 29]}
    sidecar = Sidecar(world, free_port())
    sidecar.start()
    try:
        for i in range(6):                                # complete predictions ...
            sidecar.post("request", f"r{i:02d}", pairs[f"r{i:02d}"][0])
            sidecar.post("response", f"r{i:02d}", pairs[f"r{i:02d}"][1])
        for i in (20, 21, 22):                            # ... and halves still waiting
            sidecar.post("request", f"r{i}", pairs[f"r{i}"][0])
        first = requests.post(sidecar.url + "/admin/flush", timeout=60).json()["batch"]
        assert first is not None
        for i in range(10, 14):                           # after the flush: only in the log
            sidecar.post("response", f"r{i:02d}", pairs[f"r{i:02d}"][1])
            sidecar.post("request", f"r{i:02d}", pairs[f"r{i:02d}"][0])
        for i in (23, 24):
            sidecar.post("response", f"r{i}", pairs[f"r{i}"][1])
        sidecar.proc.kill()                               # SIGKILL: no shutdown code runs
        sidecar.proc.wait(timeout=30)
        terminate(sidecar.proc)
        assert len(read_operational(world["store"], "restart")) == 12, "only the first flush reached the store"

        sidecar.start()                                   # replays the log, restores pending halves
        for i in (20, 21, 22):
            sidecar.post("response", f"r{i}", pairs[f"r{i}"][1])
        for i in (23, 24):
            sidecar.post("request", f"r{i}", pairs[f"r{i}"][0])
        sidecar.post("request", "r05", pairs["r05"][0])  # a duplicate of a request joined before the crash
        for rid in ("r00", "r11"):  # feedback for predictions from before the crash: checkpointed and replayed
            sidecar.post("feedback", rid, json.dumps({"truth": {"data": {"ndarray": [0, 1]}}}).encode())
        requests.post(sidecar.url + "/admin/flush", timeout=60).raise_for_status()
        estimate = requests.get(sidecar.url + "/estimate", timeout=10).json()

        sidecar.post("request", "r29", pairs["r29"][0])   # accepted just before a graceful stop
        sidecar.post("response", "r29", pairs["r29"][1])
    finally:
        code = terminate(sidecar.proc)                    # SIGTERM: flushes, then exits
    assert code == 0, sidecar.log.read_text()[-3000:]
    records = read_operational(world["store"], "restart")
    expected = sorted(f"r{i:02d}:{row}" for i in [*range(6), *range(10, 14), *range(20, 25), 29] for row in range(2))
    assert sorted(records.ids.tolist()) == expected
    raw_rows = sum(len(read_part(world["store"], k)) for k in list_parts(world["store"], "restart"))
    assert raw_rows == len(expected), "nothing was written twice"
    assert estimate["n"] == 30, "the restored estimator window holds every scored input"
    assert estimate["versions"][world["version"]]["feedback_n"] == 4, "feedback still links after a restart"
