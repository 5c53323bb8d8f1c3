"""The sidecar's HTTP surface (aiohttp).

==========================  =================================================================
Two listeners (:func:`serve`): the *ingest* port (``ingest_port``, 8301) on 127.0.0.1 only
serves every endpoint below; the *Service* port (``host``:``port``, 8300) serves the estimate,
metrics and health, and feedback only with ``Authorization: Bearer <token>`` (a Secret), so
nobody outside the pod can post events, feedback or admin calls.

``POST /``                  CloudEvents from Seldon's request logger (binary or structured);
                            200 once written ahead (or skipped on purpose: an intermediate
                            graph node's event), 400 naming what is wrong, 503 when the queue
                            is full or the log cannot be written; the executor retries neither,
                            so every refusal is counted in ``daic_sidecar_events_dropped_total``
``POST /api/v1.0/feedback`` Seldon's Feedback message (``truth`` = labels, or ``reward`` alone),
                            about the prediction named by the ``Seldon-Puid`` header, exactly
                            as the executor's own feedback endpoint takes it
``GET /estimate``           the current estimate per model version, as JSON (for the operator)
``GET /metrics``            Prometheus exposition (``prometheus_client``)
``GET /health/live``        500 once processing has failed (restart me: the log replays)
``GET /health/ready``       503 until the champion's reference is loaded and the log replayed,
                            and again while draining after SIGTERM (events are still taken)
``POST /admin/flush``       write buffered records now; returns the batch key (null: nothing to
                            write), 503 with the reason when the store write failed
``POST /admin/reload``      check the champion pointer now (reload the oracle reference)
``POST /assess``            the model server's response before it is sent: each input's
                            P(correct) (daic.sidecar.assess; the model server abstains on it,
                            issue 21), 503 while the assessor it needs is still loading
==========================  =================================================================
"""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import signal
import uuid
from typing import Any

import numpy as np
import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from daic.serving.http_limits import HttpLimits, body_deadline, make_runner, start_site
from daic.sidecar.config import SidecarConfig
from daic.sidecar.events import EventError, LoggedEvent, parse_cloudevent
from daic.sidecar.feedback import parse_feedback
from daic.sidecar.service import Backpressure, FlushFailed, SidecarService

logger = logging.getLogger(__name__)
SERVICE = web.AppKey("service", SidecarService)


def _json(data: Any, status: int = 200, headers: dict | None = None) -> web.Response:
    return web.Response(text=json.dumps(data, default=_plain, allow_nan=False), status=status,
                        content_type="application/json", headers=headers)


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot encode {type(value).__name__}")


def _loggable(value: str) -> bool:
    """Printable text that UTF-8 can encode (header bytes that were not UTF-8 arrive as surrogates)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return value.isprintable()


def _error(message: str, status: int, **extra: Any) -> web.Response:
    return _json({"error": message, **extra}, status=status,
                 headers={"Retry-After": "1"} if status == 503 else None)


def _accept(service: SidecarService, event: LoggedEvent) -> web.Response:
    try:
        service.accept(event)
    except Backpressure as exc:
        return _error(str(exc), 503)
    return _json({"accepted": event.event_id, "kind": event.kind, "request_id": event.request_id})


async def _read_body(request: web.Request) -> bytes | web.Response:
    """The body, or the answer to give instead: 413 above ``max_body_bytes`` (nothing written),
    400 for a body that cannot be decoded (a bad ``Content-Encoding``); both counted."""
    service = request.app[SERVICE]
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        service.metrics.drop("too_large")
        return _error(f"the body is larger than max_body_bytes ({service.config.max_body_bytes})", 413)
    except (web.HTTPBadRequest, HttpProcessingError, RequestPayloadError, ValueError) as exc:  # bad encoding
        service.reject_invalid()
        response = _error(f"the body cannot be read: {exc}", 400)
        response.force_close()  # the rest of the stream cannot be parsed: no keep-alive
        return response


async def post_event(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    body = await _read_body(request)
    if isinstance(body, web.Response):
        return body
    try:
        event = parse_cloudevent(request.headers, body, now=service.clock())
        if event.kind == "feedback":
            parse_feedback(event.body, event.request_id)
    except (EventError, ValueError) as exc:
        service.reject_invalid()
        return _error(str(exc), 400)
    return _accept(service, event)


async def post_feedback(request: web.Request) -> web.Response:
    """The executor's feedback contract: the prediction is the one whose ``Seldon-Puid`` response
    header the client sends back on this call; without it the executor makes up a fresh puid, and
    so does this endpoint (the feedback is recorded and counted as unlinked)."""
    service = request.app[SERVICE]
    raw = await _read_body(request)
    if isinstance(raw, web.Response):
        return raw
    puid = request.headers.get("Seldon-Puid") or str(uuid.uuid4())
    if not _loggable(puid):
        service.reject_invalid()
        return _error("feedback: the Seldon-Puid header must be printable UTF-8 text", 400)
    try:
        body = orjson.loads(raw)
        truth = parse_feedback(body, puid)
    except orjson.JSONDecodeError as exc:
        service.reject_invalid()
        return _error(f"feedback: the body is not valid JSON ({exc})", 400)
    except ValueError as exc:
        service.reject_invalid()
        return _error(f"feedback: {exc}", 400)
    event = LoggedEvent(kind="feedback", event_id=str(uuid.uuid4()), request_id=truth.request_id,
                        time=service.clock(), model_id="", body=body, raw=raw)
    response = _accept(service, event)
    if response.status != 200:
        return response
    return _json({"meta": {"tags": {"daic.feedback": "accepted", "daic.request_id": truth.request_id}}},
                 headers={"Seldon-Puid": truth.request_id})


async def get_estimate(request: web.Request) -> web.Response:
    return _json(request.app[SERVICE].status())


async def get_metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[SERVICE].metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def live(request: web.Request) -> web.Response:
    failed = request.app[SERVICE].failed
    return _error(f"processing failed: {failed}", 500) if failed else _json({"live": True})


async def ready(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    if not service.ready:
        return _error("not ready", 503)
    return _json({"ready": True, "champion": service.champion})


async def flush(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    if not service.accepting:
        return _error("not accepting (starting or stopping)", 503)
    try:
        key = await service.request_flush()
    except FlushFailed as exc:
        return _error(f"flush failed: {exc}", 503)
    return _json({"batch": key})


async def reload(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    await service.check_champion()
    return _json({"champion": service.champion})


TOKEN = web.AppKey("feedback_token", str)


async def post_assess(request: web.Request) -> web.Response:
    from daic.sidecar.assess import NotReady, assess

    service = request.app[SERVICE]
    body = await _read_body(request)
    if isinstance(body, web.Response):
        return body
    try:
        message = orjson.loads(body)
        p_correct, assessor = await asyncio.to_thread(assess, message, service.assessors,
                                                      service.registry_versions.known)
    except NotReady as exc:
        return _error(str(exc), 503)
    except (ValueError, orjson.JSONDecodeError) as exc:
        return _error(f"not a daic model response: {exc}", 400)
    return _json({"p_correct": np.round(np.asarray(p_correct, dtype=np.float64), 6).tolist(),
                  "assessor": assessor})


async def post_feedback_from_outside(request: web.Request) -> web.Response:
    """Feedback on the Service port: only with ``Authorization: Bearer <token>``, the token read
    from ``feedback_token_file`` (a Secret mounted in the pod); without a configured token it is
    refused (the executor in the pod posts to the loopback ingest port, which needs none)."""
    token = request.app.get(TOKEN)
    if not token:
        return _error("feedback on this port is disabled; send it through the Seldon deployment (the executor "
                      "logs it to the sidecar), or configure --feedback-token-file", 403)
    given = request.headers.get("Authorization", "")
    if not given.startswith("Bearer ") or not hmac.compare_digest(given[7:].strip().encode(), token.encode()):
        return _json({"error": "feedback needs 'Authorization: Bearer <token>' (the daic feedback token)"},
                     status=401, headers={"WWW-Authenticate": 'Bearer realm="daic-sidecar"'})
    return await post_feedback(request)


def build_public_app(service: SidecarService, token: str | None = None,
                     limits: HttpLimits | None = None) -> web.Application:
    """What the Service port serves to the cluster: the estimate, metrics and health, and
    feedback with a bearer token. Events and admin are on the loopback ingest port only.
    A body must arrive within ``limits.body_timeout_s`` (daic.serving.http_limits)."""
    app = web.Application(client_max_size=service.config.max_body_bytes,
                          middlewares=[body_deadline((limits or HttpLimits()).body_timeout_s)])
    app[SERVICE] = service
    if token:
        app[TOKEN] = token
    app.router.add_get("/estimate", get_estimate)
    app.router.add_get("/metrics", get_metrics)
    app.router.add_get("/health/live", live)
    app.router.add_get("/health/ready", ready)
    app.router.add_post("/api/v1.0/feedback", post_feedback_from_outside)
    return app


def read_token(path) -> str | None:
    """The feedback token from a file (a mounted Secret); None without a path; an empty or
    unreadable file is an error naming it."""
    if path is None:
        return None
    from pathlib import Path

    try:
        token = Path(path).read_text().strip()
    except OSError as exc:
        raise ValueError(f"feedback token file {path}: {exc}") from None
    if len(token) < 16:
        raise ValueError(f"feedback token file {path}: the token must have at least 16 characters")
    return token


def build_app(service: SidecarService, manage_lifecycle: bool = True,
              limits: HttpLimits | None = None) -> web.Application:
    """The loopback ingest application around ``service`` (every endpoint); with
    ``manage_lifecycle`` the app starts and stops the service (recovery on startup, flush on
    shutdown). A body must arrive within ``limits.body_timeout_s``."""
    app = web.Application(client_max_size=service.config.max_body_bytes,
                          middlewares=[body_deadline((limits or HttpLimits()).body_timeout_s)])
    app[SERVICE] = service
    app.router.add_post("/", post_event)
    app.router.add_post("/api/v1.0/feedback", post_feedback)
    app.router.add_get("/estimate", get_estimate)
    app.router.add_get("/metrics", get_metrics)
    app.router.add_get("/health/live", live)
    app.router.add_get("/health/ready", ready)
    app.router.add_post("/admin/flush", flush)
    app.router.add_post("/admin/reload", reload)
    app.router.add_post("/assess", post_assess)
    if manage_lifecycle:
        async def _start(app: web.Application) -> None:
            await app[SERVICE].start()

        async def _stop(app: web.Application) -> None:
            await app[SERVICE].stop()

        app.on_startup.append(_start)
        app.on_shutdown.append(_stop)
    return app


def create_service(config: SidecarConfig) -> SidecarService:
    from daic.sidecar.assessment import AssessorPool
    from daic.storage import open_store

    store = open_store(config.store_url)
    return SidecarService(config, store, AssessorPool(store, config.model_name, config.window,
                                                      cache_dir=config.wal_dir / "assessors"))


async def serve(config: SidecarConfig, service: SidecarService | None = None,
                stop: asyncio.Event | None = None, limits: HttpLimits | None = None) -> None:
    """Serve until SIGINT/SIGTERM (or ``stop``), losing nothing the executor sends around a restart:

    1. recover the write-ahead log and bind the port at once, so events are taken (written ahead,
       queued) while the champion's reference loads and the log replays (``/health/ready`` 503);
    2. on SIGTERM, report not-ready but keep taking events until none came for ``drain_quiet_s``
       (at most ``drain_max_s``): the executor in the same pod is being stopped at the same time and
       still posts what its logger queue holds;
    3. then stop taking events, process and write everything accepted, checkpoint, close.

    Both ports bound their clients with ``limits`` (daic.serving.http_limits): idle and
    unfinished connections closed, bodies given a deadline, open connections capped."""
    service = service or create_service(config)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    token = read_token(config.feedback_token_file)
    await service.open()
    limits = limits or HttpLimits()
    runners = [make_runner(build_app(service, manage_lifecycle=False, limits=limits), limits, access_log=None),
               make_runner(build_public_app(service, token, limits), limits, access_log=None)]
    for runner in runners:
        await runner.setup()
    # Events, feedback without a token and admin: loopback only (the executor is in the same pod;
    # on the embedded default the gateway is on the same machine).
    await start_site(runners[0], "127.0.0.1", config.ingest_port, limits)
    await start_site(runners[1], config.host, config.port, limits)
    logger.info("daic sidecar for %s: events on 127.0.0.1:%d, estimate/metrics/health on %s:%d%s; store %s, "
                "state %s", config.deployment, config.ingest_port, config.host, config.port,
                " (+ feedback with a token)" if token else "", service.store.url, config.wal_dir)
    warm = asyncio.create_task(service.warm_up())
    try:
        await stop.wait()
        logger.info("stopping: draining (not ready, still taking events)")
        await service.drain(config.drain_quiet_s, config.drain_max_s)
        if not warm.done():
            warm.cancel()  # what was taken stays in the write-ahead log and is replayed at the next start
        await asyncio.gather(warm, return_exceptions=True)
        await service.stop()
    finally:
        for runner in runners:
            await runner.cleanup()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def run(config: SidecarConfig) -> None:
    """Serve until SIGINT/SIGTERM (:func:`serve`); shutdown writes every accepted event to the store."""
    asyncio.run(serve(config))

