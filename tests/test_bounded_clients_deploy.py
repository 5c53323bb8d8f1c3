"""deploy's Seldon promotion is bounded and waits through an API server's bad moments.

The faults (503, 429, reset connections, a 409 from another writer) cannot be made to happen on
demand on the real kube-apiserver the other deploy tests use, so these run the real ``kubernetes``
client against :mod:`daic.components.testing.fake_kube` (real HTTP, its ``fault`` hook), holding
the SeldonDeployment ``daic.serving.manifest`` renders. A "black hole" (a listening socket that never
accepts) plays a hung API server; the call runs in a thread the test waits for with a generous bound.
"""
from __future__ import annotations

import threading
import time

import pytest

from daic.components.deploy.logic import DeployConfig, promote_seldon
from daic.components.testing.black_hole import never_answering_server, returns_within
from daic.components.testing.fake_kube import FakeKube
from daic.operators.seldon import PLURAL, read_split
from daic.serving.manifest import DeploymentParams, render_seldon_deployment


def _faults(plan):
    plan = list(plan)

    def fault(method, path):
        return plan.pop(0) if plan else None
    return fault


@pytest.fixture
def kube():
    with FakeKube() as fake:
        fake.put(PLURAL, "daic", render_seldon_deployment(DeploymentParams(name="mnist", namespace="daic",
                                                                           model_version="v0001")))
        yield fake


def _split(kube):
    return read_split(kube.objects[(PLURAL, "daic", "mnist")], "default")


def test_transient_faults_after_a_long_canary_do_not_fail_the_promotion(kube):
    waited = []
    config = DeployConfig(target="seldon", namespace="daic", canary_share=20, canary_seconds=600)

    def sleep(seconds):
        waited.append(seconds)
        if seconds == 600:  # the canary served; now the API server has a bad moment
            kube.fault = _faults([503, "reset", 429, None, 409, None])
    # After the canary: apply's read meets a 503, then a reset (urllib3 resends the GET) and a 429; the
    # next read works, its patch meets a 409 (another writer) and is tried again from a fresh read.
    previous, steps = promote_seldon(kube.api(), "v0002", config, sleep=sleep)
    assert previous == "v0001" and _split(kube) == ("v0002", None, 0)
    assert [s["step"] for s in steps] == ["canary", "promote"]
    assert waited[0] == 600 and len(waited) == 4  # the canary, then one backoff per fault


def test_a_fault_that_lasts_past_the_retry_bound_names_it(kube):
    config = DeployConfig(target="seldon", namespace="daic", canary_share=0)
    kube.fault = _faults([503] * 1000)
    clock = [0.0]

    def sleep(seconds):
        clock[0] += seconds
    with pytest.raises(TimeoutError, match=r"reading SeldonDeployment daic/mnist: .* for 120s; the last: HTTP 503"):
        promote_seldon(kube.api(), "v0002", config, sleep=sleep, clock=lambda: clock[0])
    assert 120 <= clock[0] < 131


@pytest.mark.parametrize("status", [401, 403, 404])
def test_refusals_fail_at_once(kube, status):
    kube.fault = _faults([status])
    with pytest.raises(Exception, match=str(status)) as info:
        promote_seldon(kube.api(), "v0002", DeployConfig(target="seldon", namespace="daic", canary_share=0),
                       sleep=pytest.fail)
    assert not isinstance(info.value, TimeoutError)


def test_a_hung_api_server_cannot_hold_the_deploy_step(monkeypatch):
    from kubernetes import client

    import daic.components.deploy.logic as logic

    monkeypatch.setattr(logic, "API_TIMEOUT", (0.5, 0.5))
    with never_answering_server() as url:
        configuration = client.Configuration()
        configuration.host = url
        api = client.CustomObjectsApi(client.ApiClient(configuration))
        outcome = returns_within(30, lambda: promote_seldon(
            api, "v0002", DeployConfig(target="seldon", namespace="daic", canary_share=0),
            sleep=lambda s: None, retry_for_s=0))
    assert outcome.elapsed < 15
    assert isinstance(outcome.error, TimeoutError) and "timed out" in str(outcome.error).lower()


def test_a_reload_url_that_never_finishes_its_answer_cannot_hold_the_local_deploy(tmp_path):
    """A server that reloads, answers 200 and then drips its body: only the status is read."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from daic.components.deploy.logic import promote_local
    from daic.components.testing.registry import register_untrained
    from daic.storage import open_store

    class Dripping(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Length", "1000000")
            self.end_headers()
            end = time.monotonic() + 60  # a slow server, not synchronisation: it stops after a minute
            try:
                while time.monotonic() < end:
                    self.wfile.write(b" ")
                    self.wfile.flush()
                    time.sleep(0.1)
            except OSError:
                pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Dripping)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    store = open_store(f"file://{tmp_path}")
    _, version = register_untrained(store, [None, "v0001"])
    config = DeployConfig(reload_urls=f"http://127.0.0.1:{httpd.server_port}/reload")
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.update(steps=promote_local(store, version, config)), daemon=True)
    thread.start()
    thread.join(30)
    httpd.shutdown()
    httpd.server_close()
    assert not thread.is_alive(), "promote_local still reading the reload answer after 30 s"
    assert outcome["steps"][-1] == {"step": "reload", "url": config.urls[0], "status": 200}
