"""A "black hole" server for timeout tests: a real listening socket that never accepts; and
:func:`returns_within`, which runs a call against it with a bound on the test's own wait.

The kernel completes the TCP handshake and takes the request, and no byte ever comes back: what a
hung API server, KFP or Label Studio looks like to a client. A client without a read timeout
blocks on it for ever, so a test that calls one in a thread and waits with a bound can fail.
"""
from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple


@contextmanager
def never_answering_server() -> Iterator[str]:
    """The ``http://127.0.0.1:<port>`` URL of a socket that listens and never accepts."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


class Outcome(NamedTuple):
    """What a call run by :func:`returns_within` did: seconds taken, what it raised, what it returned."""

    elapsed: float
    error: BaseException | None
    value: Any


def returns_within(seconds: float, call: Callable[[], Any]) -> Outcome:
    """Run ``call`` in a thread and wait at most ``seconds`` for it; fails the test if it is still
    blocked then (an unbounded wait), instead of hanging the suite."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        start = time.monotonic()
        try:
            outcome["value"] = call()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome["error"] = exc
        outcome["elapsed"] = time.monotonic() - start

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still blocked after {seconds} s: the call is not bounded"
    return Outcome(outcome["elapsed"], outcome.get("error"), outcome.get("value"))
