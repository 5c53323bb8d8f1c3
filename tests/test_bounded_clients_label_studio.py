"""The label-studio backend's client is bounded against a Label Studio that misbehaves in ways the real
server cannot be made to on demand: task pages that never end (a server, or a proxy in front of it,
that ignores ``page``), an answer body that never ends, an answer dripped a byte at a time. The
server here is a real HTTP server on loopback (a stand-in: only these faults are modelled, with a
legacy ``Token`` key so no token exchange is involved). Each call runs in a thread the test waits for
with a generous bound, so a missing bound fails the test instead of hanging the suite.
"""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from daic.components import cycle_store
from daic.components.collect_labels.label_studio import (PAGE_SIZE, LabelStudioBackend, LabelStudioClient,
                                                         LabelStudioError)
from daic.components.collect_labels.request import BackendUnavailable, LabelRequest
from daic.components.testing.black_hole import returns_within
from daic.storage import open_store

KEY = "0123456789abcdef0123456789abcdef01234567"
ENDLESS_CAP = 64 * 2**20  # the endless body stops here, so an unbounded client fails instead of eating memory
DRIP_FOR_S = 60.0


class Misbehaving(BaseHTTPRequestHandler):
    """``/api/projects/1/tasks/``: a full page whatever the page number; ``/api/projects/1/``: a JSON
    list streamed without end (chunked); ``/api/projects/2/``: a small JSON body, one byte at a time."""

    pages_served = 0

    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802
        path = self.path.split("?")[0]
        try:
            if path == "/api/projects/1/tasks/":
                type(self).pages_served += 1
                page = [{"id": k, "data": {"daic_id": f"x{k}"}, "annotations": []} for k in range(PAGE_SIZE)]
                data = json.dumps(page).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            elif path == "/api/projects/1/":
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                item = b'{"task": "' + b"x" * 4000 + b'"},'
                chunk = b"[" + item * 16
                sent = 0
                while sent < ENDLESS_CAP:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    sent += len(chunk)
                    chunk = item * 16
                self.wfile.write(b"0\r\n\r\n")
            elif path == "/api/projects/2/":
                data = b'{"id": 2, "task_number": 0}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data) * 10_000))  # more than it will ever send
                self.end_headers()
                end = time.monotonic() + DRIP_FOR_S  # a slow server, not synchronisation: it stops after a minute
                while time.monotonic() < end:
                    self.wfile.write(b" ")
                    self.wfile.flush()
                    time.sleep(0.1)
            else:
                self.send_error(404)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up: what a bounded client does


@pytest.fixture
def server():
    Misbehaving.pages_served = 0
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Misbehaving)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    httpd.server_close()


def client(url, **kw):
    return LabelStudioClient(url, KEY, "legacy", sleep=lambda s: None, **kw)


def test_task_pages_that_never_end_stop_at_what_the_project_can_hold(server, tmp_path):
    store = open_store(f"file://{tmp_path}")
    n = 250  # daic imported 250 tasks: 3 pages, and one page of slack for tasks added in the UI
    request = LabelRequest(cycle="c1", ids=np.array([f"i{k}" for k in range(n)]),
                           inputs=np.zeros((n, 28, 28), np.float32), predictions=np.zeros(n, np.int64),
                           confidences=np.full(n, 0.5))
    store.put_json(cycle_store.key("c1", "label-studio.json"),
                   {"url": server, "project": 1, "tasks": n, "state": "ready"})
    backend = LabelStudioBackend(store, client=client(server))
    outcome = returns_within(30, lambda: backend.poll(request))
    assert isinstance(outcome.error, LabelStudioError), outcome.error
    assert "imported 250" in str(outcome.error) and "ignores the page" in str(outcome.error)
    assert Misbehaving.pages_served == n // PAGE_SIZE + 2


def test_an_endless_body_is_cut_at_the_size_bound(server):
    c = client(server, max_body_bytes=2**20)
    outcome = returns_within(30, lambda: c.call("GET", "/api/projects/1/"))
    assert isinstance(outcome.error, LabelStudioError), outcome.error
    assert f"more than the {2**20} bytes daic reads" in str(outcome.error)


def test_an_answer_dripped_a_byte_at_a_time_is_bounded_by_the_call_timeout(server):
    c = client(server, timeout_s=1.0, attempts=2)
    outcome = returns_within(20, lambda: c.call("GET", "/api/projects/2/"))
    assert isinstance(outcome.error, BackendUnavailable), outcome.error
    assert "took longer than 1s" in str(outcome.error)
    assert outcome.elapsed < 10
