"""The local gateway under bad input and a dying request logger (issue 14): bodies over the cap
and undecodable ones are refused before anything is logged or forwarded, and a request logger
killed under it is restarted (the gateway not ready meanwhile, what it held counted as failed,
later events delivered).

The gateway and its request-logger child are the real ones; the graph's node and the sidecar's
ingest are small aiohttp apps (the HTTP boundary), as in test_serving_contract.py."""
from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from daic.serving.gateway import Gateway, GatewayConfig

ANSWER = b'{"data": {"ndarray": [[1.0]]}}'


async def _world(**config):
    """(gateway client factory, events received by the sink, node calls, cleanup)."""
    received, calls = [], []

    async def sink(request: web.Request) -> web.Response:
        received.append((request.headers.get("Ce-Type"), await request.read()))
        return web.Response(status=200)

    async def node(request: web.Request) -> web.Response:
        calls.append(await request.read())
        return web.Response(body=ANSWER, headers={"Content-Type": "application/json"})

    sink_app, node_app = web.Application(), web.Application()
    sink_app.router.add_post("/", sink)
    node_app.router.add_route("*", "/{tail:.*}", node)
    servers = [TestServer(sink_app), TestServer(node_app)]
    for server in servers:
        await server.start_server()
    gateway = Gateway(GatewayConfig(model_url=str(servers[1].make_url("")).rstrip("/"),
                                    logger_url=str(servers[0].make_url("/")), **config))
    return gateway, received, calls, servers


def test_oversized_and_undecodable_bodies_are_refused_before_anything_is_logged():
    async def main():
        gateway, received, calls, servers = await _world(max_body_bytes=4096)
        try:
            async with TestClient(TestServer(gateway.app())) as client:
                big = await client.post("/api/v1.0/predictions", data=b"x" * 10_000,
                                        headers={"Content-Type": "application/json"})
                garbage = await client.post("/api/v1.0/predictions", data=b"not gzip",
                                            headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
                feedback = await client.post("/api/v1.0/feedback", data=b"x" * 10_000,
                                             headers={"Content-Type": "application/json"})
                statuses = [big.status, garbage.status, feedback.status]
                ok = await client.post("/api/v1.0/predictions", data=b'{"data": {"ndarray": [[0]]}}',
                                       headers={"Content-Type": "application/json"})
                statuses.append(ok.status)
            return statuses, received, calls
        finally:
            for server in servers:
                await server.close()

    statuses, received, calls = asyncio.run(main())
    assert statuses == [413, 400, 413, 200]
    assert len(calls) == 1 and [kind for kind, _ in received] == [
        "io.seldon.serving.inference.request", "io.seldon.serving.inference.response"]


def test_a_killed_request_logger_is_restarted_and_later_events_are_delivered():
    async def main():
        gateway, received, _, servers = await _world(logger_restart_s=1.0)
        try:
            async with TestClient(TestServer(gateway.app())) as client:
                async def predict():
                    r = await client.post("/api/v1.0/predictions", data=b'{"data": {"ndarray": [[0]]}}',
                                          headers={"Content-Type": "application/json"})
                    assert r.status == 200

                async def ready():
                    return (await client.get("/health/ready")).status

                await predict()
                first = gateway._logger
                first.kill()
                await first.wait()
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 30
                down = False
                while gateway._logger is first or gateway._logger_down:
                    down = down or await ready() == 503
                    assert loop.time() < deadline, "the request logger was not restarted"
                    await asyncio.sleep(0.02)  # polling the gateway's state, not synchronising
                assert await ready() == 200
                await predict()
            return down, gateway.stats, received
        finally:
            for server in servers:
                await server.close()

    down, stats, received = asyncio.run(main())
    assert down, "not ready while the request logger was down"
    assert stats["logger_restarts"] == 1
    # the second prediction's two events reached the sink after the restart
    assert len(received) >= 2 + 2 - stats.get("events_failed", 0)
    assert stats["events_sent"] + stats.get("events_failed", 0) == stats["events_queued"] == 4
    assert stats["events_sent"] >= 2


def test_a_puid_that_cannot_be_logged_is_a_400_not_a_500():
    async def main():
        gateway, received, calls, servers = await _world()
        try:
            async with TestClient(TestServer(gateway.app())) as client:
                statuses = []
                for puid in (b"bad\xffbytes", b"tab\there"):  # raw bytes: aiohttp's client would re-encode
                    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
                    body = b'{"data": {"ndarray": [[0]]}}'
                    writer.write(b"POST /api/v1.0/predictions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                 b"Seldon-Puid: " + puid + b"\r\nContent-Length: " + str(len(body)).encode()
                                 + b"\r\nConnection: close\r\n\r\n" + body)
                    await writer.drain()
                    statuses.append(int((await reader.readline()).split()[1]))
                    writer.close()
                ok = await client.post("/api/v1.0/predictions", data=b'{"data": {"ndarray": [[0]]}}',
                                       headers={"Content-Type": "application/json", "Seldon-Puid": "é-%41"})
                statuses.append((ok.status, ok.headers.get("Seldon-Puid")))
            return statuses, calls
        finally:
            for server in servers:
                await server.close()

    statuses, calls = asyncio.run(main())
    assert statuses[:2] == [400, 400] and statuses[2] == (200, "é-%41") and len(calls) == 1
