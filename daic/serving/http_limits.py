"""Bounds every daic HTTP server (the sidecar's two ports, the gateway, the labeling page) puts on
its clients, so a slow or greedy client costs a bounded time, memory and file descriptors.

aiohttp alone leaves three things open (aiohttp 3.14): an ``AppRunner``'s idle keep-alive
connection, and a connection that never finishes its request head, stay for ``keepalive_timeout``
= 3630 s (``run_app`` passes 75 s); nothing bounds the time to receive a body once the head has
arrived (a declared Content-Length dripped a byte a minute holds the handler for ever); and
nothing caps the open connections, so idle ones use up the process's file descriptors, after
which the write-ahead log, the store and ``accept()`` itself fail. What aiohttp does bound is
kept and stated here: a request line or header field of at most 8190 bytes and at most 128
header fields (400 above), ``client_max_size`` for a body read whole (413, also for a chunked
body without end), and 10 s of discarding an unread body after the answer (``lingering_time``).

:class:`HttpLimits` holds the numbers; :func:`body_deadline` is the middleware that bounds a
body's arrival (408 and close); :class:`CappedSite` is a TCP site that answers 503 and closes
past ``max_connections``; :func:`serve_app` runs an app with all of it until SIGINT/SIGTERM
(instead of ``web.run_app``).
"""
from __future__ import annotations

import asyncio
import json
import resource
import signal
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


def default_max_connections() -> int:
    """1000, or a quarter of the soft file-descriptor limit where that is lower (at least 8): the
    rest stays for the store, the write-ahead log and a second listening site."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1000
    return max(8, min(1000, soft // 4))


@dataclass(frozen=True)
class HttpLimits:
    """``keepalive_timeout_s``: an idle keep-alive connection is closed after it, and so is a new
    one that has not sent a whole request head by then (aiohttp starts this timer at connect);
    longer than the clients' own idle timeouts that matter (aiohttp's client keeps 15 s), so the
    server rarely closes a connection a client is about to reuse.
    ``body_timeout_s``: time from a request's head to the end of its body (16 MiB at 2.2 Mbit/s).
    ``max_connections``: open connections per listening site; one more is answered 503 and closed.
    ``max_line_size`` / ``max_field_size`` / ``max_headers``: aiohttp's parser limits (400 above)."""

    keepalive_timeout_s: float = 30.0
    body_timeout_s: float = 60.0
    max_connections: int = field(default_factory=default_max_connections)
    max_line_size: int = 8190
    max_field_size: int = 8190
    max_headers: int = 128

    def __post_init__(self) -> None:
        for name in ("keepalive_timeout_s", "body_timeout_s"):
            value = getattr(self, name)
            if not (0 < value < float("inf")):
                raise ValueError(f"{name} must be a positive finite number of seconds, got {value!r}")
        for name in ("max_connections", "max_line_size", "max_field_size", "max_headers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")

    def runner_args(self) -> dict[str, Any]:
        """Keyword arguments for ``web.AppRunner`` (they reach aiohttp's request handler)."""
        return {"keepalive_timeout": self.keepalive_timeout_s, "max_line_size": self.max_line_size,
                "max_field_size": self.max_field_size, "max_headers": self.max_headers}


class BodyTimeout(Exception):
    """Raised inside a handler's body read when the body did not arrive in time. Not a
    ``RequestPayloadError``, so a handler's own "cannot read the body" branch does not take it for
    a malformed body: it reaches :func:`body_deadline`, which answers 408."""


def body_deadline(timeout_s: float):
    """Middleware (put it first): a request whose body has not fully arrived ``timeout_s`` after
    its head makes the handler's read raise :class:`BodyTimeout`, answered 408, and the
    connection is closed (the rest of the stream is not parsed). Requests without a body, and
    bodies that arrived in time, pass untouched; the handlers still read them as before."""

    @web.middleware
    async def middleware(request: web.Request, handler):
        if not request.body_exists:
            return await handler(request)
        content = request.content
        expired = False

        def expire() -> None:
            nonlocal expired
            if not content.is_eof():
                expired = True
                content.set_exception(BodyTimeout(f"the request body did not arrive within {timeout_s:g} s"))

        timer = asyncio.get_running_loop().call_later(timeout_s, expire)
        try:
            response = await handler(request)
        except BodyTimeout as exc:
            return _refusal(408, str(exc))
        finally:
            timer.cancel()
        if expired:
            response.force_close()
        return response

    return middleware


def _refusal(status: int, message: str) -> web.Response:
    response = web.Response(status=status, text=json.dumps({"error": message}), content_type="application/json",
                            headers={"X-Content-Type-Options": "nosniff"})
    response.force_close()
    return response


_FULL = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
         b"Connection: close\r\nContent-Length: %d\r\n\r\n%s")


class _Refused(asyncio.Protocol):
    """A connection past the cap: 503 written at once, our side shut for writing, what the client
    sends is discarded (closing with it unread would reset the connection and lose the 503), and
    the socket closed when the client closes or after ``grace_s``."""

    def __init__(self, max_connections: int, grace_s: float = 1.0) -> None:
        body = json.dumps({"error": f"too many open connections (at most {max_connections}); retry"}).encode()
        self._answer = _FULL % (len(body), body)
        self._grace_s = grace_s
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:
        transport.write(self._answer)
        if transport.can_write_eof():
            transport.write_eof()
        self._timer = asyncio.get_running_loop().call_later(self._grace_s, transport.abort)

    def data_received(self, data: bytes) -> None:
        pass

    def eof_received(self) -> bool:
        return False  # the transport closes

    def connection_lost(self, exc) -> None:
        if self._timer is not None:
            self._timer.cancel()


class _Counted(asyncio.Protocol):
    """Stands between the transport and aiohttp's request handler to count the site's open
    connections exactly (the count moves in ``connection_made`` / ``connection_lost``, which the
    event loop runs one at a time); past the cap the connection goes to :class:`_Refused` and no
    request handler is made."""

    def __init__(self, site: "CappedSite") -> None:
        self._site = site
        self._inner: asyncio.Protocol | None = None
        self._counted = False

    def connection_made(self, transport) -> None:
        site = self._site
        if site.open_connections >= site.max_connections:
            self._inner = _Refused(site.max_connections)
        else:
            site.open_connections += 1
            self._inner = site.runner_server()
            self._counted = True
        self._inner.connection_made(transport)

    def connection_lost(self, exc) -> None:
        if self._counted:
            self._site.open_connections -= 1
        self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self):
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


class CappedSite(web.TCPSite):
    """``web.TCPSite`` whose protocol factory counts connections (:class:`_Counted`): at most
    ``max_connections`` are served at once; one more gets a 503 and is closed."""

    def __init__(self, runner: web.BaseRunner, host: str | None, port: int | None, *, max_connections: int,
                 backlog: int = 128) -> None:
        super().__init__(runner, host, port, backlog=backlog)
        self.max_connections = max_connections
        self.open_connections = 0

    def runner_server(self) -> asyncio.Protocol:
        return self._runner.server()

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with its runner
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _Counted(self), self._host, self._port, backlog=self._backlog)
        self._bound_port = self._server.sockets[0].getsockname()[1] if self._server.sockets else self._port


def make_runner(app: web.Application, limits: HttpLimits, **kwargs: Any) -> web.AppRunner:
    """``web.AppRunner`` with ``limits``' keep-alive and parser bounds; ``kwargs`` go to it too
    (``access_log=None``, ``auto_decompress=False``: request-handler options are plain keywords
    here, not ``handler_args``)."""
    return web.AppRunner(app, handle_signals=False, **limits.runner_args(), **kwargs)


async def start_site(runner: web.AppRunner, host: str | None, port: int | None, limits: HttpLimits) -> CappedSite:
    site = CappedSite(runner, host, port, max_connections=limits.max_connections)
    await site.start()
    return site


async def serve_until(app: web.Application, host: str, port: int, stop: asyncio.Event,
                      limits: HttpLimits | None = None, **kwargs: Any) -> None:
    """Serve ``app`` on host:port under ``limits`` until ``stop`` is set, then shut down as
    ``web.run_app`` does (on_shutdown, open requests given the runner's shutdown timeout, on_cleanup)."""
    runner = make_runner(app, limits or HttpLimits(), **kwargs)
    await runner.setup()
    try:
        await start_site(runner, host, port, limits or HttpLimits())
        await stop.wait()
    finally:
        await runner.cleanup()


def serve_app(app: web.Application, host: str, port: int, limits: HttpLimits | None = None, **kwargs: Any) -> None:
    """``web.run_app`` with :class:`HttpLimits`: serve until SIGINT or SIGTERM."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve_until(app, host, port, stop, limits, **kwargs)

    asyncio.run(main())
