"""A stand-in for the pseudo-oracle sidecar's ``GET /estimate`` (contract in docs/operator.md).

It serves a scripted stream of window estimates: each request returns the next one and the last
repeats, so a test can play "healthy, then drifted" through the operator's real HTTP adapter.
"""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeSidecar:
    def __init__(self, stream: list[dict[str, Any]], path: str = "/estimate"):
        if not stream:
            raise ValueError("stream needs at least one estimate")
        self.stream, self.path = list(stream), path
        self.requests = 0
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                if self.path != fake.path:
                    self.send_error(404)
                    return
                with fake._lock:
                    body = fake.stream[min(fake.requests, len(fake.stream) - 1)]
                    fake.requests += 1
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{self.path}"

    def __enter__(self) -> "FakeSidecar":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


def drifted_stream(healthy: int, drifted: int, *, start: float | None = None, step: float = 60.0,
                   model_version: str = "v0001") -> list[dict[str, Any]]:
    """``healthy`` windows at ~0.98, then ``drifted`` windows at ~0.80 with the drift alarm on;
    window times from ``start`` (default: now, since the operator refuses readings older than
    estimate.staleAfterSeconds) in steps of ``step`` seconds."""
    start = time.time() if start is None else start
    out = []
    for i in range(healthy + drifted):
        bad = i >= healthy
        acc = 0.80 if bad else 0.98
        out.append({"accuracy": acc, "lower": acc - 0.02, "upper": acc + 0.02, "n": 500,
                    "drift_alarm": bad, "trusted": not bad, "model_version": model_version,
                    "timestamp": start + i * step})
    return out
