"""A small fake of the Kubernetes API over real HTTP, kept for one purpose: injecting faults on cue.

The operator's behaviour against Kubernetes is tested against a real kube-apiserver and etcd
(tests/cluster, tests/test_cluster_*.py: handlers, RBAC, status subresource, Events, finalizers,
410 Gone after etcd compaction, kill -9). What a real server cannot do on cue is answer one
particular request with a fault: a 409 Conflict on the N-th status write, a 410 Gone on the watch
at the moment a test chooses (``fail_next``, ``expire_watches``); tests/test_operator_api_faults.py
uses this fake for that. It speaks just enough of the API for kopf and the ``kubernetes`` client
(discovery, list + watch streams, merge and JSON patches, the ``/status`` subresource, Events,
SeldonDeployments); AssessmentCycle writes are defaulted and validated against the CRD schema.
It also serves the fake Kubeflow Pipelines API it inherits from :class:`fakes.kfp.FakeKfp` on the
same port, and records every request.

The server runs in a background thread with its own event loop; the test-facing methods are
thread-safe.
"""
from __future__ import annotations

import asyncio
import copy
import json
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import jsonpatch
import jsonpointer
from aiohttp import web

from daic.components.testing.fake_kube import merge_patch
from fakes.crd_schema import apply_defaults, validate
from fakes.kfp import FakeKfp, _filter_name, _now, _public  # noqa: F401 - re-exported

# plural -> (group, version, kind, has status subresource)
RESOURCES = {
    "assessmentcycles": ("daic.dev", "v1alpha1", "AssessmentCycle", True),
    "seldondeployments": ("machinelearning.seldon.io", "v1", "SeldonDeployment", True),
    "events": ("", "v1", "Event", False),
}
# Listed in discovery only (kopf waits to see them there) and never served: with scanning off the
# operator must not need to read namespaces or CRDs, and a request for them fails the RBAC test.
DISCOVERY_ONLY = {
    "namespaces": ("", "v1", "Namespace", False),
    "customresourcedefinitions": ("apiextensions.k8s.io", "v1", "CustomResourceDefinition", True),
}






def _status(code: int, reason: str, message: str) -> web.Response:
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}
    return web.json_response(body, status=code)


class FakeKube(FakeKfp):
    def __init__(self, crd_schema: dict[str, Any] | None = None):
        super().__init__()
        self.crd_schema = crd_schema
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.log: list[tuple[int, str, str, dict[str, Any]]] = []  # (rv, plural, type, object)
        self.rejected: list[str] = []  # validation failures (422) - a test usually wants none
        # Injected faults, each answered once: (method, path part, body part or None, HTTP code).
        self.faults: list[tuple[str, str, str | None, int]] = []
        self.faults_hit: list[tuple[str, str, int]] = []
        self._rv = 100
        self._watchers: list[tuple[str, str | None, asyncio.Queue]] = []

    async def _stop(self) -> None:
        for _, _, queue in list(self._watchers):
            queue.put_nowait(None)
        await super()._stop()

    def write_kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": "fake-token"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": namespace}}],
        }))
        return path

    # -- test-facing object API -----------------------------------------------------------------

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        plural = next(p for p, r in RESOURCES.items() if r[2] == obj["kind"])
        with self._lock:
            created, problem = self._create(plural, obj["metadata"].get("namespace", "default"), obj)
        if problem:
            raise ValueError(problem)
        return created

    def get(self, plural: str, name: str, namespace: str = "default") -> dict[str, Any] | None:
        with self._lock:
            obj = self.objects.get((plural, namespace, name))
            return copy.deepcopy(obj) if obj else None

    def patch(self, plural: str, name: str, patch: dict[str, Any], namespace: str = "default",
              subresource: str | None = None) -> dict[str, Any]:
        with self._lock:
            obj, problem = self._patch(plural, namespace, name, patch, subresource)
        if problem:
            raise ValueError(problem)
        return obj

    def delete(self, plural: str, name: str, namespace: str = "default") -> None:
        with self._lock:
            self._delete(plural, namespace, name)

    def events(self, namespace: str = "default") -> list[dict[str, Any]]:
        with self._lock:
            return [copy.deepcopy(o) for (p, ns, _), o in self.objects.items() if p == "events" and ns == namespace]

    # -- internals: objects -------------------------------------------------------------------

    def _bump(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _notify(self, plural: str, kind: str, obj: dict[str, Any]) -> None:
        rv = int(obj["metadata"]["resourceVersion"])
        self.log.append((rv, plural, kind, copy.deepcopy(obj)))
        ns = obj["metadata"].get("namespace")
        for w_plural, w_ns, queue in list(self._watchers):
            if w_plural == plural and (w_ns is None or w_ns == ns):
                self._loop.call_soon_threadsafe(queue.put_nowait, (kind, copy.deepcopy(obj)))

    def _check(self, plural: str, obj: dict[str, Any]) -> str | None:
        if plural == "assessmentcycles" and self.crd_schema is not None:
            problems = validate(obj, self.crd_schema)
            if problems:
                msg = f"AssessmentCycle {obj['metadata'].get('name')} is invalid: " + "; ".join(problems)
                self.rejected.append(msg)
                return msg
        return None

    def _create(self, plural: str, ns: str, obj: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        if "name" not in meta and "generateName" in meta:
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        if (plural, ns, meta["name"]) in self.objects:
            return obj, f"AlreadyExists: {plural} {meta['name']}"
        if plural == "assessmentcycles" and self.crd_schema is not None:
            obj = apply_defaults(obj, self.crd_schema)
        problem = self._check(plural, obj)
        if problem:
            return obj, problem
        meta = obj["metadata"]
        meta.update(namespace=ns, uid=str(uuid.uuid4()), resourceVersion=self._bump(),
                    creationTimestamp=_now(), generation=1)
        self.objects[(plural, ns, meta["name"])] = obj
        self._notify(plural, "ADDED", obj)
        return copy.deepcopy(obj), None

    def _patch(self, plural: str, ns: str, name: str, patch: Any,
               subresource: str | None) -> tuple[dict[str, Any] | None, str | None]:
        """A merge patch (a dict) or a JSON patch (a list of operations, RFC 6902)."""
        current = self.objects.get((plural, ns, name))
        if current is None:
            return None, "NotFound"
        has_status = RESOURCES[plural][3]
        if isinstance(patch, list):
            try:
                updated = jsonpatch.apply_patch(current, patch)
            except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
                return None, f"JSONPatchFailed: {exc}"
            updated["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            if subresource == "status":
                updated = {**current, "status": updated.get("status")}
            elif has_status:
                updated = {k: v for k, v in updated.items() if k != "status"}
                if "status" in current:
                    updated["status"] = copy.deepcopy(current["status"])
        else:
            want_rv = (patch.get("metadata") or {}).get("resourceVersion")
            if want_rv is not None and want_rv != current["metadata"]["resourceVersion"]:
                return None, "Conflict"
            patch = copy.deepcopy(patch)
            (patch.get("metadata") or {}).pop("resourceVersion", None)
            if subresource == "status":
                patch = {"status": patch.get("status")} if "status" in patch else {}
            elif has_status:
                patch.pop("status", None)
            updated = merge_patch(current, patch)
        if plural == "assessmentcycles" and self.crd_schema is not None:
            updated = apply_defaults(updated, self.crd_schema)
        problem = self._check(plural, updated)
        if problem:
            return None, problem
        if updated.get("spec") != current.get("spec"):
            updated["metadata"]["generation"] = current["metadata"].get("generation", 1) + 1
        if updated == current:
            return copy.deepcopy(current), None
        updated["metadata"]["resourceVersion"] = self._bump()
        if updated["metadata"].get("deletionTimestamp") and not updated["metadata"].get("finalizers"):
            del self.objects[(plural, ns, name)]
            self._notify(plural, "DELETED", updated)
            return copy.deepcopy(updated), None
        self.objects[(plural, ns, name)] = updated
        self._notify(plural, "MODIFIED", updated)
        return copy.deepcopy(updated), None

    def _delete(self, plural: str, ns: str, name: str) -> dict[str, Any] | None:
        current = self.objects.get((plural, ns, name))
        if current is None:
            return None
        if current["metadata"].get("finalizers"):
            if not current["metadata"].get("deletionTimestamp"):
                current = copy.deepcopy(current)
                current["metadata"]["deletionTimestamp"] = _now()
                current["metadata"]["resourceVersion"] = self._bump()
                self.objects[(plural, ns, name)] = current
                self._notify(plural, "MODIFIED", current)
            return copy.deepcopy(current)
        del self.objects[(plural, ns, name)]
        current = copy.deepcopy(current)
        current["metadata"]["resourceVersion"] = self._bump()
        self._notify(plural, "DELETED", current)
        return current

    # -- HTTP -------------------------------------------------------------------------------------

    def fail_next(self, code: int, method: str, path_part: str, body_part: str | None = None) -> None:
        """Answer the next request matching (method, a part of its path?query, a part of its body)
        with ``code`` instead of serving it: 409 Conflict, 410 Gone (for a watch: an ERROR event
        in the stream, as the API server sends for an expired resourceVersion), 500, ..."""
        with self._lock:
            self.faults.append((method, path_part, body_part, code))

    def expire_watches(self, plural: str) -> None:
        """End the open watch streams of ``plural`` and answer the next watch with 410 Gone, as an
        API server does whose etcd compacted the revision a client would resume from."""
        self.fail_next(410, "WATCH", f"/{plural}?")
        with self._lock:
            for p, _ns, queue in list(self._watchers):
                if p == plural:
                    self._loop.call_soon_threadsafe(queue.put_nowait, None)

    async def _fault(self, request: web.Request) -> web.StreamResponse | None:
        target = f"{request.path}?{request.query_string}"
        watch = request.method == "GET" and request.query.get("watch") in ("true", "1")
        verb = "WATCH" if watch else request.method  # "WATCH": a GET that opens a watch stream
        body = (await request.read()).decode(errors="replace") if request.can_read_body else ""
        with self._lock:
            for i, (method, part, needle, code) in enumerate(self.faults):
                if verb == method and part in target and (needle is None or needle in body):
                    del self.faults[i]
                    self.faults_hit.append((method, target, code))
                    break
            else:
                return None
        status = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "code": code,
                  "reason": {409: "Conflict", 410: "Expired"}.get(code, "InternalError"),
                  "message": f"injected {code}"}
        if code == 410 and watch:
            resp = web.StreamResponse(headers={"Content-Type": "application/json"})
            await resp.prepare(request)
            await resp.write(json.dumps({"type": "ERROR", "object": status}).encode() + b"\n")
            return resp
        return web.json_response(status, status=code)

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        self.requests.append((request.method, path, request.query_string))
        if self.faults and (faulted := await self._fault(request)) is not None:
            return faulted
        try:
            if path.startswith("/apis/v2beta1/"):
                return await self._kfp(request, path.removeprefix("/apis/v2beta1/"))
            if path == "/version":
                return web.json_response({"major": "1", "minor": "30", "gitVersion": "v1.30.0"})
            if path == "/api":
                return web.json_response({"kind": "APIVersions", "versions": ["v1"]})
            if path == "/apis":
                return web.json_response(self._group_list())
            parts = [unquote(p) for p in path.strip("/").split("/")]
            if parts[:2] == ["api", "v1"]:
                group, version, rest = "", "v1", parts[2:]
            elif parts[0] == "apis" and len(parts) >= 3:
                group, version, rest = parts[1], parts[2], parts[3:]
            else:
                return _status(404, "NotFound", f"no route {path}")
            if not rest:
                return web.json_response(self._resource_list(group, version))
            ns = None
            if rest[0] == "namespaces" and len(rest) >= 3:
                ns, rest = rest[1], rest[2:]
            plural = rest[0]
            if plural not in RESOURCES or RESOURCES[plural][:2] != (group, version):
                return _status(404, "NotFound", f"unknown resource {group}/{version}/{plural}")
            name = rest[1] if len(rest) > 1 else None
            sub = rest[2] if len(rest) > 2 else None
            return await self._resource(request, plural, ns, name, sub)
        except Exception as exc:  # pragma: no cover - a bug in the fake should show in the test
            return _status(500, "InternalError", f"{type(exc).__name__}: {exc}")

    def _group_list(self) -> dict[str, Any]:
        groups = {}
        for group, version, _, _ in list(RESOURCES.values()) + list(DISCOVERY_ONLY.values()):
            if group:
                groups[group] = {"name": group, "versions": [{"groupVersion": f"{group}/{version}", "version": version}],
                                 "preferredVersion": {"groupVersion": f"{group}/{version}", "version": version}}
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": list(groups.values())}

    def _resource_list(self, group: str, version: str) -> dict[str, Any]:
        resources = []
        for plural, (g, v, kind, status) in list(RESOURCES.items()) + list(DISCOVERY_ONLY.items()):
            if (g, v) != (group, version):
                continue
            verbs = ["create", "delete", "get", "list", "patch", "update", "watch"]
            resources.append({"name": plural, "singularName": kind.lower(), "namespaced": True, "kind": kind,
                              "verbs": verbs})
            if status:
                resources.append({"name": f"{plural}/status", "singularName": "", "namespaced": True,
                                  "kind": kind, "verbs": ["get", "patch", "update"]})
        gv = f"{group}/{version}" if group else version
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}

    async def _resource(self, request: web.Request, plural: str, ns: str | None, name: str | None,
                        sub: str | None) -> web.StreamResponse:
        group, version, kind, _ = RESOURCES[plural]
        method = request.method
        if name is None and method == "GET":
            if request.query.get("watch") in ("true", "1"):
                return await self._watch(request, plural, ns)
            with self._lock:
                items = [copy.deepcopy(o) for (p, o_ns, _), o in self.objects.items()
                         if p == plural and (ns is None or o_ns == ns)]
                rv = str(self._rv)
            return web.json_response({"apiVersion": f"{group}/{version}" if group else version,
                                      "kind": f"{kind}List", "metadata": {"resourceVersion": rv}, "items": items})
        if name is None and method == "POST":
            body = await request.json()
            with self._lock:
                obj, problem = self._create(plural, ns or "default", body)
            if problem:
                return _status(409 if problem.startswith("AlreadyExists") else 422, "Invalid", problem)
            return web.json_response(obj, status=201)
        assert name is not None
        if method == "GET":
            obj = self.get(plural, name, ns or "default")
            return web.json_response(obj) if obj else _status(404, "NotFound", f"{plural} {name} not found")
        if method == "PATCH":
            ctype = request.headers.get("Content-Type", "")
            body = await request.json()
            if not (("merge-patch" in ctype and isinstance(body, dict))
                    or ("json-patch" in ctype and isinstance(body, list))):
                return _status(415, "UnsupportedMediaType", f"the fake takes merge and JSON patches, got {ctype}")
            with self._lock:
                obj, problem = self._patch(plural, ns or "default", name, body, sub)
            if problem == "NotFound":
                return _status(404, "NotFound", f"{plural} {name} not found")
            if problem == "Conflict":
                return _status(409, "Conflict", f"{plural} {name}: resourceVersion does not match")
            if problem:  # a failed JSON-patch "test" is a 422 too, as kopf expects
                return _status(422, "Invalid", problem)
            return web.json_response(obj)
        if method == "DELETE":
            with self._lock:
                obj = self._delete(plural, ns or "default", name)
            return web.json_response(obj) if obj else _status(404, "NotFound", f"{plural} {name} not found")
        return _status(405, "MethodNotAllowed", method)

    async def _watch(self, request: web.Request, plural: str, ns: str | None) -> web.StreamResponse:
        since = int(request.query.get("resourceVersion") or 0)
        timeout = float(request.query.get("timeoutSeconds") or 3600)
        queue: asyncio.Queue = asyncio.Queue()
        with self._lock:
            backlog = [(k, o) for rv, p, k, o in self.log
                       if p == plural and rv > since and (ns is None or o["metadata"].get("namespace") == ns)]
            entry = (plural, ns, queue)
            self._watchers.append(entry)
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        try:
            for kind, obj in backlog:
                await resp.write(json.dumps({"type": kind, "object": obj}).encode() + b"\n")
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(queue.get(), remaining)
                except asyncio.TimeoutError:
                    break
                if item is None:
                    break
                kind, obj = item
                await resp.write(json.dumps({"type": kind, "object": obj}).encode() + b"\n")
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            with self._lock:
                if entry in self._watchers:
                    self._watchers.remove(entry)
        return resp
