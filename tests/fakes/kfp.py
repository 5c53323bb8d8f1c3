"""A small fake of the Kubeflow Pipelines v2beta1 REST API, over real HTTP.

Kubeflow Pipelines (its API server, Argo, MySQL, object store) cannot run on the test machines, so
this aiohttp server speaks the part of KFP's REST API that the real ``kfp.Client`` uses for
daic: health, experiments (create, get, filter by name), runs (create, get, list by name,
terminate). The test plays KFP's part: it moves runs through their states (``set_run``). The
Kubernetes API is never faked (tests/cluster runs a real kube-apiserver). Every request is
recorded in ``requests``.

The server runs in a background thread with its own event loop; the test-facing methods are
thread-safe.
"""
from __future__ import annotations

import asyncio
import json
import threading
import uuid
from datetime import datetime, timezone
from typing import Any

from aiohttp import web


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class FakeKfp:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str, str]] = []  # (method, path, query string)
        self.experiments: dict[str, dict[str, Any]] = {}
        self.runs: dict[str, dict[str, Any]] = {}
        # A test's hook: while set to an unset threading.Event, a created run's response waits for it
        # (the run exists, its creator has not heard so: a crash window).
        self.hold_run_response: threading.Event | None = None
        self._lock = threading.RLock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self.port = 0

    def __enter__(self) -> "FakeKfp":
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: Any) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _start(self) -> None:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _stop(self) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set_run(self, run_id: str, state: str, tasks: list[dict[str, Any]] | None = None,
                error: str | None = None) -> None:
        with self._lock:
            run = self.runs[run_id]
            run["state"] = state
            if tasks is not None:
                run["run_details"] = {"task_details": tasks}
            if error:
                run["error"] = {"code": 2, "message": error}

    def only_run(self) -> dict[str, Any] | None:
        """The one run submitted so far (a copy), or None while there is none; fails on two."""
        with self._lock:
            runs = list(self.runs.values())
        assert len(runs) <= 1, f"{len(runs)} runs: {[r['display_name'] for r in runs]}"
        return dict(runs[0]) if runs else None

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.method, request.path, request.query_string))
        if request.path.startswith("/apis/v2beta1/"):
            try:
                return await self._kfp(request, request.path.removeprefix("/apis/v2beta1/"))
            except Exception as exc:  # pragma: no cover - a bug in the fake should show in the test
                return web.json_response({"message": f"{type(exc).__name__}: {exc}"}, status=500)
        return web.json_response({"message": f"no route {request.path}"}, status=404)

    # -- KFP v2beta1 ------------------------------------------------------------------------------

    async def _kfp(self, request: web.Request, tail: str) -> web.StreamResponse:
        method, query = request.method, request.query
        if tail == "healthz":
            return web.json_response({"multi_user": False})
        if tail == "experiments" and method == "GET":
            wanted = _filter_name(query.get("filter"))
            with self._lock:
                exps = [e for e in self.experiments.values() if wanted is None or e["display_name"] == wanted]
            return web.json_response({"experiments": exps, "total_size": len(exps)})
        if tail == "experiments" and method == "POST":
            body = await request.json()
            exp = {"experiment_id": uuid.uuid4().hex, "display_name": body["display_name"],
                   "created_at": _now(), "storage_state": "AVAILABLE"}
            with self._lock:
                self.experiments[exp["experiment_id"]] = exp
            return web.json_response(exp)
        if tail.startswith("experiments/") and method == "GET":
            exp = self.experiments.get(tail.split("/", 1)[1])
            return web.json_response(exp) if exp else web.json_response({"message": "not found"}, status=404)
        if tail == "runs" and method == "POST":
            body = await request.json()
            if not body.get("experiment_id") or not body.get("display_name"):
                return web.json_response({"message": "experiment_id and display_name are required"}, status=400)
            if not body.get("pipeline_spec") and not body.get("pipeline_version_reference"):
                return web.json_response({"message": "a run needs a pipeline_spec or a pipeline version"},
                                         status=400)
            run = {"run_id": uuid.uuid4().hex, "display_name": body["display_name"],
                   "experiment_id": body["experiment_id"], "state": "PENDING", "created_at": _now(),
                   "runtime_config": body.get("runtime_config") or {}, "storage_state": "AVAILABLE",
                   "pipeline_spec": body.get("pipeline_spec")}
            with self._lock:
                self.runs[run["run_id"]] = run
            hold = self.hold_run_response
            if hold is not None:
                await asyncio.get_running_loop().run_in_executor(None, hold.wait, 60)
            return web.json_response(_public(run))
        if tail == "runs" and method == "GET":
            wanted = _filter_name(query.get("filter"))
            exp = query.get("experiment_id")
            with self._lock:
                runs = [_public(r) for r in sorted(self.runs.values(), key=lambda r: r["created_at"])
                        if (wanted is None or r["display_name"] == wanted) and (not exp or r["experiment_id"] == exp)]
            return web.json_response({"runs": runs, "total_size": len(runs)})
        if tail.startswith("runs/"):
            run_id, _, verb = tail.split("/", 1)[1].partition(":")
            with self._lock:
                run = self.runs.get(run_id)
                if run is None:
                    return web.json_response({"message": f"run {run_id} not found"}, status=404)
                if method == "POST" and verb == "terminate":
                    if run["state"] not in ("SUCCEEDED", "FAILED", "CANCELED"):
                        run["state"] = "CANCELED"
                    return web.json_response({})
                if method == "GET" and not verb:
                    return web.json_response(_public(run))
        return web.json_response({"message": f"no KFP route {method} {tail}"}, status=404)


def _public(run: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in run.items() if k != "pipeline_spec"}


def _filter_name(raw: str | None) -> str | None:
    if not raw:
        return None
    flt = json.loads(raw)
    for pred in flt.get("predicates", []):
        if pred.get("key") == "display_name" and pred.get("operation") in ("EQUALS", 1):
            return pred.get("string_value", pred.get("stringValue"))
    raise ValueError(f"the fake KFP only filters by display_name EQUALS, got {raw}")
