"""The local gateway: what Seldon's executor does in a pod, for one machine (aiohttp).

It is the v1.18.2 executor's stand-in on the embedded default (the executor does not build from
its Go module, DESIGN.md), faithful to it where the sidecar or a client can tell the difference
(``executor/api/rest/server.go``, ``executor/api/rest/middlewares.go``,
``executor/api/rest/client.go``, ``executor/predictor/predictor_process.go``,
``executor/logger/``):

* ``POST /api/v1.0/predictions`` (also under ``/seldon/<namespace>/<deployment>/`` and
  ``/seldon/<deployment>/``, the paths ``SeldonClient`` uses) runs the inference graph: a
  ``MODEL`` node is called at ``/predict``, a ``TRANSFORMER`` at ``/transform-input``, an
  ``OUTPUT_TRANSFORMER`` at ``/transform-output``, a node with a child passes its output on. The
  body goes to the node as the client sent it, with the client's ``Content-Type`` (none if it
  sent none), and the node's status, body and ``Content-Type`` come back unchanged; the puid is
  the client's ``Seldon-Puid`` or a fresh UUID, returned in the ``Seldon-Puid`` response header
  only (never written into the body);
* every node with a logger logs what the executor logs (daic.serving.graph): a request event
  before each call, whatever the body, and a response event after a 200, as CloudEvents with
  canonical header names and raw values (:func:`daic.sidecar.events.encode_cloudevent`);
* ``POST /api/v1.0/feedback`` logs the feedback on every node whose logger logs responses, under
  the feedback call's ``Seldon-Puid`` (a fresh UUID without one: such feedback names no
  prediction), calls ``/send-feedback`` on ``MODEL`` nodes and answers the root's result.

Logging is asynchronous, as in the executor: each event is written down a pipe to a child process
(:mod:`daic.serving.request_logger`, the executor's logger workers, 10 by default) that posts it,
so neither a slow sidecar nor the HTTP of logging takes time or CPU from the gateway's event loop.
As in the executor, at most ``log_queue`` (10,000) events wait; a further event waits up to
``log_write_timeout_s`` (2 s) for room, then is dropped and counted. Each posted event comes back as
sent, rejected (non-2xx) or failed; ``GET /gateway/stats`` reports every count, so a benchmark can
check that each request was logged or counted as dropped.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from daic.serving.affinity import check_cpus, pinned
from daic.serving.http_client import SMALL_ANSWER_BYTES, AnswerTooLarge, read_capped
from daic.serving.http_limits import HttpLimits, body_deadline, serve_app
from daic.serving.request_logger import ACK_SIZE, FAILED, decode_acks, encode_frame
from daic.sidecar.events import encode_cloudevent

logger = logging.getLogger(__name__)
#: The executor's paths on a node (executor/api/client/client.go) by what the node does.
_PATHS = {"MODEL": "/predict", "TRANSFORMER": "/transform-input", "OUTPUT_TRANSFORMER": "/transform-output"}
_SUPPORTED = set(_PATHS) | {"UNKNOWN_TYPE", ""}


def single_node_graph(name: str = "classifier", logged: bool = True) -> dict[str, Any]:
    """daic's own graph: one MODEL node with ``logger.mode: all``."""
    graph: dict[str, Any] = {"name": name, "type": "MODEL", "children": []}
    if logged:
        graph["logger"] = {"mode": "all"}
    return graph


@dataclass(frozen=True)
class GatewayConfig:
    """``graph``: the predictor's inference graph as rendered (daic.serving.manifest), a chain of
    MODEL / TRANSFORMER / OUTPUT_TRANSFORMER nodes; None: one MODEL node named ``model_id``.
    ``node_urls``: where each node's microservice listens; a node not named there is at
    ``model_url``."""

    model_url: str = "http://127.0.0.1:9000"
    logger_url: str | None = "http://127.0.0.1:8300/"
    host: str = "127.0.0.1"
    port: int = 8003
    deployment: str = "mnist"
    namespace: str = "local"
    predictor: str = "default"
    model_id: str = "classifier"
    graph: dict[str, Any] | None = None
    node_urls: dict[str, str] = field(default_factory=dict)
    log_queue: int = 10_000
    log_workers: int = 10
    log_write_timeout_s: float = 2.0
    timeout_s: float = 30.0
    max_body_bytes: int = 16 * 1024 * 1024
    logger_restart_s: float = 0.5  # wait before starting a request logger that died (doubles, at most 10 s)
    logger_cpus: tuple[int, ...] = ()  # CPU affinity of the request-logger process (empty: inherit)

    def __post_init__(self) -> None:
        if self.log_queue < 1 or self.log_workers < 1:
            raise ValueError("log_queue and log_workers must be >= 1")
        if self.max_body_bytes < 1024:
            raise ValueError(f"max_body_bytes must be >= 1024, got {self.max_body_bytes}")
        if self.log_write_timeout_s < 0:
            raise ValueError("log_write_timeout_s must be >= 0")
        if self.logger_cpus:
            check_cpus("logger_cpus", self.logger_cpus)
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {self.port}")
        for name, url in [("model_url", self.model_url), ("logger_url", self.logger_url),
                          *((f"node_urls[{k}]", v) for k, v in self.node_urls.items())]:
            if url is not None and not str(url).startswith(("http://", "https://")):
                raise ValueError(f"{name} must be an http(s) URL, got {url!r}")
        node = self.resolved_graph()
        while node is not None:
            kind = str(node.get("type") or "")
            children = node.get("children") or []
            if kind not in _SUPPORTED or node.get("methods") or len(children) > 1:
                raise ValueError(f"graph node {node.get('name')!r}: the local gateway runs chains of MODEL, "
                                 "TRANSFORMER and OUTPUT_TRANSFORMER nodes only")
            node = children[0] if children else None

    def resolved_graph(self) -> dict[str, Any]:
        return self.graph if self.graph is not None else single_node_graph(self.model_id, self.logger_url is not None)

    def url_of(self, node: str) -> str:
        return self.node_urls.get(node, self.model_url).rstrip("/")


def _seldon_error(status: int, info: str, reason: str) -> web.Response:
    """The error shape Seldon's executor answers with."""
    body = {"status": {"code": status, "info": info, "reason": reason, "status": "FAILURE"}}
    return web.json_response(body, status=status)


@dataclass(frozen=True)
class _Payload:
    body: bytes
    content_type: str | None


class _NodeFailed(Exception):
    """A node answered non-200 (passed to the client as it is) or could not be reached (500)."""

    def __init__(self, status: int, payload: _Payload) -> None:
        super().__init__(status)
        self.status, self.payload = status, payload


class Gateway:
    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.graph = config.resolved_graph()
        self.stats: Counter[str] = Counter()
        self._session: aiohttp.ClientSession | None = None
        self._logger: asyncio.subprocess.Process | None = None
        self._logger_down = False
        self._in_flight = 0  # events written to the request logger, not yet acknowledged
        self._settled: asyncio.Event | None = None  # set while nothing is in flight
        self._room: asyncio.Event | None = None  # set while the log queue has room
        self._ack_reader: asyncio.Task | None = None
        self._waiting: set[asyncio.Task] = set()
        self._stopping = False
        self._source = f"http://{config.host}:{config.port}/"

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self, app: web.Application | None = None) -> None:
        timeout = aiohttp.ClientTimeout(total=self.config.timeout_s)
        self._session = aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=256),
                                              skip_auto_headers=("Content-Type",))
        if self.config.logger_url:
            self._settled = asyncio.Event()
            self._settled.set()
            self._room = asyncio.Event()
            self._room.set()
            await self._start_logger()
            self._ack_reader = asyncio.create_task(self._supervise())

    async def _start_logger(self) -> None:
        self._logger = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "daic.serving.request_logger", "--url", self.config.logger_url,
            "--workers", str(self.config.log_workers), "--timeout", str(self.config.timeout_s),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            preexec_fn=pinned(self.config.logger_cpus))
        self._logger_down = False

    async def _supervise(self) -> None:
        """Read the request logger's acks; when it dies, count what it held as failed, report
        not-ready, and start a new one (after a short wait that doubles while it keeps dying)."""
        delay = self.config.logger_restart_s
        while True:
            started = asyncio.get_running_loop().time()
            await self._read_acks()
            if self._stopping:
                return
            self.stats["logger_restarts"] += 1
            if asyncio.get_running_loop().time() - started > 60:
                delay = self.config.logger_restart_s
            await asyncio.sleep(delay)  # a back-off between restarts, not synchronisation
            delay = min(delay * 2, 10.0)
            try:
                await self._start_logger()
            except OSError as exc:
                logger.error("cannot start the request logger: %s", exc)

    async def stop(self, app: web.Application | None = None) -> None:
        """Wait (bounded) until every logged event is acknowledged, then close."""
        self._stopping = True
        if self._waiting:
            await asyncio.gather(*self._waiting, return_exceptions=True)
        if self._settled is not None:
            try:
                await asyncio.wait_for(self._settled.wait(), timeout=10.0)
            except asyncio.TimeoutError:
                self.stats["events_unsent_at_stop"] += self._in_flight
        if self._logger is not None and self._logger.returncode is None:
            self._logger.stdin.close()
            try:
                await asyncio.wait_for(self._logger.wait(), timeout=5.0)
            except asyncio.TimeoutError:
                self._logger.kill()
                await self._logger.wait()
        if self._ack_reader is not None:
            self._ack_reader.cancel()
            await asyncio.gather(self._ack_reader, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    # -- logging ------------------------------------------------------------------------------
    def _log(self, kind: str, puid: str, body: bytes, content_type: str | None = "application/json",
             node: str | None = None) -> None:
        """Hand one event to the request logger: a non-blocking pipe write. At most ``log_queue``
        events wait (plus one per logger worker, posting); beyond that the event waits up to
        ``log_write_timeout_s`` for room, as the executor's ``QueueLogRequest`` does, then is
        dropped and counted."""
        if self._logger is None:
            return
        headers, data = encode_cloudevent(kind, puid, body, source=self._source, model_id=node or self.config.model_id,
                                          deployment=self.config.deployment, namespace=self.config.namespace,
                                          predictor=self.config.predictor, content_type=content_type)
        self.stats["events_queued"] += 1
        if self._in_flight >= self.config.log_queue + self.config.log_workers:
            task = asyncio.get_running_loop().create_task(self._log_when_room(headers, data))
            self._waiting.add(task)
            task.add_done_callback(self._waiting.discard)
            return
        self._write(headers, data)

    async def _log_when_room(self, headers: dict[str, str], data: bytes) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.log_write_timeout_s
        while self._in_flight >= self.config.log_queue + self.config.log_workers:
            self._room.clear()
            try:
                await asyncio.wait_for(self._room.wait(), max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                self.stats["events_dropped_queue_full"] += 1
                return
        self._write(headers, data)

    def _write(self, headers: dict[str, str], data: bytes) -> None:
        if self._logger_down or self._logger is None or self._logger.stdin.is_closing():
            self.stats["events_failed"] += 1
            return
        self._logger.stdin.write(encode_frame(headers, data))
        self._in_flight += 1
        self._settled.clear()

    async def _read_acks(self) -> None:
        assert self._logger is not None
        pending = b""
        while data := await self._logger.stdout.read(ACK_SIZE * 4096):
            pending += data
            whole = len(pending) - len(pending) % ACK_SIZE
            statuses, pending = decode_acks(pending[:whole]), pending[whole:]
            for status in statuses:
                self.stats["events_sent" if 200 <= status < 300 else "events_failed" if status == FAILED
                           else f"events_rejected_{status}"] += 1
            self._settle(len(statuses))
        self._logger_down = True
        code = await self._logger.wait()
        if self._in_flight:
            logger.error("the request logger exited (code %s); %d event(s) in flight count as failed",
                         code, self._in_flight)
        self.stats["events_failed"] += self._in_flight
        self._settle(self._in_flight)
        if not self._stopping:
            logger.error("the request logger exited (code %s); starting a new one, not ready meanwhile", code)

    def _settle(self, n: int) -> None:
        self._in_flight -= n
        if self._in_flight == 0:
            self._settled.set()
        if self._room is not None:
            self._room.set()

    def _log_node(self, node: dict[str, Any], kind: str, puid: str, payload: _Payload) -> None:
        mode = str((node.get("logger") or {}).get("mode") or "all") if node.get("logger") else None
        wanted = {"request": ("request", "all"), "response": ("response", "all")}[kind]
        if mode in wanted:
            self._log(kind, puid, payload.body, payload.content_type, str(node["name"]))

    # -- the graph (executor/predictor/predictor_process.go, for chains) -----------------------
    async def _predict(self, node: dict[str, Any], msg: _Payload, puid: str) -> _Payload:
        kind = str(node.get("type") or "")
        if kind in ("MODEL", "TRANSFORMER"):
            msg = await self._stage(node, _PATHS[kind], msg, puid)
        children = node.get("children") or []
        if children:
            self._log_node(node, "request", puid, msg)
            msg = await self._predict(children[0], msg, puid)
            self._log_node(node, "response", puid, msg)
        if kind == "OUTPUT_TRANSFORMER":
            msg = await self._stage(node, _PATHS[kind], msg, puid)
        return msg

    async def _stage(self, node: dict[str, Any], path: str, msg: _Payload, puid: str) -> _Payload:
        """Log the request, call the node, log the response after a 200 (transformInput)."""
        self._log_node(node, "request", puid, msg)
        status, out = await self._call(str(node["name"]), path, msg, puid)
        if status != 200:
            raise _NodeFailed(status, out)
        self._log_node(node, "response", puid, out)
        return out

    async def _call(self, node: str, path: str, msg: _Payload, puid: str) -> tuple[int, _Payload]:
        assert self._session is not None
        url = self.config.url_of(node) + path
        # The executor sets the payload's Content-Type on the call as it is, empty when the client
        # sent none (executor/api/rest/client.go doHttp), and passes the puid on.
        headers = {"Content-Type": msg.content_type or "", "Seldon-Puid": puid}
        try:
            async with self._session.post(url, data=msg.body, headers=headers) as resp:
                body = await read_capped(resp, self.config.max_body_bytes, f"node {node}")
                return resp.status, _Payload(body, resp.headers.get("Content-Type"))
        except AnswerTooLarge as exc:
            body = json.dumps({"status": {"code": 500, "info": str(exc),
                                          "reason": "MICROSERVICE_INTERNAL_ERROR", "status": "FAILURE"}})
            raise _NodeFailed(500, _Payload(body.encode(), "application/json")) from None
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            body = json.dumps({"status": {"code": 500, "info": f"node {node} unreachable at {url}: {exc}",
                                          "reason": "MICROSERVICE_INTERNAL_ERROR", "status": "FAILURE"}})
            raise _NodeFailed(500, _Payload(body.encode(), "application/json")) from None

    async def _feedback(self, node: dict[str, Any], msg: _Payload, puid: str) -> _Payload:
        """Feedback(node): log it where the logger logs responses, recurse, call MODEL nodes."""
        if node.get("logger") and str(node["logger"].get("mode") or "all") in ("response", "all"):
            self._log("feedback", puid, msg.body, msg.content_type, str(node["name"]))
        for child in node.get("children") or []:
            await self._feedback(child, msg, puid)
        if str(node.get("type") or "") != "MODEL":
            return msg
        status, out = await self._call(str(node["name"]), "/send-feedback", msg, puid)
        if status != 200:
            raise _NodeFailed(status, out)
        return out

    # -- handlers -----------------------------------------------------------------------------
    @staticmethod
    def _reply(status: int, payload: _Payload, puid: str) -> web.Response:
        headers = {"Seldon-Puid": puid, "X-Content-Type-Options": "nosniff"}
        if payload.content_type:
            headers["Content-Type"] = payload.content_type
        return web.Response(body=payload.body, status=status, headers=headers)

    async def _read(self, request: web.Request) -> _Payload:
        """The client's body, before anything is logged or forwarded: over ``max_body_bytes`` is
        a 413 (aiohttp's), a body its ``Content-Encoding`` does not decode a 400, and so is a
        ``Seldon-Puid`` that cannot be logged (not printable UTF-8)."""
        puid = request.headers.get("Seldon-Puid", "")
        try:
            puid.encode("utf-8")
            printable = puid.isprintable()
        except UnicodeEncodeError:
            printable = False
        if not printable:
            self.stats["responses_400"] += 1
            raise web.HTTPBadRequest(text=json.dumps({"status": {"code": 400, "info": "the Seldon-Puid header must be "
                                                                 "printable UTF-8 text", "reason": "BAD_REQUEST",
                                                                 "status": "FAILURE"}}), content_type="application/json")
        try:
            body = await request.read()
        except (HttpProcessingError, RequestPayloadError) as exc:
            self.stats["responses_400"] += 1
            raise web.HTTPBadRequest(text=json.dumps({"status": {"code": 400, "info": f"the body cannot be read: {exc}",
                                                                 "reason": "BAD_REQUEST", "status": "FAILURE"}}),
                                     content_type="application/json", headers={"Connection": "close"}) from None
        except web.HTTPRequestEntityTooLarge:
            self.stats["responses_413"] += 1
            raise
        return _Payload(body, request.headers.get("Content-Type"))

    async def predictions(self, request: web.Request) -> web.Response:
        self.stats["requests"] += 1
        puid = request.headers.get("Seldon-Puid") or str(uuid.uuid4())
        msg = await self._read(request)
        try:
            out = await self._predict(self.graph, msg, puid)
        except _NodeFailed as failed:
            self.stats[f"responses_{failed.status}"] += 1
            return self._reply(failed.status, failed.payload, puid)
        self.stats["responses_200"] += 1
        return self._reply(200, out, puid)

    async def feedback(self, request: web.Request) -> web.Response:
        self.stats["feedback"] += 1
        puid = request.headers.get("Seldon-Puid") or str(uuid.uuid4())
        msg = await self._read(request)
        try:
            out = await self._feedback(self.graph, msg, puid)
        except _NodeFailed as failed:
            return self._reply(failed.status, failed.payload, puid)
        return self._reply(200, out, puid)

    async def ready(self, request: web.Request) -> web.Response:
        assert self._session is not None
        if self.config.logger_url and self._logger_down:
            return web.json_response({"ready": False, "error": "the request logger is down (restarting)"}, status=503)
        node = self.graph
        while node is not None:
            url = self.config.url_of(str(node["name"])) + "/health/status"
            try:
                async with self._session.get(url) as resp:
                    await read_capped(resp, SMALL_ANSWER_BYTES, f"node {node['name']}")
                    if resp.status != 200:
                        return web.json_response({"ready": False, "node": node["name"], "model_status": resp.status},
                                                 status=503)
            except (aiohttp.ClientError, asyncio.TimeoutError, AnswerTooLarge) as exc:
                return web.json_response({"ready": False, "node": node["name"], "error": str(exc)}, status=503)
            children = node.get("children") or []
            node = children[0] if children else None
        return web.json_response({"ready": True})

    async def get_stats(self, request: web.Request) -> web.Response:
        queued = self._in_flight
        return web.json_response({**self.stats, "log_queue_depth": queued, "log_waiting": len(self._waiting)})

    def app(self, limits: HttpLimits | None = None) -> web.Application:
        """The application; a body must arrive within ``limits.body_timeout_s`` (408), and
        :func:`main` serves it under the rest of ``limits`` (daic.serving.http_limits)."""
        app = web.Application(client_max_size=self.config.max_body_bytes,
                              middlewares=[body_deadline((limits or HttpLimits()).body_timeout_s)])
        for prefix in ("", "/seldon/{namespace}/{deployment}", "/seldon/{deployment}"):
            for api in ("/api/v1.0", "/api/v0.1"):  # the executor serves both
                app.router.add_post(prefix + api + "/predictions", self.predictions)
                app.router.add_post(prefix + api + "/feedback", self.feedback)
        app.router.add_get("/health/ready", self.ready)
        app.router.add_get("/gateway/stats", self.get_stats)
        app.on_startup.append(self.start)
        app.on_cleanup.append(self.stop)
        return app


def _cpu_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValueError(f"--logger-cpus must be comma-separated CPU numbers, got {text!r}") from None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m daic.serving.gateway", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8003)
    parser.add_argument("--model-url", default="http://127.0.0.1:9000")
    parser.add_argument("--logger-url", default="http://127.0.0.1:8300/",
                        help="the sidecar; 'none' to log nothing")
    parser.add_argument("--deployment", default="mnist")
    parser.add_argument("--graph", default=None, metavar="JSON",
                        help="the predictor's inference graph as JSON (default: one MODEL node, 'classifier')")
    parser.add_argument("--node-url", action="append", default=[], metavar="NAME=URL",
                        help="where a graph node listens (default: --model-url)")
    parser.add_argument("--log-workers", type=int, default=10)
    parser.add_argument("--log-queue", type=int, default=10_000)
    parser.add_argument("--max-body-bytes", type=int, default=16 * 1024 * 1024,
                        help="largest request or feedback body (413 above it, before anything is logged)")
    parser.add_argument("--logger-cpus", default="",
                        help="CPU affinity of the request-logger process, e.g. '1' or '2,3' (default: inherit)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        graph = None if args.graph is None else json.loads(args.graph)
        node_urls = dict(item.split("=", 1) for item in args.node_url if "=" in item)
        if len(node_urls) != len(args.node_url):
            raise ValueError("--node-url must be NAME=URL")
        config = GatewayConfig(model_url=args.model_url,
                               logger_url=None if args.logger_url.lower() == "none" else args.logger_url,
                               host=args.host, port=args.port, deployment=args.deployment,
                               graph=graph, node_urls=node_urls,
                               log_workers=args.log_workers, log_queue=args.log_queue,
                               max_body_bytes=args.max_body_bytes,
                               logger_cpus=_cpu_list(args.logger_cpus))
    except ValueError as exc:
        parser.error(str(exc))
    limits = HttpLimits()
    serve_app(Gateway(config).app(limits), config.host, config.port, limits, access_log=None)


if __name__ == "__main__":
    main()
