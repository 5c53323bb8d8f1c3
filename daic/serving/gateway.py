"""The local gateway: what Seldon's executor does in a pod, for one machine (aiohttp).

* forwards ``POST /api/v1.0/predictions`` (also under ``/seldon/<namespace>/<deployment>/`` and
  ``/seldon/<deployment>/``, the paths ``SeldonClient`` uses) to the model microservice, with a
  ``Seldon-Puid`` per request (the client's, or a fresh UUID), returned in ``meta.puid``;
* posts the same CloudEvents the executor's request logger posts, to the sidecar: the request
  before calling the model, the response after a successful one, each with its own ``Ce-Id`` and
  the shared ``Ce-Requestid`` (:func:`daic.sidecar.events.encode_cloudevent`);
* forwards ``POST /api/v1.0/feedback`` to the model and logs it as a feedback event.

Logging is asynchronous, as in the executor: each event is written down a pipe to a child process
(:mod:`daic.serving.request_logger`, the executor's logger workers) that posts it, so neither a
slow sidecar nor the HTTP of logging takes time or CPU from the gateway's event loop. With
``log_queue`` events unacknowledged, further events are dropped and counted; each posted event
comes back as sent, rejected (non-200) or failed; ``GET /gateway/stats`` reports every count, so
a benchmark can check that each request was logged or counted as dropped.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import uuid
from collections import Counter
from dataclasses import dataclass

import aiohttp
import orjson
from aiohttp import web

from daic.serving.affinity import check_cpus, pinned
from daic.serving.request_logger import ACK_SIZE, FAILED, decode_acks, encode_frame
from daic.sidecar.events import encode_cloudevent

logger = logging.getLogger(__name__)
MAX_BODY_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class GatewayConfig:
    model_url: str = "http://127.0.0.1:9000"
    logger_url: str | None = "http://127.0.0.1:8300/"
    host: str = "127.0.0.1"
    port: int = 8003
    deployment: str = "mnist"
    namespace: str = "local"
    predictor: str = "default"
    model_id: str = "classifier"
    log_queue: int = 10_000
    log_workers: int = 4
    timeout_s: float = 30.0
    logger_cpus: tuple[int, ...] = ()  # CPU affinity of the request-logger process (empty: inherit)

    def __post_init__(self) -> None:
        if self.log_queue < 1 or self.log_workers < 1:
            raise ValueError("log_queue and log_workers must be >= 1")
        if self.logger_cpus:
            check_cpus("logger_cpus", self.logger_cpus)
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {self.port}")
        for name in ("model_url", "logger_url"):
            url = getattr(self, name)
            if url is not None and not url.startswith(("http://", "https://")):
                raise ValueError(f"{name} must be an http(s) URL, got {url!r}")


def _seldon_error(status: int, info: str, reason: str) -> web.Response:
    """The error shape Seldon's executor answers with."""
    body = {"status": {"code": status, "info": info, "reason": reason, "status": "FAILURE"}}
    return web.json_response(body, status=status)


class Gateway:
    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.stats: Counter[str] = Counter()
        self._session: aiohttp.ClientSession | None = None
        self._logger: asyncio.subprocess.Process | None = None
        self._logger_down = False
        self._in_flight = 0  # events written to the request logger, not yet acknowledged
        self._settled: asyncio.Event | None = None  # set while nothing is in flight
        self._ack_reader: asyncio.Task | None = None
        self._source = f"http://{config.host}:{config.port}/"

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self, app: web.Application | None = None) -> None:
        timeout = aiohttp.ClientTimeout(total=self.config.timeout_s)
        self._session = aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=256))
        if self.config.logger_url:
            self._logger = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "daic.serving.request_logger", "--url", self.config.logger_url,
                "--workers", str(self.config.log_workers), "--timeout", str(self.config.timeout_s),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                preexec_fn=pinned(self.config.logger_cpus))
            self._settled = asyncio.Event()
            self._settled.set()
            self._ack_reader = asyncio.create_task(self._read_acks())

    async def stop(self, app: web.Application | None = None) -> None:
        """Wait (bounded) until every logged event is acknowledged, then close."""
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
    def _log(self, kind: str, puid: str, body: bytes) -> None:
        """Hand one event to the request logger: a non-blocking pipe write. At most ``log_queue``
        events are in flight; beyond that the event is dropped and counted."""
        if self._logger is None:
            return
        if self._in_flight >= self.config.log_queue:
            self.stats["events_dropped_queue_full"] += 1
            return
        headers, data = encode_cloudevent(kind, puid, body, source=self._source, model_id=self.config.model_id,
                                          deployment=self.config.deployment, namespace=self.config.namespace,
                                          predictor=self.config.predictor)
        self.stats["events_queued"] += 1
        if self._logger_down or self._logger.stdin.is_closing():
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
                self.stats["events_sent" if status == 200 else "events_failed" if status == FAILED
                           else f"events_rejected_{status}"] += 1
            self._settle(len(statuses))
        self._logger_down = True
        code = await self._logger.wait()
        if self._in_flight:
            logger.error("the request logger exited (code %s); %d event(s) in flight count as failed",
                         code, self._in_flight)
        self.stats["events_failed"] += self._in_flight
        self._settle(self._in_flight)

    def _settle(self, n: int) -> None:
        self._in_flight -= n
        if self._in_flight == 0:
            self._settled.set()

    # -- handlers -----------------------------------------------------------------------------
    async def predictions(self, request: web.Request) -> web.Response:
        self.stats["requests"] += 1
        body = await request.read()
        try:
            message = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            self.stats["responses_400"] += 1
            return _seldon_error(400, f"request body is not valid JSON: {exc}", "BAD_REQUEST")
        if not isinstance(message, dict):
            self.stats["responses_400"] += 1
            return _seldon_error(400, "request body must be a JSON object (a Seldon message)", "BAD_REQUEST")
        puid = request.headers.get("Seldon-Puid") or str(uuid.uuid4())
        self._log("request", puid, body)
        try:
            status, raw = await self._forward("/api/v1.0/predictions", body, puid)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            self.stats["responses_502"] += 1
            return _seldon_error(502, f"model server unreachable at {self.config.model_url}: {exc}", "MODEL_UNAVAILABLE")
        self.stats[f"responses_{status}"] += 1
        if status != 200:
            return web.Response(body=raw, status=status, content_type="application/json")
        self._log("response", puid, raw)
        try:
            reply = orjson.loads(raw)
            reply.setdefault("meta", {})["puid"] = puid
            out = orjson.dumps(reply)
        except (ValueError, AttributeError, TypeError):
            out = raw
        return web.Response(body=out, status=200, content_type="application/json", headers={"Seldon-Puid": puid})

    async def feedback(self, request: web.Request) -> web.Response:
        self.stats["feedback"] += 1
        body = await request.read()
        try:
            json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            return _seldon_error(400, f"feedback body is not valid JSON: {exc}", "BAD_REQUEST")
        puid = request.headers.get("Seldon-Puid") or str(uuid.uuid4())
        self._log("feedback", puid, body)
        try:
            status, raw = await self._forward("/api/v1.0/feedback", body, puid)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            return _seldon_error(502, f"model server unreachable at {self.config.model_url}: {exc}", "MODEL_UNAVAILABLE")
        return web.Response(body=raw, status=status, content_type="application/json")

    async def _forward(self, path: str, body: bytes, puid: str) -> tuple[int, bytes]:
        assert self._session is not None
        async with self._session.post(self.config.model_url + path, data=body,
                                      headers={"Content-Type": "application/json", "Seldon-Puid": puid}) as resp:
            return resp.status, await resp.read()

    async def ready(self, request: web.Request) -> web.Response:
        assert self._session is not None
        try:
            async with self._session.get(self.config.model_url + "/health/status") as resp:
                await resp.read()
                if resp.status == 200:
                    return web.json_response({"ready": True})
                return web.json_response({"ready": False, "model_status": resp.status}, status=503)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            return web.json_response({"ready": False, "error": str(exc)}, status=503)

    async def get_stats(self, request: web.Request) -> web.Response:
        queued = self._in_flight
        return web.json_response({**self.stats, "log_queue_depth": queued})

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        for prefix in ("", "/seldon/{namespace}/{deployment}", "/seldon/{deployment}"):
            app.router.add_post(prefix + "/api/v1.0/predictions", self.predictions)
            app.router.add_post(prefix + "/api/v1.0/feedback", self.feedback)
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
    parser.add_argument("--log-workers", type=int, default=4)
    parser.add_argument("--log-queue", type=int, default=10_000)
    parser.add_argument("--logger-cpus", default="",
                        help="CPU affinity of the request-logger process, e.g. '1' or '2,3' (default: inherit)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        config = GatewayConfig(model_url=args.model_url,
                               logger_url=None if args.logger_url.lower() == "none" else args.logger_url,
                               host=args.host, port=args.port, deployment=args.deployment,
                               log_workers=args.log_workers, log_queue=args.log_queue,
                               logger_cpus=_cpu_list(args.logger_cpus))
    except ValueError as exc:
        parser.error(str(exc))
    web.run_app(Gateway(config).app(), host=config.host, port=config.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
