"""Runs the real labeling aiohttp app on a free loopback port in a background thread, with one
labeler ("ann") whose token the tests use as a script would (Bearer) or as a browser does (login)."""
from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import requests
from aiohttp import web

from daic.labeling.app import RUNNER_ARGS, LabelingConfig, make_app
from daic.labeling.auth import Labelers, login_url
from daic.storage.seaweedfs import free_port


class ServerThread:
    def __init__(self, store, labelers_file: Path | None = None, config: LabelingConfig | None = None,
                 labeler: str = "ann") -> None:
        self.store = store
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        if labelers_file is None:
            import tempfile

            labelers_file = Path(tempfile.mkdtemp(prefix="labelers-")) / "labelers.json"
        self.labelers = Labelers.load(labelers_file)
        self.labeler = labeler
        self.token = self.labelers.issue(labeler) if labeler not in self.labelers.digests else None
        self.config = config
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def login_url(self) -> str:
        return login_url(self.url, self.token)

    def session(self, token: str | None = None) -> requests.Session:
        """A client authenticated as a script is: ``Authorization: Bearer <token>``."""
        s = requests.Session()
        s.headers["Authorization"] = f"Bearer {token or self.token}"
        return s

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._runner = web.AppRunner(make_app(self.store, self.labelers, self.config), **RUNNER_ARGS)
        self._loop.run_until_complete(self._runner.setup())
        self._loop.run_until_complete(web.TCPSite(self._runner, "127.0.0.1", self.port).start())
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._runner.cleanup())
        self._loop.close()

    def __enter__(self) -> "ServerThread":
        self._thread.start()
        if not self._ready.wait(timeout=30):
            raise TimeoutError("labeling server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
