"""A tiny Kubernetes API server for custom objects, over real HTTP — for tests only.

Serves ``/apis/<group>/<version>/namespaces/<ns>/<plural>[/<name>[/status]]`` with GET, POST (create),
PATCH (JSON merge patch, honouring ``metadata.resourceVersion``: a stale one answers 409) and DELETE,
enough for the ``kubernetes`` client's ``CustomObjectsApi`` as the train (RayJob) and deploy
(SeldonDeployment) steps use it. ``on_get`` lets a test play the part of a controller (KubeRay
moving a RayJob's status along) deterministically, one step per read. ``fault`` lets a test play an
API server having a bad moment: asked ``(method, path)`` before a request is served, it answers None
(serve it), an HTTP status (answered with a Kubernetes ``Status`` body instead) or ``"reset"`` (the
connection is closed without a reply, as a restarting API server or a dropped load balancer does).
Every request is recorded, faulted ones too.
"""
from __future__ import annotations

import copy
import json
import socket
import struct
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from daic.components.testing.http_reply import send_json


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


class FakeKube:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}  # (plural, ns, name) -> object
        self.requests: list[tuple[str, str, Any]] = []
        self.on_get: Callable[[dict[str, Any]], None] | None = None
        self.fault: Callable[[str, str], int | str | None] | None = None
        self._version = 0
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _reply(self, status: int, body: Any) -> None:
                send_json(self, status, body)

            def _body(self) -> Any:
                length = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(length)) if length else None

            def _route(self) -> tuple[str, str, str | None]:
                parts = self.path.split("?")[0].strip("/").split("/")
                # apis/<group>/<version>/namespaces/<ns>/<plural>[/<name>[/status]]
                if len(parts) < 6 or parts[0] != "apis" or parts[3] != "namespaces":
                    raise LookupError(self.path)
                return parts[5], parts[4], parts[6] if len(parts) > 6 else None

            def _handle(self, method: str) -> None:
                try:
                    plural, ns, name = self._route()
                except LookupError:
                    return self._reply(404, {"kind": "Status", "code": 404, "message": f"no route {self.path}"})
                body = self._body() if method in ("POST", "PATCH") else None
                fault = fake.fault(method, self.path) if fake.fault is not None else None
                if fault is not None:
                    fake.requests.append((method, self.path, body))
                    return self._fault(fault)
                status, answer = fake._serve(method, plural, ns, name, body, self.headers.get("Content-Type", ""))
                fake.requests.append((method, self.path, body))
                self._reply(status, answer)

            def _fault(self, fault: int | str) -> None:
                if fault == "reset":  # RST instead of a reply: SO_LINGER 0, then close
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.close_connection = True
                    return
                self._reply(int(fault), {"kind": "Status", "code": int(fault), "message": f"injected {fault}"})

            def do_GET(self):  # noqa: N802
                self._handle("GET")

            def do_POST(self):  # noqa: N802
                self._handle("POST")

            def do_PATCH(self):  # noqa: N802
                self._handle("PATCH")

            def do_DELETE(self):  # noqa: N802
                self._handle("DELETE")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FakeKube":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def api(self):
        """A real ``kubernetes.client.CustomObjectsApi`` pointed at this server."""
        from kubernetes import client

        configuration = client.Configuration()
        configuration.host = self.url
        return client.CustomObjectsApi(client.ApiClient(configuration))

    def put(self, plural: str, namespace: str, obj: dict[str, Any]) -> None:
        with self._lock:
            self._version += 1
            obj = copy.deepcopy(obj)
            obj.setdefault("metadata", {})["resourceVersion"] = str(self._version)
            self.objects[(plural, namespace, obj["metadata"]["name"])] = obj

    def _serve(self, method: str, plural: str, ns: str, name: str | None, body: Any,
               content_type: str) -> tuple[int, Any]:
        with self._lock:
            key = (plural, ns, name)
            if method == "POST":
                name = body["metadata"]["name"]
                if (plural, ns, name) in self.objects:
                    return 409, {"kind": "Status", "code": 409, "reason": "AlreadyExists"}
                self._version += 1
                obj = copy.deepcopy(body)
                obj["metadata"].update(namespace=ns, resourceVersion=str(self._version))
                self.objects[(plural, ns, name)] = obj
                return 201, obj
            if key not in self.objects:
                return 404, {"kind": "Status", "code": 404, "reason": "NotFound"}
            if method == "GET":
                if self.on_get is not None:
                    self.on_get(self.objects[key])
                return 200, self.objects[key]
            if method == "DELETE":
                return 200, self.objects.pop(key)
            if "merge-patch" not in content_type:
                return 415, {"kind": "Status", "code": 415, "message": f"unsupported patch type {content_type}"}
            current = self.objects[key]
            wanted = (body.get("metadata") or {}).get("resourceVersion")
            if wanted is not None and wanted != current["metadata"]["resourceVersion"]:
                return 409, {"kind": "Status", "code": 409, "reason": "Conflict"}
            self._version += 1
            patched = merge_patch(current, body)
            patched["metadata"]["resourceVersion"] = str(self._version)
            self.objects[key] = patched
            return 200, patched
