"""The labeling web page's server (aiohttp): one page, a small JSON API, answers in the store.

Run with ``daic label serve``; the page lives in ``static/`` (HTML, JS, CSS as files, not strings).

Who may do what (answers become training labels, so a forged answer is data poisoning):

* every page and API route except ``/healthz``, ``/login`` and ``/static`` needs a labeler's token
  (:mod:`daic.labeling.auth`): the HttpOnly SameSite=Strict cookie the login page sets, or
  ``Authorization: Bearer <token>``; the labeler's name stored with an answer comes from it;
* state-changing requests (``POST``) accept only ``Content-Type: application/json`` (a cross-site
  form or ``text/plain`` post cannot be made without a CORS preflight) and, when they carry an
  ``Origin`` (browsers always do on POST), only this page's own origin or one listed in
  ``allowed_origins``; a cookie-authenticated POST without ``Origin`` is refused;
* bodies: at most ``max_body_bytes`` (413), identity encoding only, strict UTF-8 JSON parsed by
  orjson (NaN/Infinity, bad UTF-8, nesting past orjson's limit: 400), then a closed schema (400 naming
  the field); cycle names and ids are checked before they reach a key (400).

Store I/O runs in a small thread pool with a deadline (``store_timeout_s``): a hung store gives 503
to the requests that need it while the event loop, ``/healthz`` and other requests go on. Work
still queued when its deadline passes is dropped with the 503 (it never runs later); a call
already running finishes on its own, so an answer that got 503 may still be stored: writes of
answers to one input are therefore ordered (:class:`AnswerWrites`), and one that got 503 never
lands over a later answer the page acknowledged with 200.
"""
from __future__ import annotations

import asyncio
import html
import io
import itertools
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

import numpy as np
import orjson
from aiohttp import web
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from daic.serving.http_limits import HttpLimits, body_deadline, serve_app
from daic.storage import KeyNotFound, ObjectStore, StorageError
from daic.storage.keys import id_to_key_part, is_hashed, key_part_to_id

from .auth import Labelers
from .book import UNSURE, LabelBook, check_cycle

STATIC = Path(__file__).parent / "static"
# Passed to aiohttp's request handler as plain keywords (AppRunner(app, **RUNNER_ARGS), serve's runner):
# bodies reach the page as sent, so a compressed one is refused with a JSON message instead of being
# inflated (or failing inside aiohttp's parser with a bare 400). Not run_app(handler_args=...): aiohttp
# hands that on to its request handler as an unknown keyword, and on the TypeError drops every option.
RUNNER_ARGS = {"auto_decompress": False}
COOKIE = "daic_labeler"
T = TypeVar("T")


@dataclass(frozen=True)
class LabelingConfig:
    """Limits of the labeling page (defaults documented in docs/serving.md)."""

    max_body_bytes: int = 16 * 1024
    store_timeout_s: float = 10.0
    io_threads: int = 8
    allowed_origins: tuple[str, ...] = ()
    secure_cookie: bool = False  # set when the page is served over https

    def __post_init__(self) -> None:
        if not 256 <= self.max_body_bytes <= 1 << 20:
            raise ValueError(f"max_body_bytes must be in [256, 1 MiB], got {self.max_body_bytes}")
        if not self.store_timeout_s > 0:
            raise ValueError(f"store_timeout_s must be > 0, got {self.store_timeout_s}")
        if self.io_threads < 1:
            raise ValueError(f"io_threads must be >= 1, got {self.io_threads}")


STORE_KEY = web.AppKey("store", ObjectStore)
LABELERS_KEY = web.AppKey("labelers", Labelers)
CONFIG_KEY = web.AppKey("config", LabelingConfig)
POOL_KEY = web.AppKey("pool", ThreadPoolExecutor)
LABELER = web.RequestKey("labeler", str)


class LabelPost(BaseModel):
    """Body of ``POST /api/<cycle>/labels``."""

    model_config = ConfigDict(extra="forbid", strict=True)
    id: str = Field(min_length=1, max_length=512)
    label: int | str


class LoginPost(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    token: str = Field(min_length=1, max_length=256)


def _error(cls: type[web.HTTPException], message: str, **headers: str) -> web.HTTPException:
    return cls(text=json.dumps({"error": message}), content_type="application/json", headers=headers or None)


def _too_large(limit: int, size: int) -> web.HTTPException:
    return web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=size, content_type="application/json",
                                         text=json.dumps({"error": f"body of {size}+ bytes exceeds the limit "
                                                                   f"of {limit} bytes"}))


def _bad(message: str) -> web.HTTPException:
    return _error(web.HTTPBadRequest, message)


async def _io(request: web.Request, fn: Callable[..., T], *args: Any) -> T:
    """Run store I/O off the event loop, with a deadline; store failures become 503."""
    app = request.app
    loop = asyncio.get_running_loop()
    future = loop.run_in_executor(app[POOL_KEY], fn, *args)
    try:
        return await asyncio.wait_for(asyncio.shield(future), app[CONFIG_KEY].store_timeout_s)
    except asyncio.TimeoutError:
        future.cancel()  # still queued: dropped, it never runs (one already running finishes on its own)
        raise _error(web.HTTPServiceUnavailable, f"the object store did not answer within "
                     f"{app[CONFIG_KEY].store_timeout_s:g}s; try again", **{"Retry-After": "5"}) from None
    except KeyNotFound as exc:
        raise _error(web.HTTPNotFound, str(exc)) from None
    except StorageError as exc:
        raise _error(web.HTTPServiceUnavailable, f"object store error: {exc}") from None


def _cycle(request: web.Request) -> str:
    try:
        return check_cycle(request.match_info["cycle"])
    except ValueError as exc:
        raise _bad(str(exc)) from None


def _load_task(book: LabelBook) -> None:
    try:
        book.task  # loads and caches the task; KeyNotFound (404) when there is none
    except ValueError as exc:  # a task object that is not a valid LabelingTask
        raise StorageError(f"the labeling task of cycle {book.cycle!r} is unreadable: {str(exc)[:300]}") from exc


async def _book(request: web.Request) -> LabelBook:
    book = LabelBook(request.app[STORE_KEY], _cycle(request))
    await _io(request, _load_task, book)
    return book


async def _json_body(request: web.Request, model: type[BaseModel]) -> Any:
    """Read and validate a JSON body under the rules in the module docstring."""
    ctype = request.headers.get("Content-Type", "")
    media, _, params = ctype.partition(";")
    if media.strip().lower() != "application/json":
        raise _error(web.HTTPUnsupportedMediaType, f"Content-Type must be application/json, got {ctype[:80]!r}")
    charset = params.strip().lower()
    if charset and charset.replace(" ", "") not in ("charset=utf-8", "charset=\"utf-8\""):
        raise _bad(f"only UTF-8 bodies are accepted, got {params.strip()[:40]!r}")
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise _bad(f"Content-Encoding {encoding[:40]!r} is not accepted; send the JSON uncompressed")
    limit = request.app[CONFIG_KEY].max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(limit, request.content_length)
    raw = b""
    while len(raw) <= limit:  # read() returns what has arrived so far: read to the end, or past the cap
        chunk = await request.content.read(limit + 1 - len(raw))
        if not chunk:
            break
        raw += chunk
    if len(raw) > limit:
        raise _too_large(limit, len(raw))
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _bad(f"body must be strict UTF-8 JSON (no NaN/Infinity): {exc}") from None
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = str(first["loc"][0]) if first["loc"] else "body"
        raise _bad(f"field {where!r}: {first['msg']}; expected {_shape(model)}") from None


def _shape(model: type[BaseModel]) -> str:
    if model is LabelPost:
        return '{"id": "<input id>", "label": 0-9 or "unsure"}'
    return '{"token": "<your token>"}'


def _same_origin(request: web.Request, origin: str) -> bool:
    own = f"{request.scheme}://{request.host}"
    return origin == own or origin in request.app[CONFIG_KEY].allowed_origins


def _labelers(request: web.Request) -> Labelers:
    """The labelers, re-read if their file changed; an unreadable file is a 503 naming it (nobody is let
    in on the tokens read before: one of them may have been revoked by the change)."""
    labelers = request.app[LABELERS_KEY]
    try:
        labelers.refresh()
    except ValueError as exc:
        raise _error(web.HTTPServiceUnavailable, f"the labelers file is unreadable, so no login can be checked; "
                     f"ask the operator to fix it: {str(exc)[:300]}", **{"Retry-After": "5"}) from None
    return labelers


@web.middleware
async def guard(request: web.Request, handler):
    """Authentication, origin check and security headers for every route (see the module docstring)."""
    path = request.path
    public = path in ("/healthz", "/login") or path.startswith("/static/")
    bearer = request.headers.get("Authorization", "")
    by_header = bearer[:7].lower() == "bearer "
    token = bearer[7:].strip() if by_header else request.cookies.get(COOKIE)
    if request.method not in ("GET", "HEAD"):
        origin = request.headers.get("Origin")
        if origin is not None and not _same_origin(request, origin):
            raise _error(web.HTTPForbidden, f"requests from origin {origin[:100]!r} are not accepted")
        if origin is None and not by_header and path != "/api/login":
            raise _error(web.HTTPForbidden, "a browser request without Origin is not accepted")
    if not public and path != "/api/login":
        name = _labelers(request).who(token)
        if name is None:
            if request.method == "GET" and not path.startswith("/api/"):
                raise web.HTTPFound("/login")
            raise _error(web.HTTPUnauthorized, "log in with the link you were given "
                         "(or send Authorization: Bearer <token>)", **{"WWW-Authenticate": "Bearer"})
        request[LABELER] = name
    response = await handler(request)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault("Content-Security-Policy",
                                "default-src 'self'; img-src 'self'; frame-ancestors 'none'")
    return response


async def login_page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "login.html")


async def login(request: web.Request) -> web.Response:
    body = await _json_body(request, LoginPost)
    name = _labelers(request).who(body.token)
    if name is None:
        raise _error(web.HTTPUnauthorized, "unknown or revoked token: ask for a new login link")
    response = web.json_response({"labeler": name})
    response.set_cookie(COOKIE, body.token, httponly=True, samesite="Strict", path="/",
                        secure=request.app[CONFIG_KEY].secure_cookie, max_age=30 * 24 * 3600)
    return response


async def logout(request: web.Request) -> web.Response:
    response = web.json_response({"labeler": None})
    response.del_cookie(COOKIE, path="/")
    return response


def _cycles(store: ObjectStore) -> list[str]:
    return sorted(k.split("/")[1] for k in store.list("cycles/") if k.endswith("/labeling/task.json"))


async def index(request: web.Request) -> web.Response:
    cycles = await _io(request, _cycles, request.app[STORE_KEY])
    if len(cycles) == 1:
        raise web.HTTPFound(f"/label/{cycles[0]}")
    links = "".join(f'<li><a href="/label/{html.escape(c)}">{html.escape(c)}</a></li>' for c in cycles)
    return web.Response(text="<!doctype html><title>daic labeling</title><h1>Labeling tasks</h1>"
                             f"<ul>{links or '<li>no labeling task yet</li>'}</ul>", content_type="text/html")


async def page(request: web.Request) -> web.FileResponse:
    await _book(request)
    return web.FileResponse(STATIC / "index.html")


def _task_doc(book: LabelBook, labeler: str) -> dict:
    t, answers = book.task, book.answers()
    items = []
    for k, i in enumerate(t.ids):
        item = {"id": i, "key": id_to_key_part(i), "answered": i in answers,
                "label": answers[i].label if i in answers else None}
        if t.show_model_answer:  # blind by default (LabelingTask's docstring)
            item.update(prediction=t.predictions[k], confidence=round(t.confidences[k], 4))
        items.append(item)
    return {"cycle": t.cycle, "classes": t.classes, "budget": t.budget or len(t.ids), "labeler": labeler,
            "show_model_answer": t.show_model_answer, "answered": len(answers), "total": len(t.ids),
            "items": items}


async def task(request: web.Request) -> web.Response:
    book = await _book(request)
    return web.json_response(await _io(request, _task_doc, book, request[LABELER]))


def _png(book: LabelBook, sample_id: str) -> bytes:
    pixels = book.input_of(sample_id)
    buf = io.BytesIO()
    Image.fromarray((np.clip(pixels, 0, 1) * 255).astype(np.uint8), mode="L").save(buf, format="PNG")
    return buf.getvalue()


async def input_png(request: web.Request) -> web.Response:
    book = await _book(request)
    key = request.match_info["key"]
    if not is_hashed(key):
        try:
            key_part_to_id(key)
        except ValueError as exc:
            raise _bad(f"input key: {exc}") from None
    sample_id = {id_to_key_part(i): i for i in book.task.ids}.get(key)  # hashed forms (long ids) too
    if sample_id is None:
        raise _error(web.HTTPNotFound, f"input {key[:80]!r} is not part of cycle {book.cycle!r}'s task")
    body = await _io(request, _png, book, sample_id)
    return web.Response(body=body, content_type="image/png", headers={"Cache-Control": "private, max-age=3600"})


class AnswerSuperseded(Exception):
    """A later answer to the same input was stored first; this older one was not written."""


class AnswerWrites:
    """Orders the writes of answers to one input within this page process.

    A write can outlive its request: the page answers 503 at ``store_timeout_s`` while the store
    call goes on and may land seconds later. Were two answers to one input written freely, the
    one that got 503 could land over a later one acknowledged with 200, losing what the labeler
    was told was saved. So each answer draws a ticket when its request arrives (on the event
    loop, so tickets follow arrival), writes of one input hold that input's lock (waiting at most
    ``wait_s``, else a StorageError: 503), and a write whose ticket is older than the last one
    written for that input is dropped (:class:`AnswerSuperseded`: 409). One entry per input ever
    answered (a lock and an int), and only the task's inputs get one.
    """

    def __init__(self) -> None:
        self._tickets = itertools.count(1)
        self._guard = threading.Lock()
        self._slots: dict[str, tuple[threading.Lock, list[int]]] = {}

    def ticket(self) -> int:
        return next(self._tickets)

    def __len__(self) -> int:
        """How many inputs have a slot (at most the task's size)."""
        return len(self._slots)

    def record(self, book: LabelBook, sample_id: str, label, labeler: str, ticket: int, wait_s: float) -> None:
        book.check_id(sample_id)  # before a slot exists: only the task's inputs ever get one
        key = book.answer_key(sample_id)
        with self._guard:
            lock, last = self._slots.setdefault(key, (threading.Lock(), [0]))
        if not lock.acquire(timeout=wait_s):
            raise StorageError(f"{book.store.url}: an earlier answer to {sample_id!r} is still being written "
                               f"(store slow?); nothing was saved, try again")
        try:
            if last[0] > ticket:
                raise AnswerSuperseded(f"a later answer to {sample_id!r} was saved meanwhile; this one was not")
            book.record(sample_id, label, labeler=labeler)
            last[0] = ticket
        finally:
            lock.release()


WRITES_KEY = web.AppKey("answer_writes", AnswerWrites)


def _record(book: LabelBook, sample_id: str, label, labeler: str, writes: AnswerWrites, ticket: int,
            wait_s: float) -> tuple[int, int]:
    writes.record(book, sample_id, label, labeler, ticket, wait_s)
    return book.progress()


async def post_label(request: web.Request) -> web.Response:
    cycle = _cycle(request)
    body = await _json_body(request, LabelPost)
    label = body.label
    if isinstance(label, str) and label != UNSURE:
        raise _bad(f"field 'label' must be a class index or 'unsure', got {label[:40]!r}")
    ticket = request.app[WRITES_KEY].ticket()
    book = LabelBook(request.app[STORE_KEY], cycle)
    await _io(request, _load_task, book)
    if body.id not in set(book.task.ids):
        raise _bad(f"field 'id': {body.id[:80]!r} is not part of cycle {cycle!r}'s task")
    try:
        answered, total = await _io(request, _record, book, body.id, label, request[LABELER],
                                    request.app[WRITES_KEY], ticket, request.app[CONFIG_KEY].store_timeout_s)
    except ValueError as exc:
        raise _bad(f"field 'label': {exc}") from None
    except AnswerSuperseded as exc:
        raise _error(web.HTTPConflict, str(exc)) from None
    return web.json_response({"answered": answered, "total": total})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def _close_pool(app: web.Application) -> None:
    app[POOL_KEY].shutdown(wait=False, cancel_futures=True)


def make_app(store: ObjectStore, labelers: Labelers, config: LabelingConfig | None = None,
             limits: HttpLimits | None = None) -> web.Application:
    config = config or LabelingConfig()
    # client_max_size also bounds what aiohttp itself would buffer (the handlers read at most the limit);
    # a body must arrive within limits.body_timeout_s (408, daic.serving.http_limits)
    app = web.Application(client_max_size=config.max_body_bytes,
                          middlewares=[body_deadline((limits or HttpLimits()).body_timeout_s), guard])
    app[STORE_KEY] = store
    app[LABELERS_KEY] = labelers
    app[CONFIG_KEY] = config
    app[POOL_KEY] = ThreadPoolExecutor(config.io_threads, thread_name_prefix="labeling-io")
    app[WRITES_KEY] = AnswerWrites()
    app.on_cleanup.append(_close_pool)
    app.add_routes([
        web.get("/", index),
        web.get("/healthz", healthz),
        web.get("/login", login_page),
        web.post("/api/login", login),
        web.post("/api/logout", logout),
        web.get("/label/{cycle}", page),
        web.get("/api/{cycle}/task", task),
        web.get("/api/{cycle}/inputs/{key}.png", input_png),
        web.post("/api/{cycle}/labels", post_label),
        web.static("/static", STATIC),
    ])
    return app


def serve(app: web.Application, host: str, port: int, limits: HttpLimits | None = None) -> None:
    """Serve the page until SIGINT/SIGTERM with :data:`RUNNER_ARGS` and ``limits`` (idle and
    unfinished connections closed, bodies given a deadline, open connections capped)."""
    serve_app(app, host, port, limits, **RUNNER_ARGS)
