"""A real HTTP server on loopback whose every answer misbehaves in one chosen way, for the tests
that bound daic's clients (daic.serving.http_client): the sidecar, Prometheus, a graph node or
Label Studio cannot be made to do these on demand.

Modes (every path, every method):

* ``endless``: 200 and a chunked JSON-looking body without end (stops at ``ENDLESS_CAP``, so an
  unbounded client fails instead of eating the machine's memory);
* ``declared``: 200 with a ``Content-Length`` of 1 GiB, then a few bytes and nothing more;
* ``drip``: 200, a small declared body sent one byte every 0.1 s for at most a minute
  (a slow server, not synchronisation);
* ``silent``: 200 with a declared body, then nothing for a minute.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ENDLESS_CAP = 64 * 2**20
SLOW_FOR_S = 60.0
MODES = ("endless", "declared", "drip", "silent")


def _handler(mode: str) -> type[BaseHTTPRequestHandler]:
    class Misbehaving(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def _answer(self):
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            try:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                if mode == "endless":
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    chunk = b'{"pad": "' + b"x" * 65_000 + b'"},'
                    sent = 0
                    while sent < ENDLESS_CAP:
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                        sent += len(chunk)
                    self.wfile.write(b"0\r\n\r\n")
                elif mode == "declared":
                    self.send_header("Content-Length", str(2**30))
                    self.end_headers()
                    self.wfile.write(b'{"accuracy": ')
                else:
                    self.send_header("Content-Length", "100000")  # more than it will ever send
                    self.end_headers()
                    end = time.monotonic() + SLOW_FOR_S
                    while time.monotonic() < end:
                        if mode == "drip":
                            self.wfile.write(b" ")
                            self.wfile.flush()
                        time.sleep(0.1)
                self.close_connection = True
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up: what a bounded client does

        do_GET = do_POST = _answer  # noqa: N815

    return Misbehaving


@contextmanager
def misbehaving_server(mode: str) -> Iterator[str]:
    """The ``http://127.0.0.1:<port>`` URL of a server answering in ``mode`` (see the module docstring)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(mode))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}"
    finally:
        httpd.shutdown()
        httpd.server_close()
