"""The request logger: a child process of the local gateway that posts its CloudEvents.

Seldon's executor hands each logged payload to a queue served by logger workers (goroutines,
``executor/logger`` in seldon-core 1.x), so logging costs the request path almost nothing. A
Python gateway that posted the events itself paid ~0.4 ms of its event loop's CPU per event on
this project's 2-core machine — more than the whole rest of its logging — and that CPU came out
of the serving path (docs/benchmarks/serving.md). Here the gateway only writes each event down a
pipe; this process does the HTTP and answers with one status per event, so the gateway still
counts every event as sent, rejected or failed.

Wire format (both pipes, pure functions below, tested on their own):

* gateway → logger, one frame per event: ``!II`` (header-JSON length, body length), the headers
  as a JSON object, the body bytes;
* logger → gateway, one ``!H`` per event, in completion order: the sidecar's HTTP status, or 0
  when the post failed (connection refused, timeout); written in batches every 10 ms.

The process exits when its stdin closes, after posting what it has read; it ignores SIGTERM and
SIGINT, which a stop of the gateway's process group also sends it, so events the gateway has
handed over are still delivered while the gateway shuts down.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import struct
import sys

import orjson

from daic.serving.http_client import SMALL_ANSWER_BYTES, AnswerTooLarge, read_capped

logger = logging.getLogger(__name__)

_HEAD = struct.Struct("!II")
_ACK = struct.Struct("!H")
ACK_SIZE = _ACK.size
FAILED = 0  # the status reported when the post itself failed


def encode_frame(headers: dict[str, str], body: bytes) -> bytes:
    header_json = orjson.dumps(headers)
    return _HEAD.pack(len(header_json), len(body)) + header_json + body


async def read_frame(reader: asyncio.StreamReader) -> tuple[dict[str, str], bytes] | None:
    """The next frame, or None at a clean end of stream (EOF between frames)."""
    try:
        head = await reader.readexactly(_HEAD.size)
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise ValueError(f"request logger: stream ended inside a frame header ({len(exc.partial)} bytes)") from None
        return None
    header_len, body_len = _HEAD.unpack(head)
    headers = orjson.loads(await reader.readexactly(header_len))
    body = await reader.readexactly(body_len)
    return headers, body


def encode_ack(status: int) -> bytes:
    return _ACK.pack(status)


def decode_acks(data: bytes) -> list[int]:
    if len(data) % ACK_SIZE:
        raise ValueError(f"request logger: {len(data)} bytes is not a whole number of acks")
    return [s for (s,) in _ACK.iter_unpack(data)]


async def forward(reader: asyncio.StreamReader, write_acks, url: str, workers: int, timeout_s: float,
                  ack_interval_s: float = 0.01) -> int:
    """Post every frame read from ``reader`` to ``url`` with ``workers`` concurrent posts; hand
    the acks to ``write_acks(bytes)`` at most ``ack_interval_s`` after the first one waiting (one
    pipe write and one wake-up of the gateway per interval, not per event; nothing while idle) and
    at the end. Returns the number of events handled."""
    import aiohttp

    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue(maxsize=4 * workers)  # full: stop reading, the pipe fills
    handled = 0
    acks: list[bytes] = []

    def flush_acks() -> None:
        if acks:
            write_acks(b"".join(acks))
            acks.clear()

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal handled
        while True:
            headers, body = await queue.get()
            status = FAILED
            try:
                async with session.post(url, data=body, headers=headers) as resp:
                    await read_capped(resp, SMALL_ANSWER_BYTES, url)
                    status = resp.status
            except (aiohttp.ClientError, asyncio.TimeoutError, AnswerTooLarge) as exc:
                logger.warning("request logger post failed: %s", exc)
            if not acks:
                loop.call_later(ack_interval_s, flush_acks)
            acks.append(encode_ack(status))
            handled += 1
            queue.task_done()

    timeout = aiohttp.ClientTimeout(total=timeout_s)
    # No Content-Type of aiohttp's own: an event has the payload's, or none when the client sent none.
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=workers * 2),
                                     skip_auto_headers=("Content-Type",)) as session:
        tasks = [asyncio.create_task(worker(session)) for _ in range(workers)]
        try:
            while (frame := await read_frame(reader)) is not None:
                await queue.put(frame)
            await queue.join()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            flush_acks()
    return handled


async def _main(url: str, workers: int, timeout_s: float) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 26)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin.buffer)
    transport, _ = await loop.connect_write_pipe(asyncio.Protocol, sys.stdout.buffer)
    try:
        await forward(reader, transport.write, url, workers, timeout_s)
    finally:
        transport.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m daic.serving.request_logger",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--url", required=True, help="where to post the events (the sidecar)")
    parser.add_argument("--workers", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be >= 1")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # A stop signal to the gateway's process group reaches this process too; the gateway decides
    # when logging ends (it closes our stdin after its own queue is delivered), so only that ends it.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
    asyncio.run(_main(args.url, args.workers, args.timeout))


if __name__ == "__main__":
    main()
