"""The gateway's request logger: frames and acks, and that every logged event ends up counted as
sent, rejected or failed — including when the receiver refuses, is absent, or the logger process
dies. The receiver is a small aiohttp app standing in for the sidecar (the full stack test posts
to the real one); the gateway and its request-logger child process are the real ones."""
from __future__ import annotations

import asyncio
import socket

import pytest
from aiohttp import web

from daic.serving.gateway import Gateway, GatewayConfig
from daic.serving.request_logger import decode_acks, encode_ack, encode_frame, read_frame


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_frames_round_trip_and_a_torn_frame_is_an_error():
    async def go():
        reader = asyncio.StreamReader()
        frames = [({"ce-id": "a", "content-type": "application/json"}, b'{"x": 1}'), ({"ce-id": "b"}, b"")]
        blob = b"".join(encode_frame(h, b) for h, b in frames)
        reader.feed_data(blob)
        reader.feed_eof()
        got = [await read_frame(reader), await read_frame(reader), await read_frame(reader)]
        assert got == [*frames, None]
        torn = asyncio.StreamReader()
        torn.feed_data(blob[:5])
        torn.feed_eof()
        with pytest.raises(ValueError, match="inside a frame header"):
            await read_frame(torn)

    asyncio.run(go())
    assert decode_acks(encode_ack(200) + encode_ack(0) + encode_ack(503)) == [200, 0, 503]
    with pytest.raises(ValueError, match="whole number"):
        decode_acks(b"\x00")


async def _receiver(statuses):
    """An app answering each post with the next status of ``statuses`` (cycled); keeps bodies."""
    received = []

    async def post(request: web.Request) -> web.Response:
        received.append((request.headers.get("ce-id"), await request.read()))
        return web.Response(status=statuses[(len(received) - 1) % len(statuses)])

    app = web.Application()
    app.router.add_post("/", post)
    runner = web.AppRunner(app)
    await runner.setup()
    port = _free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port, received


async def _log_events(gateway: Gateway, n: int) -> None:
    await gateway.start()
    for i in range(n):
        gateway._log("request", f"puid-{i}", b'{"data": {"ndarray": [[%d]]}}' % i)
    await gateway.stop()


def test_every_event_is_delivered_or_counted():
    async def go():
        runner, port, received = await _receiver([200, 200, 503])
        gateway = Gateway(GatewayConfig(logger_url=f"http://127.0.0.1:{port}/", log_workers=2))
        await _log_events(gateway, 30)
        await runner.cleanup()
        return gateway.stats, received

    stats, received = asyncio.run(go())
    assert stats["events_queued"] == 30 and len(received) == 30
    assert stats["events_sent"] == 20 and stats["events_rejected_503"] == 10, stats
    assert sorted(body for _, body in received) == sorted(b'{"data": {"ndarray": [[%d]]}}' % i for i in range(30))
    assert len({eid for eid, _ in received}) == 30  # one Ce-Id per event


def test_an_absent_receiver_counts_failures_without_blocking():
    gateway = Gateway(GatewayConfig(logger_url=f"http://127.0.0.1:{_free_port()}/", timeout_s=5))
    asyncio.run(_log_events(gateway, 5))
    assert gateway.stats["events_queued"] == 5 and gateway.stats["events_failed"] == 5, gateway.stats


def test_a_dead_request_logger_fails_its_events_and_stop_returns():
    async def go():
        runner, port, received = await _receiver([200])
        gateway = Gateway(GatewayConfig(logger_url=f"http://127.0.0.1:{port}/"))
        await gateway.start()
        gateway._log("request", "before", b"{}")
        while gateway.stats["events_sent"] < 1:  # delivered and acknowledged
            await asyncio.sleep(0.01)
        gateway._logger.kill()
        await gateway._logger.wait()
        for i in range(3):
            gateway._log("request", f"after-{i}", b"{}")
        await asyncio.wait_for(gateway.stop(), timeout=20)
        await runner.cleanup()
        return gateway.stats

    stats = asyncio.run(go())
    assert stats["events_queued"] == 4 and stats["events_sent"] == 1 and stats["events_failed"] == 3, stats


def test_the_request_logger_process_outlives_a_stop_signal_and_delivers_what_it_was_given():
    import signal
    import subprocess
    import sys

    from daic.serving.request_logger import ACK_SIZE

    async def go():
        runner, port, received = await _receiver([200])
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "daic.serving.request_logger", "--url", f"http://127.0.0.1:{port}/",
            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        proc.stdin.write(encode_frame({"ce-id": "first"}, b"{}"))
        await proc.stdin.drain()
        first = await proc.stdout.readexactly(ACK_SIZE)  # running, and its signal handlers set
        proc.send_signal(signal.SIGTERM)  # what stopping the gateway's process group sends it
        proc.stdin.write(b"".join(encode_frame({"ce-id": f"e{i}"}, b"{}") for i in range(5)))
        proc.stdin.close()
        rest = await proc.stdout.read()
        code = await proc.wait()
        await runner.cleanup()
        return decode_acks(first + rest), code, received

    acks, code, received = asyncio.run(go())
    assert acks == [200] * 6 and code == 0
    assert received[0][0] == "first" and sorted(eid for eid, _ in received[1:]) == [f"e{i}" for i in range(5)]


def test_cpu_settings_name_the_field_and_the_machine_range():
    from daic.serving.stack import StackConfig

    with pytest.raises(ValueError, match=r"logger_cpus must be a non-empty set of CPU numbers in 0\.\."):
        GatewayConfig(logger_cpus=(10_000,))
    with pytest.raises(ValueError, match=r"cpus\['sidecar'\] must be"):
        StackConfig(cpus={"sidecar": ()})
    with pytest.raises(ValueError, match="unknown process 'proxy'"):
        StackConfig(cpus={"proxy": (0,)})
    assert StackConfig(cpus={"logger": (0,)}).cpus == {"logger": (0,)}
