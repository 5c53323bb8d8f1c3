"""Local pipeline runs: a Python callable in its own process, keyed by run name, state in files.

Used by ``daic controller`` (the embedded default), where the pipeline is run by ``kfp.local``
through ``daic.pipelines.local_run.run_pipeline(params) -> result``. Durability is the point:

* the worker process is started in its own session, so killing the controller (even ``kill -9``)
  does not kill the run; a restarted controller finds it by name under ``<state_dir>/runs/``;
* a run directory is claimed by an atomic ``rename`` of a prepared directory, so two controllers
  (or a controller retrying after a crash) can never start the same run name twice;
* every state file is written to a temporary file and renamed into place.

Layout of ``<state_dir>/runs/<run_name>/``: ``params.json``, ``state.json`` (phase, pid, times),
``stage`` (optional, what the run is doing), ``result.json`` (when it succeeded), ``error.txt``.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from daic.operators.observations import RunPhase, RunState

DEFAULT_CALLABLE = "daic.pipelines.local_run:run_pipeline"
_NAME_OK = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._")


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON so readers see the old file or the new one, never a part (temp + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(obj, fh, indent=2, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_run_name(name: str) -> str:
    if not name or not set(name) <= _NAME_OK or name.startswith("."):
        raise ValueError(f"invalid run name {name!r}: use letters, digits and -._ (not starting with '.')")
    return name


def _pid_runs(pid: int, marker: str) -> bool:
    """Is ``pid`` alive (not a zombie) and still our worker for ``marker`` (guards against pid reuse)?"""
    proc = Path(f"/proc/{pid}")
    if proc.parent.exists():
        try:
            stat = (proc / "stat").read_text()
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return False
        state = stat.rsplit(")", 1)[-1].split()[0]
        return state not in ("Z", "X") and marker in cmdline
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class LocalRunner:
    """Runs ``callable_ref`` (``"package.module:function"`` or ``"/path/file.py:function"``)."""

    def __init__(self, state_dir: str | os.PathLike[str], callable_ref: str = DEFAULT_CALLABLE,
                 python: str | None = None, claim_timeout: float = 30.0, env: dict[str, str] | None = None):
        """``env``: extra environment for the worker (e.g. ``DAIC_STORE``, the store its run writes)."""
        if ":" not in callable_ref:
            raise ValueError(f"callable {callable_ref!r} must look like 'module:function' or '/path/file.py:function'")
        self.root = Path(state_dir).resolve() / "runs"
        self.callable_ref = callable_ref
        self.python = python or sys.executable
        self.claim_timeout = claim_timeout
        self.env = dict(env or {})
        self._children: dict[str, subprocess.Popen] = {}

    def run_dir(self, run_name: str) -> Path:
        return self.root / check_run_name(run_name)

    def submit(self, run_name: str, params: dict[str, Any]) -> None:
        final = self.run_dir(run_name)
        if final.exists():
            return
        self.root.mkdir(parents=True, exist_ok=True)
        prepared = self.root / f".claim-{run_name}-{uuid.uuid4().hex[:8]}"
        prepared.mkdir()
        write_json_atomic(prepared / "params.json", params)
        write_json_atomic(prepared / "request.json", {"callable": self.callable_ref, "run_name": run_name})
        with open(self.root / f"{run_name}.log", "ab") as log:
            child = subprocess.Popen(
                [self.python, "-m", "daic.operators.runners.local_worker", str(prepared), str(final)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, close_fds=True, env={**os.environ, **self.env})
        self._children[run_name] = child
        # Wait for the worker's claim (the rename), so the next get() sees the run; a lost claim
        # race (another worker got there first) ends the child at once and is fine too.
        deadline = time.monotonic() + self.claim_timeout
        while not final.exists():
            if child.poll() is not None:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {run_name}: worker pid {child.pid} did not claim {final} "
                                   f"within {self.claim_timeout} s")
            time.sleep(0.01)
        if not final.exists():
            raise RuntimeError(f"run {run_name}: worker exited with {child.returncode} before claiming "
                               f"{final}; see {self.root / f'{run_name}.log'}")

    def _reap(self) -> None:
        for name, child in list(self._children.items()):
            if child.poll() is not None:
                del self._children[name]

    def get(self, run_name: str) -> RunState:
        self._reap()
        run_dir = self.run_dir(run_name)
        if not run_dir.exists():
            return RunState(run_name, RunPhase.not_found)
        try:
            state = json.loads((run_dir / "state.json").read_text())
        except (OSError, ValueError) as exc:
            return RunState(run_name, RunPhase.unknown, error=f"cannot read state of {run_name}: {exc}")
        phase = RunPhase(state["phase"])
        stage = None
        if (run_dir / "stage").exists():
            stage = (run_dir / "stage").read_text().strip() or None
        if phase is RunPhase.running and not _pid_runs(int(state["pid"]), str(run_dir)):
            # Re-read: the worker may have finished between the two reads.
            state = json.loads((run_dir / "state.json").read_text())
            phase = RunPhase(state["phase"])
            if phase is RunPhase.running:
                return RunState(run_name, RunPhase.failed, stage,
                                error=f"worker pid {state['pid']} exited without recording an outcome")
        if phase is RunPhase.succeeded:
            try:
                result = json.loads((run_dir / "result.json").read_text())
            except (OSError, ValueError) as exc:
                return RunState(run_name, RunPhase.failed, stage, error=f"unreadable result: {exc}")
            return RunState(run_name, phase, stage, result=result)
        error = None
        if (run_dir / "error.txt").exists():
            error = (run_dir / "error.txt").read_text().strip().splitlines()[-1:] or None
            error = error[0] if error else None
        return RunState(run_name, phase, stage, error=error)

    def cancel(self, run_name: str) -> None:
        run_dir = self.run_dir(run_name)
        try:
            state = json.loads((run_dir / "state.json").read_text())
        except (OSError, ValueError):
            return
        if RunPhase(state["phase"]).terminal:
            return
        pid = int(state["pid"])
        if _pid_runs(pid, str(run_dir)):
            try:
                os.killpg(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        state.update(phase=RunPhase.canceled.value, finished_at=datetime.now(timezone.utc).isoformat())
        write_json_atomic(run_dir / "state.json", state)
        self._reap()

    def remove(self, run_name: str) -> None:
        """Delete a finished run's directory (not used by the controller; for housekeeping)."""
        shutil.rmtree(self.run_dir(run_name), ignore_errors=True)
