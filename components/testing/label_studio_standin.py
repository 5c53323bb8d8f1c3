"""A Label Studio stand-in over real HTTP, for tests that need faults the real server cannot be made to
show on demand (an outage of N calls, a dropped connection, an access token revoked mid-run, an
import that fails). It models, as Label Studio 1.23 behaves (checked against the real server in
tests/test_labeling_label_studio.py): personal access tokens (JWT refresh tokens) exchanged at
``/api/token/refresh/`` for access tokens sent as ``Bearer``, legacy ``Token`` auth off unless
enabled, unique project titles per user, ``/api/projects/`` (list with a ``title`` filter, create),
``/api/projects/<id>/`` (get, delete), ``/import``, ``/tasks/`` pages (404 past the last page) and
``/export`` (which writes a file per call, counted in ``exports``).
"""
from __future__ import annotations

import base64
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from daic.components.testing.http_reply import send_json


def _jwt(kind: str, serial: int, exp: float) -> str:
    def enc(obj: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")
    return f"{enc({'alg': 'HS256', 'typ': 'JWT'})}.{enc({'token_type': kind, 'exp': exp, 'jti': serial})}.sig{serial}"


class StandIn:
    def __init__(self, legacy_enabled: bool = False) -> None:
        self.lock = threading.Lock()
        self.personal_token = _jwt("refresh", 0, time.time() + 10 * 365 * 86400)
        self.legacy_token = "0123456789abcdef0123456789abcdef01234567"
        self.legacy_enabled = legacy_enabled
        self.access: set[str] = set()
        self.serial = 0
        self.projects: dict[int, dict] = {}
        self.next_project = 1
        self.next_task = 1
        self.exports = 0
        self.refreshes = 0
        self.requests: list[tuple[str, str]] = []
        self.faults: list[tuple[str, str, int | str]] = []  # (method, path prefix, status, "drop" or "html"), once

    # test controls
    def fail(self, method: str, prefix: str, *outcomes: int | str) -> None:
        with self.lock:
            self.faults.extend((method, prefix, o) for o in outcomes)

    def expire_access_tokens(self) -> None:
        with self.lock:
            self.access.clear()

    def tasks(self, project: int) -> list[dict]:
        return self.projects[project]["tasks"]

    def annotate(self, task: dict, choice: str | None, cancelled: bool = False) -> None:
        result = [] if choice is None else [{"from_name": "label", "to_name": "image", "type": "choices",
                                             "value": {"choices": [choice]}}]
        with self.lock:
            task["annotations"].append({"id": len(task["annotations"]) + 1, "result": result,
                                        "was_cancelled": cancelled})


class _Handler(BaseHTTPRequestHandler):
    standin: StandIn

    def log_message(self, *args) -> None:
        pass

    def _reply(self, status: int, body) -> None:
        send_json(self, status, body)

    def _body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(n)) if n else None

    def _fault(self) -> bool:
        s = self.standin
        with s.lock:
            for k, (method, prefix, outcome) in enumerate(s.faults):
                if method == self.command and urlparse(self.path).path.startswith(prefix):
                    del s.faults[k]
                    break
            else:
                return False
        if outcome == "drop":
            self.close_connection = True
            self.connection.close()
            return True
        if outcome == "html":  # what a proxy's login page looks like to an API client
            data = b"<!doctype html><title>Sign in</title>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return True
        self._reply(int(outcome), {"detail": "injected fault"})
        return True

    def _authorised(self) -> bool:
        s = self.standin
        auth = self.headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme == "Bearer" and token in s.access:
            return True
        if scheme == "Token" and s.legacy_enabled and token == s.legacy_token:
            return True
        self._reply(401, {"detail": "Authentication credentials were not provided."})
        return False

    def _route(self) -> None:
        s = self.standin
        url = urlparse(self.path)
        path, query = url.path, parse_qs(url.query)
        s.requests.append((self.command, path))
        if self._fault():
            return
        body = self._body() if self.command == "POST" else None
        if path == "/api/token/refresh/" and self.command == "POST":
            if not body or body.get("refresh") != s.personal_token:
                return self._reply(401, {"detail": "Token is invalid or expired", "code": "token_not_valid"})
            with s.lock:
                s.serial += 1
                token = _jwt("access", s.serial, time.time() + 300)
                s.access.add(token)
                s.refreshes += 1
            return self._reply(200, {"access": token})
        if not self._authorised():
            return
        parts = [p for p in path.split("/") if p]
        if parts[:2] != ["api", "projects"]:
            return self._reply(404, {"detail": "Not found."})
        if len(parts) == 2:
            if self.command == "GET":
                title = query.get("title", [""])[0]
                found = [{k: v for k, v in p.items() if k != "tasks"} for p in s.projects.values()
                         if title.lower() in p["title"].lower()]
                return self._reply(200, {"count": len(found), "next": None, "previous": None, "results": found})
            if "<Choices" not in body.get("label_config", ""):
                return self._reply(400, {"label_config": "invalid"})
            if any(p["title"] == body["title"] for p in s.projects.values()):
                return self._reply(400, {"title": "project with this title already exists"})
            with s.lock:
                pid = s.next_project
                s.next_project += 1
                s.projects[pid] = {"id": pid, "title": body["title"], "label_config": body["label_config"],
                                   "tasks": []}
            return self._reply(201, {"id": pid, "title": body["title"]})
        pid = int(parts[2])
        project = s.projects.get(pid)
        if project is None:
            return self._reply(404, {"detail": "Not found."})
        rest = parts[3:]
        if not rest:
            if self.command == "DELETE":
                del s.projects[pid]
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return None
            return self._reply(200, {**{k: v for k, v in project.items() if k != "tasks"},
                                     "task_number": len(project["tasks"]),
                                     "num_tasks_with_annotations": sum(bool(t["annotations"]) for t in project["tasks"])})
        if rest == ["import"]:
            for task in body:
                assert task["data"]["image"].startswith("data:image/png;base64,")
                with s.lock:
                    project["tasks"].append({"id": s.next_task, "data": task["data"], "annotations": []})
                    s.next_task += 1
            return self._reply(201, {"task_count": len(body)})
        if rest == ["tasks"]:
            page, size = int(query.get("page", ["1"])[0]), int(query.get("page_size", ["50"])[0])
            chunk = project["tasks"][(page - 1) * size: page * size]
            if not chunk:
                return self._reply(404, {"detail": "Not found."})
            return self._reply(200, chunk)
        if rest == ["export"]:
            s.exports += 1
            return self._reply(200, project["tasks"])
        return self._reply(404, {"detail": "Not found."})

    do_GET = do_POST = do_DELETE = _route


class StandInServer:
    """``with StandInServer() as (url, standin): ...`` on a free loopback port."""

    def __init__(self, legacy_enabled: bool = False) -> None:
        self.standin = StandIn(legacy_enabled)
        handler = type("Handler", (_Handler,), {"standin": self.standin})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "StandInServer":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
