"""A "black hole" server for timeout tests: a real listening socket that never accepts.

The kernel completes the TCP handshake and takes the request, and no byte ever comes back: what a
hung API server, KFP or Label Studio looks like to a client. A client without a read timeout
blocks on it for ever, so a test that calls one in a thread and waits with a bound can fail.
"""
from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def never_answering_server() -> Iterator[str]:
    """The ``http://127.0.0.1:<port>`` URL of a socket that listens and never accepts."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
