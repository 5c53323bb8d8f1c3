"""One JSON reply for the test stand-ins' ``BaseHTTPRequestHandler`` servers (the fake
Kubernetes API, the Label Studio stand-in, the stand-in sidecar): status, content type and
length, then the body."""
from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler
from typing import Any


def send_json(handler: BaseHTTPRequestHandler, status: int, body: Any) -> None:
    data = json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)
