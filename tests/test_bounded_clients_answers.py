"""daic's HTTP clients bound the answers they read: an endless body, a huge declared one, a body
dripped a byte at a time or one that stops half-way costs each a bounded time and memory, and
the caller gets an error naming the peer and the bound (daic.serving.http_client).

The peers (the sidecar, Prometheus, a graph node, the sidecar's /assess) cannot be made to
misbehave on demand, so a real HTTP server on loopback plays them
(components/testing/misbehaving_http.py, a stand-in at the HTTP boundary). Each call runs in a
thread the test waits for with a generous bound, so a missing bound fails the test instead of
hanging the suite.
"""
from __future__ import annotations

import asyncio
import json
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from aiohttp.test_utils import TestClient, TestServer
from click.testing import CliRunner

from daic.cli import main as cli
from daic.components.testing.black_hole import returns_within
from daic.components.testing.misbehaving_http import misbehaving_server
from daic.operators.estimates import PrometheusEstimate, SidecarEstimate
from daic.operators.observations import EstimateError
from daic.serving import http_client
from daic.serving.abstainer import Abstainer
from daic.serving.gateway import Gateway, GatewayConfig

NOW = datetime(2026, 12, 7, tzinfo=timezone.utc)
SIZE_MODES = ("endless", "declared")
TIME_MODES = ("drip", "silent")


def _why(mode: str) -> str:
    return "bytes daic reads" if mode in SIZE_MODES else "1s"


@pytest.mark.parametrize("mode", SIZE_MODES + TIME_MODES)
def test_send_bounds_size_and_total_time(mode):
    with misbehaving_server(mode) as url:
        outcome = returns_within(30, lambda: http_client.send(None, "GET", url + "/x", timeout_s=1.0,
                                                              max_bytes=2**20))
    expected = http_client.AnswerTooLarge if mode in SIZE_MODES else requests.Timeout
    assert isinstance(outcome.error, expected), outcome.error
    assert _why(mode) in str(outcome.error) and url in str(outcome.error)
    assert outcome.elapsed < 10


class _Small(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802
        data = json.dumps({"ok": True, "path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def test_send_returns_a_well_behaved_answer_read_whole():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Small)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_port}/estimate?x=1"
        response = http_client.send(requests.Session(), "GET", url, timeout_s=5, max_bytes=1024)
        assert response.status_code == 200 and response.json() == {"ok": True, "path": "/estimate?x=1"}
        with pytest.raises(http_client.AnswerTooLarge, match="more than the 10 bytes"):
            http_client.send(None, "GET", url, timeout_s=5, max_bytes=10)
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.parametrize("mode", SIZE_MODES + TIME_MODES)
def test_the_operators_sidecar_source_reports_a_misbehaving_sidecar_as_an_error(mode):
    with misbehaving_server(mode) as url:
        source = SidecarEstimate(url + "/estimate", timeout=1.0)
        outcome = returns_within(30, lambda: source.read(NOW))
    assert outcome.error is None, outcome.error
    assert isinstance(outcome.value, EstimateError) and _why(mode) in outcome.value.error, outcome.value
    assert outcome.elapsed < 10


@pytest.mark.parametrize("mode", SIZE_MODES + TIME_MODES)
def test_the_operators_prometheus_source_reports_a_misbehaving_prometheus_as_an_error(mode):
    with misbehaving_server(mode) as url:
        source = PrometheusEstimate(url, selector='{deployment="mnist"}', timeout=1.0)
        outcome = returns_within(30, lambda: source.read(NOW))
    assert outcome.error is None, outcome.error
    assert isinstance(outcome.value, EstimateError) and _why(mode) in outcome.value.error, outcome.value
    assert outcome.elapsed < 10


@pytest.mark.parametrize("mode", SIZE_MODES)
def test_the_cli_names_the_bound_instead_of_reading_an_endless_estimate(mode):
    with misbehaving_server(mode) as url:
        outcome = returns_within(60, lambda: CliRunner().invoke(cli, ["oracle", "estimate", "--url", url]))
    result = outcome.value
    assert result.exit_code == 1 and "bytes daic reads" in result.output, result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("mode", ("endless", "declared"))
def test_the_gateway_answers_500_naming_a_node_whose_answer_is_over_its_cap(mode):
    async def main(url):
        gateway = Gateway(GatewayConfig(model_url=url, logger_url=None, max_body_bytes=65_536, timeout_s=5.0))
        async with TestClient(TestServer(gateway.app())) as client:
            resp = await client.post("/api/v1.0/predictions", data=b'{"data": {"ndarray": [[0]]}}',
                                     headers={"Content-Type": "application/json"})
            return resp.status, await resp.text()

    with misbehaving_server(mode) as url:
        outcome = returns_within(60, lambda: asyncio.run(main(url)))
    assert outcome.error is None, outcome.error
    status, text = outcome.value
    assert status == 500 and "node" in text and "65536 bytes daic reads" in text, text


def test_the_abstainer_treats_an_endless_sidecar_answer_as_unavailable():
    with misbehaving_server("endless") as url:
        client = Abstainer("0.5", url + "/assess", timeout_s=2.0)
        response = {"data": {"ndarray": [[0.1, 0.9], [0.8, 0.2]]}, "meta": {"tags": {}}}
        outcome = returns_within(60, lambda: client.tag(response, 2))
    assert outcome.error is None, outcome.error
    status = outcome.value["meta"]["tags"]["daic.abstain.status"]
    assert "bytes" in status, status
