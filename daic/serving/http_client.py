"""Bounds every daic HTTP *client* puts on the answers it reads: a size and a total time.

``requests``' ``timeout`` bounds each wait for a byte, not the answer: a server (or a proxy in
front of it) that drips a byte every few seconds holds the caller for as long as it likes, and
one that streams a body without end fills the caller's memory, since ``response.json()`` reads
the whole body first. The callers are long-lived (the operator reads the sidecar's estimate and
Prometheus every few seconds; the gateway reads its nodes' answers for every request) or run
unattended (deploy, the demo, the CLI), so a misbehaving peer must cost them a bounded time and
memory and give an error that names the peer and the bound.

:func:`send` is a ``requests`` call read whole within ``timeout_s`` and ``max_bytes`` (the
response comes back as usual, its body already read); :func:`read_capped` reads an aiohttp
answer within ``max_bytes``.
The server side is :mod:`daic.serving.http_limits`.
"""
from __future__ import annotations

import time
from typing import Any

import requests
import urllib3

#: Answers that are one small JSON document (an estimate, stats, a flush receipt).
SMALL_ANSWER_BYTES = 1 * 2**20
_CHUNK = 64 * 2**10


class AnswerTooLarge(requests.RequestException):
    """The peer answered more than the caller reads. A ``RequestException``, so a caller that
    treats an unreachable peer as a failed read treats this one the same way."""


def send(session: requests.Session | None, method: str, url: str, *, timeout_s: float, max_bytes: int,
         **kwargs: Any) -> requests.Response:
    """``session.request(method, url, **kwargs)`` whose answer is read whole within ``timeout_s``
    (connecting, the head and the body together; a read already waiting may add one more
    ``timeout_s``) and ``max_bytes``.

    Raises :class:`AnswerTooLarge` past ``max_bytes`` (a declared ``Content-Length`` over it is
    refused before any body is read), ``requests.Timeout`` past ``timeout_s``, and the usual
    ``requests.RequestException`` for the rest. The returned response has its body read
    (``.content``, ``.json()`` and ``.text`` work) and its connection released."""
    if max_bytes < 1:
        raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
    deadline = time.monotonic() + timeout_s
    response = (session or requests).request(method, url, timeout=timeout_s, stream=True, **kwargs)
    try:
        try:
            declared = int(response.headers.get("Content-Length") or 0)
        except ValueError:
            declared = 0
        if declared > max_bytes:
            raise AnswerTooLarge(f"{method} {url} answered a {declared}-byte body, more than the "
                                 f"{max_bytes} bytes daic reads")
        body = bytearray()
        read = getattr(response.raw, "read1", None) or response.raw.read  # read1: what has arrived
        while True:
            if time.monotonic() > deadline:
                raise requests.Timeout(f"{method} {url}: the answer took longer than {timeout_s:g}s to arrive "
                                       f"({len(body)} bytes so far)")
            chunk = read(_CHUNK, decode_content=True)
            if not chunk:
                break
            body += chunk
            if len(body) > max_bytes:
                raise AnswerTooLarge(f"{method} {url} answered more than the {max_bytes} bytes daic reads")
    except requests.RequestException:
        response.close()
        raise
    except urllib3.exceptions.ReadTimeoutError as exc:  # no byte for a whole read timeout
        response.close()
        raise requests.Timeout(f"{method} {url}: no byte of the answer for {timeout_s:g}s") from exc
    except Exception as exc:  # urllib3's protocol and decoding errors mid-body
        response.close()
        raise requests.ConnectionError(f"{method} {url}: {type(exc).__name__}: {exc}") from exc
    response._content, response._content_consumed = bytes(body), True  # as requests does when not streaming
    response.close()
    return response


async def read_capped(response, max_bytes: int, what: str) -> bytes:
    """An aiohttp ``ClientResponse``'s body, at most ``max_bytes`` (:class:`AnswerTooLarge` past it,
    without reading the rest). The session's own timeout bounds the time."""
    declared = response.content_length
    if declared is not None and declared > max_bytes:
        raise AnswerTooLarge(f"{what} answered a {declared}-byte body, more than the {max_bytes} bytes daic reads")
    body = bytearray()
    while True:
        chunk = await response.content.read(_CHUNK)
        if not chunk:
            return bytes(body)
        body += chunk
        if len(body) > max_bytes:
            raise AnswerTooLarge(f"{what} answered more than the {max_bytes} bytes daic reads")

