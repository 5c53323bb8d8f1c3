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
        self._own_dir: Path | None = None
        if labelers_file is None:
            import tempfile

            self._own_dir = Path(tempfile.mkdtemp(prefix="labelers-"))  # removed on exit
            labelers_file = self._own_dir / "labelers.json"
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
        if self._own_dir is not None:
            import shutil

            shutil.rmtree(self._own_dir, ignore_errors=True)


class LabelStudio:
    """Label Studio (PyPI, from ``.venv-labelstudio``: ``make venv-labelstudio``) on a free loopback
    port with a data directory of its own, started and stopped like SeaweedFS is (conftest.py).

    A fresh database needs Label Studio's ~200 migrations (minutes on a busy machine), so the first
    start migrates a template directory inside the virtualenv once; every server starts from a copy.
    """

    EMAIL = "admin@daic.test"
    PASSWORD = "daic-test-password"
    LEGACY_TOKEN = "0123456789abcdef0123456789abcdef01234567"

    def __init__(self, workdir: Path, venv: Path | None = None) -> None:
        import os

        root = Path(__file__).resolve().parents[1]
        self.venv = Path(venv or os.environ.get("DAIC_LABEL_STUDIO_VENV", root / ".venv-labelstudio"))
        self.workdir = Path(workdir)
        self.data = self.workdir / "data"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._proc = None

    @property
    def exe(self) -> Path:
        return self.venv / "bin" / "label-studio"

    def _env(self, data: Path) -> dict:
        import os

        env = {k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO", "DJANGO"))}
        env.update(LABEL_STUDIO_BASE_DATA_DIR=str(data), LOG_LEVEL="WARNING", COLLECT_ANALYTICS="false",
                   LATEST_VERSION_CHECK="false", SENTRY_DSN="", FRONTEND_SENTRY_DSN="")
        return env

    def _template(self) -> Path:
        import fcntl
        import subprocess

        template = self.venv / "daic-template"
        done = template / ".migrated"
        if done.exists():
            return template
        with open(self.venv / "daic-template.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # two test runs at once: one migrates, the other waits
            if not done.exists():
                template.mkdir(exist_ok=True)
                subprocess.run([str(self.exe), "user", "--data-dir", str(template), "--username", self.EMAIL],
                               env=self._env(template), cwd=template, check=True, timeout=1800,
                               stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
                done.touch()
        return template

    def start(self, fresh: bool = True) -> "LabelStudio":
        import shutil
        import subprocess

        if not self.exe.exists():
            raise RuntimeError(f"{self.exe} is missing: run `make venv-labelstudio`")
        if fresh:
            shutil.rmtree(self.data, ignore_errors=True)
            shutil.copytree(self._template(), self.data, ignore=shutil.ignore_patterns(".migrated"))
        log = open(self.workdir / "label-studio.log", "ab")
        self._proc = subprocess.Popen(
            [str(self.exe), "start", "--no-browser", "--data-dir", str(self.data), "--internal-host", "127.0.0.1",
             "-p", str(self.port), "--username", self.EMAIL, "--password", self.PASSWORD,
             "--user-token", self.LEGACY_TOKEN, "--log-level", "WARNING"],
            env=self._env(self.data), cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self._wait_ready()
        return self

    def _wait_ready(self, timeout: float = 900.0) -> None:
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"Label Studio exited with {self._proc.returncode}:\n{self.log_tail()}")
            try:
                if requests.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"Label Studio did not answer on {self.url} within {timeout:g}s:\n{self.log_tail()}")

    def log_tail(self, n: int = 3000) -> str:
        path = self.workdir / "label-studio.log"
        return path.read_text(errors="replace")[-n:] if path.exists() else ""

    def stop(self) -> None:
        import os
        import signal
        import subprocess

        if self._proc is not None and self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGTERM)
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait()
        self._proc = None

    def browser(self) -> requests.Session:
        """A session logged in through the login form, sending the CSRF token as the web app does."""
        s = requests.Session()
        s.get(f"{self.url}/user/login/", timeout=30)
        r = s.post(f"{self.url}/user/login/", timeout=30, allow_redirects=False,
                   data={"email": self.EMAIL, "password": self.PASSWORD,
                         "csrfmiddlewaretoken": s.cookies.get("csrftoken")})
        if r.status_code != 302:
            raise RuntimeError(f"Label Studio login failed: {r.status_code} {r.text[:300]}")
        s.headers.update({"X-CSRFToken": s.cookies.get("csrftoken"), "Referer": f"{self.url}/"})
        return s

    def personal_access_token(self) -> str:
        """What a user copies from Account & Settings -> Personal Access Token (a JWT refresh token)."""
        r = self.browser().post(f"{self.url}/api/token/", timeout=30)
        if r.status_code == 400:  # one token per user: revoke it through the UI's API, then create another
            raise RuntimeError(f"Label Studio has a personal token already: {r.text[:200]}")
        r.raise_for_status()
        return r.json()["token"]

    def __enter__(self) -> "LabelStudio":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
