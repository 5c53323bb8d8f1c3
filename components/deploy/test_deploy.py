"""deploy alone. The cluster path runs the real ``kubernetes`` client against a tiny Kubernetes API
stand-in over HTTP (:mod:`daic.components.testing.fake_kube`), with the SeldonDeployment that
``daic.serving.manifest`` renders; the local path moves the registry's champion pointer."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from daic.components.deploy.logic import DeployConfig, promote_local, promote_seldon
from daic.components.testing.fake_kube import FakeKube
from daic.operators.seldon import PLURAL, read_split
from daic.serving.manifest import DeploymentParams, render_seldon_deployment


@pytest.fixture
def cluster():
    with FakeKube() as kube:
        sdep = render_seldon_deployment(DeploymentParams(name="mnist", namespace="daic", model_version="v0001"))
        kube.put(PLURAL, "daic", sdep)
        yield kube


def _split(kube):
    return read_split(kube.objects[(PLURAL, "daic", "mnist")], "default")


def test_canary_then_full_promotion(cluster):
    seen_during_wait = []
    config = DeployConfig(target="seldon", namespace="daic", canary_share=20, canary_seconds=300)
    previous, steps = promote_seldon(cluster.api(), "v0002", config,
                                     sleep=lambda s: seen_during_wait.append((s, _split(cluster))))
    assert previous == "v0001"
    assert seen_during_wait == [(300, ("v0001", "v0002", 20))]  # the canary served while we waited
    assert _split(cluster) == ("v0002", None, 0)
    assert [s["step"] for s in steps] == ["canary", "promote"]
    patches = [r for r in cluster.requests if r[0] == "PATCH"]
    assert len(patches) == 2
    predictors = cluster.objects[(PLURAL, "daic", "mnist")]["spec"]["predictors"]
    assert [p["name"] for p in predictors] == ["default"] and predictors[0]["traffic"] == 100


def test_no_canary_when_share_is_zero(cluster):
    previous, steps = promote_seldon(cluster.api(), "v0002", DeployConfig(target="seldon", namespace="daic",
                                                                          canary_share=0), sleep=pytest.fail)
    assert [s["step"] for s in steps] == ["promote"] and _split(cluster) == ("v0002", None, 0)


def test_missing_deployment_is_an_api_error(cluster):
    from kubernetes.client.exceptions import ApiException

    with pytest.raises(ApiException) as info:
        promote_seldon(cluster.api(), "v0002", DeployConfig(target="seldon", namespace="daic", deployment="other"))
    assert info.value.status == 404


@pytest.mark.parametrize("field,value,match", [
    ("target", "aws", "deploy target must be one of local, seldon"),
    ("canary_share", 100, r"canary_share must be in \[0, 99\]"),
    ("canary_seconds", -1, "canary_seconds must be >= 0"),
    ("reload_urls", "localhost:9000/reload", "reload_urls must be http"),
])
def test_config_rejects_bad_values(field, value, match):
    with pytest.raises(ValueError, match=match):
        DeployConfig(**{field: value})


class _Reloads(BaseHTTPRequestHandler):
    got: list = []

    def do_POST(self):  # noqa: N802
        _Reloads.got.append((self.path, json.loads(self.rfile.read(int(self.headers["Content-Length"])))))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_local_promotion_moves_the_pointer_and_asks_servers_to_reload(tmp_path):
    registry = pytest.importorskip("daic.models.registry", reason="the model registry has not landed yet")
    from daic.storage import open_store

    store = open_store(f"file://{tmp_path}")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Reloads)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        _Reloads.got = []
        url = f"http://127.0.0.1:{server.server_port}/reload"
        steps = promote_local(store, "v0002", DeployConfig(reload_urls=url))
    finally:
        server.shutdown()
        server.server_close()
    assert registry.champion(store, "mnist") == "v0002"
    assert _Reloads.got == [("/reload", {"model": "mnist", "version": "v0002"})]
    assert steps[-1]["status"] == 204
