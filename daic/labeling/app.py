"""The labeling web page's server (aiohttp): one page, a small JSON API, answers in the store.

Run with ``daic label serve``; the page lives in ``static/`` (HTML, JS, CSS as files, not strings).
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from aiohttp import web
from PIL import Image

from daic.storage import KeyNotFound, ObjectStore, StorageError

from .book import UNSURE, LabelBook

STATIC = Path(__file__).parent / "static"
STORE_KEY = web.AppKey("store", ObjectStore)


def _book(request: web.Request) -> LabelBook:
    cycle = request.match_info["cycle"]
    book = LabelBook(request.app[STORE_KEY], cycle)
    try:
        book.task
    except KeyNotFound as exc:
        raise web.HTTPNotFound(text=str(exc)) from exc
    return book


def _bad(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=json.dumps({"error": message}), content_type="application/json")


async def index(request: web.Request) -> web.Response:
    store = request.app[STORE_KEY]
    cycles = sorted(k.split("/")[1] for k in store.list("cycles/") if k.endswith("/labeling/task.json"))
    if len(cycles) == 1:
        raise web.HTTPFound(f"/label/{cycles[0]}")
    links = "".join(f'<li><a href="/label/{c}">{c}</a></li>' for c in cycles) or "<li>no labeling task yet</li>"
    return web.Response(text=f"<!doctype html><title>daic labeling</title><h1>Labeling tasks</h1><ul>{links}</ul>",
                        content_type="text/html")


async def page(request: web.Request) -> web.FileResponse:
    _book(request)
    return web.FileResponse(STATIC / "index.html")


async def task(request: web.Request) -> web.Response:
    book = _book(request)
    t, answers = book.task, book.answers()
    items = [{"id": i, "prediction": p, "confidence": round(c, 4),
              "answered": i in answers, "label": answers[i].label if i in answers else None}
             for i, p, c in zip(t.ids, t.predictions, t.confidences)]
    return web.json_response({"cycle": t.cycle, "classes": t.classes, "budget": t.budget or len(t.ids),
                              "answered": len(answers), "total": len(t.ids), "items": items})


async def input_png(request: web.Request) -> web.Response:
    book = _book(request)
    try:
        pixels = book.input_of(request.match_info["id"])
    except ValueError as exc:
        raise web.HTTPNotFound(text=str(exc)) from exc
    img = Image.fromarray((np.clip(pixels, 0, 1) * 255).astype(np.uint8), mode="L")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return web.Response(body=buf.getvalue(), content_type="image/png",
                        headers={"Cache-Control": "max-age=3600"})


async def post_label(request: web.Request) -> web.Response:
    book = _book(request)
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise _bad("body must be JSON: {\"id\": \"...\", \"label\": 0-9 or \"unsure\"}") from None
    if not isinstance(body, dict) or "id" not in body or "label" not in body:
        raise _bad("body must be an object with fields 'id' and 'label'")
    label = body["label"]
    if label != UNSURE and (isinstance(label, bool) or not isinstance(label, int)):
        raise _bad(f"field 'label' must be a class index or 'unsure', got {label!r}")
    try:
        book.record(str(body["id"]), label, labeler=str(body.get("labeler", "web")))
    except ValueError as exc:
        raise _bad(str(exc)) from exc
    except StorageError as exc:
        raise web.HTTPServiceUnavailable(text=str(exc)) from exc
    answered, total = book.progress()
    return web.json_response({"answered": answered, "total": total})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


def make_app(store: ObjectStore) -> web.Application:
    app = web.Application(client_max_size=64 * 1024)
    app[STORE_KEY] = store
    app.add_routes([
        web.get("/", index),
        web.get("/healthz", healthz),
        web.get("/label/{cycle}", page),
        web.get("/api/{cycle}/task", task),
        web.get("/api/{cycle}/inputs/{id}.png", input_png),
        web.post("/api/{cycle}/labels", post_label),
        web.static("/static", STATIC),
    ])
    return app
