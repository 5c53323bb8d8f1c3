"""Slow and greedy clients against every HTTP server daic runs (daic.serving.http_limits): the
sidecar's ingest and public ports (its real ``serve``), the labeling page and the local gateway,
each served by its real app and runner on a loopback port, attacked over real sockets.

Nothing is faked. The limits are shrunk (0.6 s instead of 30/60 s, a cap of a few connections) so
each bound shows in a second; the attacks' byte drips are paced with sleeps because pacing is the
attack; every wait for the server's answer is a socket timeout with a deadline."""
from __future__ import annotations

import asyncio
import json
import os
import resource
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from daic.serving.http_limits import HttpLimits, serve_until
from test_serving_support import free_port, registered_store

FAST = HttpLimits(keepalive_timeout_s=0.6, body_timeout_s=0.6, max_connections=64)
MARGIN_S = 4.0  # the bound plus this is when the test gives up waiting
BODY_LIMIT = 64 * 1024
SERVERS = ["sidecar-ingest", "sidecar-public", "labeling", "gateway"]
TOKEN = "t" * 32


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return registered_store(tmp_path_factory.mktemp("slow") / "store")


def run_against(kind: str, tmp_path: Path, template, limits: HttpLimits, attack) -> None:
    """Serve ``kind`` on this thread's event loop (the sidecar's ``serve`` installs signal
    handlers, which only the main thread may) and run ``attack(port, POST path reading a JSON
    body, the headers it needs, a GET path answered 200)`` in a worker thread meanwhile."""
    port = free_port()
    if kind.startswith("sidecar"):
        from daic.sidecar.app import serve
        from daic.sidecar.assessment import AssessorPool
        from daic.sidecar.config import SidecarConfig
        from daic.sidecar.service import SidecarService

        token_file = tmp_path / "token"
        token_file.write_text(TOKEN)
        public = free_port()
        config = SidecarConfig(ingest_port=port, port=public, store_url=template.url, state_dir=tmp_path / "state",
                               deployment=tmp_path.name, flush_interval_s=600, drain_quiet_s=0.1, drain_max_s=1.0,
                               max_body_bytes=BODY_LIMIT, feedback_token_file=token_file)

        async def make(stop):
            service = SidecarService(config, template, AssessorPool(template, "mnist", window=100))
            await serve(config, service, stop, limits)
        target = ((port, "/", {"Ce-Type": "io.seldon.serving.inference.request"}) if kind == "sidecar-ingest"
                  else (public, "/api/v1.0/feedback", {"Authorization": f"Bearer {TOKEN}"}))
        ok_path = "/health/live"
    elif kind == "labeling":
        from daic.labeling.app import RUNNER_ARGS, LabelingConfig, make_app
        from daic.labeling.auth import Labelers

        async def make(stop):
            app = make_app(template, Labelers.load(tmp_path / "labelers.json"),
                           LabelingConfig(max_body_bytes=BODY_LIMIT), limits)
            await serve_until(app, "127.0.0.1", port, stop, limits, **RUNNER_ARGS)
        target, ok_path = (port, "/api/login", {}), "/healthz"
    else:
        from daic.serving.gateway import Gateway, GatewayConfig

        async def make(stop):
            gateway = Gateway(GatewayConfig(model_url=f"http://127.0.0.1:{free_port()}", logger_url=None,
                                            port=port, max_body_bytes=BODY_LIMIT))
            await serve_until(gateway.app(limits), "127.0.0.1", port, stop, limits, access_log=None)
        target, ok_path = (port, "/api/v1.0/predictions", {}), "/gateway/stats"
    def client():
        _wait_listening(target[0])
        attack(*target, ok_path)

    async def main():
        stop = asyncio.Event()
        server = asyncio.create_task(make(stop))
        attacker = asyncio.create_task(asyncio.to_thread(client))
        done, _ = await asyncio.wait({server, attacker}, return_when=asyncio.FIRST_COMPLETED)
        if server in done:
            attacker.cancel()
            server.result()
            pytest.fail("the server stopped during the attack")
        stop.set()
        await server
        attacker.result()
    asyncio.run(main())


def _wait_listening(port: int) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.shutdown(socket.SHUT_WR)
                sock.recv(1)  # returns when the server closed its side: it no longer counts this one
            return
        except OSError:
            assert time.monotonic() < deadline, f"nothing listens on {port}"
            time.sleep(0.05)


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def _closed_by_server(sock: socket.socket) -> bool:
    """True if the server closed (EOF or reset); False if it is still open; data is read past."""
    while True:
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        try:
            if not sock.recv(65536):
                return True
        except (ConnectionResetError, BrokenPipeError):
            return True


def _wait_closed(sock: socket.socket, within_s: float) -> float:
    """Seconds until the server closed ``sock``; fails if it is still open after ``within_s``."""
    start = time.monotonic()
    sock.settimeout(within_s)
    try:
        while sock.recv(65536):
            pass
    except socket.timeout:
        pytest.fail(f"the server kept the connection open for more than {within_s} s")
    except ConnectionResetError:
        pass
    return time.monotonic() - start


def _answer(sock: socket.socket, timeout_s: float = 5.0) -> tuple[int, bytes]:
    """(status, body) of one HTTP/1.1 answer with a Content-Length."""
    sock.settimeout(timeout_s)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed without an answer: {data[:200]!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed inside the body"
        body += chunk
    return int(head.split(b" ", 2)[1]), body


def _get(port: int, path: str) -> int:
    """The status of a one-request connection, returned once the server closed it (aiohttp runs
    connection_lost before closing the socket, so the server no longer counts it)."""
    with _connect(port) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        status = _answer(sock)[0]
        _wait_closed(sock, MARGIN_S)
        return status


def _head(path: str, headers: dict, extra: str = "") -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: x", "Content-Type: application/json",
             *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n" + extra).encode()


@pytest.mark.parametrize("kind", SERVERS)
def test_slowloris_heads_are_closed_after_the_bound_while_others_are_answered(kind, tmp_path, template):
    """20 connections drip a request head a byte per 0.1 s and never finish it; a normal client
    is answered meanwhile, and each dripping connection is closed about keepalive_timeout_s
    after it opened (aiohttp 3.14 alone: 3630 s under AppRunner, 75 s under run_app)."""
    def attack(port, path, headers, ok_path):
        socks = [_connect(port) for _ in range(20)]
        opened = time.monotonic()
        for sock in socks:
            sock.sendall(b"GET " + ok_path.encode() + b" HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        open_socks = list(socks)
        answered = False
        while open_socks:
            assert time.monotonic() - opened < FAST.keepalive_timeout_s + MARGIN_S, \
                f"{len(open_socks)} dripping connections still open"
            if not answered:
                assert _get(port, ok_path) == 200
                answered = True
            time.sleep(0.1)  # the drip rate is the attack
            for sock in list(open_socks):
                if _closed_by_server(sock):
                    open_socks.remove(sock)
                    continue
                try:
                    sock.sendall(b"a")
                except (BrokenPipeError, ConnectionResetError):
                    open_socks.remove(sock)
        assert answered
        assert _get(port, ok_path) == 200
        for sock in socks:
            sock.close()
    run_against(kind, tmp_path, template, FAST, attack)


@pytest.mark.parametrize("kind", SERVERS)
def test_a_dripped_body_gets_408_and_the_connection_is_closed(kind, tmp_path, template):
    """Content-Length 1000, ten bytes sent and then a byte per 0.1 s: 408 with a JSON message
    about body_timeout_s after the head, then the connection is closed (before: held for ever)."""
    def attack(port, path, headers, ok_path):
        with _connect(port) as sock:
            sock.sendall(_head(path, headers, "Content-Length: 1000\r\n\r\n") + b'{"x": "aaa')
            start = time.monotonic()
            while not select.select([sock], [], [], 0.1)[0]:
                assert time.monotonic() - start < FAST.body_timeout_s + MARGIN_S, "no answer to a dripped body"
                sock.sendall(b"a")
            status, body = _answer(sock)
            assert status == 408, body
            assert "did not arrive within 0.6 s" in json.loads(body)["error"]
            _wait_closed(sock, MARGIN_S)
        assert _get(port, ok_path) == 200
    run_against(kind, tmp_path, template, FAST, attack)


@pytest.mark.parametrize("kind", SERVERS)
def test_an_idle_keep_alive_connection_is_closed_after_the_bound(kind, tmp_path, template):
    def attack(port, path, headers, ok_path):
        with _connect(port) as sock:
            sock.sendall(f"GET {ok_path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            assert _answer(sock)[0] == 200
            waited = _wait_closed(sock, FAST.keepalive_timeout_s + MARGIN_S)
            assert waited >= FAST.keepalive_timeout_s * 0.5, "closed before the client could reuse it"
    run_against(kind, tmp_path, template, FAST, attack)


@pytest.mark.parametrize("kind", SERVERS)
def test_connections_past_the_cap_get_503_and_are_closed(kind, tmp_path, template):
    """With max_connections 6 held idle, a 7th connection is answered 503 (JSON) and closed at
    once instead of taking another file descriptor; once one idle connection goes, a normal
    client is served again."""
    limits = HttpLimits(keepalive_timeout_s=30, body_timeout_s=30, max_connections=6)
    def attack(port, path, headers, ok_path):
        idle = [_connect(port) for _ in range(6)]
        for sock in idle:  # each one answered: all six are being served
            sock.sendall(f"GET {ok_path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            assert _answer(sock)[0] == 200
        for _ in range(3):
            with _connect(port) as extra:
                extra.sendall(f"GET {ok_path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                status, body = _answer(extra)
                assert status == 503 and "at most 6" in json.loads(body)["error"]
                _wait_closed(extra, MARGIN_S)
        idle.pop().close()
        deadline = time.monotonic() + MARGIN_S  # the server sees the close asynchronously
        while _get(port, ok_path) != 200:
            assert time.monotonic() < deadline, "still refused after a connection was closed"
        for sock in idle:
            sock.close()
    run_against(kind, tmp_path, template, limits, attack)


@pytest.mark.parametrize("kind", SERVERS)
def test_huge_heads_are_refused_with_400_and_memory_stays_bounded(kind, tmp_path, template):
    """A 20 kB URL, 200 header fields, a 20 kB header value and 1 MB of headers without end: 400
    each (aiohttp's parser limits, stated in HttpLimits); 30 rounds of the 1 MB head do not grow
    the process by the megabytes sent."""
    heads = {"url": b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
             "fields": b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(200)) + b"\r\n",
             "value": b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"v" * 20000 + b"\r\n\r\n",
             "endless": b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-A: b\r\n" * 130_000}
    def attack(port, path, headers, ok_path):
        rss = _rss()
        for round_ in range(30):
            for name, head in heads.items():
                if round_ and name != "endless":
                    continue
                with _connect(port) as sock:
                    try:
                        sock.sendall(head)
                    except (BrokenPipeError, ConnectionResetError):
                        pass  # refused before we finished sending
                    assert _answer(sock)[0] == 400, name
        assert _rss() - rss < 20 * 2**20, "30 MB of headers left the server bigger"
        assert _get(port, ok_path) == 200
    run_against(kind, tmp_path, template, FAST, attack)


@pytest.mark.parametrize("kind", ["sidecar-ingest", "sidecar-public", "labeling", "gateway"])
def test_a_chunked_body_without_end_is_refused_past_the_body_limit(kind, tmp_path, template):
    def attack(port, path, headers, ok_path):
        with _connect(port) as sock:
            sock.sendall(_head(path, headers, "Transfer-Encoding: chunked\r\n\r\n"))
            chunk = b"%x\r\n%s\r\n" % (4096, b" " * 4096)
            try:
                for _ in range(4 * BODY_LIMIT // 4096):
                    sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                pass
            status, body = _answer(sock)
            assert status == 413, body
    run_against(kind, tmp_path, template, FAST, attack)


def _rss() -> int:
    """This process's resident memory in bytes (the servers run in it)."""
    return resource.getpagesize() * int(Path("/proc/self/statm").read_text().split()[1])


def _nofile(limit: int):
    def preexec():
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
    return preexec


def test_label_serve_caps_connections_below_its_file_descriptor_limit(tmp_path):
    """The real ``daic label serve`` under a 64-descriptor limit: 60 connections held open do not
    use them up (before: all were accepted until accept() failed with EMFILE at the 57th, which
    then got no answer, nor did anyone after it); past the cap (a quarter of the limit) a
    connection gets 503 at once, and once they go a client is served again. And its
    request-handler options reach aiohttp (before, run_app(handler_args=...) made aiohttp drop
    them all, warning on every connection)."""
    port = free_port()
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "daic.cli", "label", "serve", "--store",
                                 f"file://{tmp_path}/store", "--port", str(port), "--no-login",
                                 "--labelers", str(tmp_path / "labelers.json")],
                                stdout=out, stderr=subprocess.STDOUT, preexec_fn=_nofile(64),
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
    socks = []
    try:
        _wait_listening(port)
        statuses = []
        for _ in range(60):
            sock = _connect(port)
            socks.append(sock)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            statuses.append(_answer(sock)[0])
        assert statuses[:8] == [200] * 8
        assert 503 in statuses, statuses
        for sock in socks:
            sock.close()
        deadline = time.monotonic() + MARGIN_S
        while _get(port, "/healthz") != 200:
            assert time.monotonic() < deadline
    finally:
        for sock in socks:
            sock.close()
        proc.terminate()
        proc.wait(30)
    assert "Failed to create request handler" not in log.read_text()
