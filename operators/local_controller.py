"""The AssessmentCycle loop on one machine: ``daic controller --cycle cycle.yaml``.

The same reconcile function as the kopf operator, with local adapters: the sidecar's estimate
over HTTP, pipeline runs as local processes keyed by run name (``LocalRunner``), the local
champion switch (``LocalDeployment``) and the object store for records. The resource lives in a
YAML file a person edits (spec, and annotations to approve a promotion); its status is written
back, atomically, to ``<state-dir>/status.json`` for ``daic status`` to show. Killing the
controller at any moment (``kill -9`` included) and starting it again resumes the same cycle:
every bit of state is in that file and in the run directories.

One controller per state directory: ``run`` holds an exclusive lock on ``<state-dir>/controller.lock``
(``flock``, released by the kernel when the process dies, so ``kill -9`` and a restart still
resume). A second controller on the same directory -- one started while the old one still runs --
stops at once with :class:`ControllerBusy` instead of reading a status the first is about to
replace and acting on it too (the kopf operator gets the same guarantee from the API server's
resourceVersion check).
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from daic.operators.actions import EmitEvent
from daic.operators.driver import PassResult, Ports, RepeatFilter, run_pass
from daic.operators.estimates import canary_source, estimate_source
from daic.operators.local_deployment import ChampionHook, FilterHook, LocalDeployment, registry_filter_hook
from daic.operators.reconcile import CycleIdentity
from daic.operators.runners.local import DEFAULT_CALLABLE, LocalRunner, write_json_atomic
from daic.operators.spec import GROUP, KIND, VERSION, CycleSpec
from daic.operators.status import CycleStatus
from daic.storage.parsed import CorruptObject, load_json_file

log = logging.getLogger(__name__)

API_VERSION = f"{GROUP}/{VERSION}"


class ControllerBusy(RuntimeError):
    """Another controller holds this state directory."""


@contextlib.contextmanager
def exclusive(state_dir: Path) -> Iterator[None]:
    """Hold ``<state_dir>/controller.lock`` for the block, or raise :class:`ControllerBusy` naming
    the holder's pid. The lock file is never removed (removing it would let a third process lock a
    new inode while the first still holds the old one)."""
    path = state_dir / "controller.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise ControllerBusy(f"another controller (pid {holder}) is running on {state_dir}; stop it first "
                                 "or use another --state-dir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


class CycleFileError(ValueError):
    """The cycle file is not an AssessmentCycle the controller can run."""


class StateFileError(CycleFileError):
    """The controller's own ``status.json`` is unreadable (truncated, hand-edited, not the shape
    ``step`` writes). A CycleFileError so ``daic controller`` prints it as one line. It is not
    rebuilt from the store: the store holds finished cycles' records, not the run in flight, the
    outbox or the breach count, so a rebuilt state could start a second run or repeat a promotion;
    a person moves the file aside (and the cycle starts afresh) or restores it."""


class ControllerMetadata(BaseModel):
    """What ``_identity`` reads back from the metadata ``step`` wrote."""

    model_config = ConfigDict(extra="allow")
    name: StrictStr | None = None
    uid: StrictStr | None = None
    namespace: StrictStr | None = None
    generation: StrictInt = Field(default=0, ge=0)
    specHash: StrictStr | None = None


class ControllerState(BaseModel):
    """``<state-dir>/status.json`` as ``step`` writes it; only metadata and status are read back."""

    model_config = ConfigDict(extra="allow")
    metadata: ControllerMetadata = Field(default_factory=ControllerMetadata)
    status: CycleStatus | None = None


@dataclass(frozen=True)
class CycleFile:
    name: str
    spec: Any
    annotations: dict[str, str]
    uid: str | None
    namespace: str | None


def read_cycle_file(path: Path) -> CycleFile:
    try:
        doc = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise CycleFileError(f"{path}: no such file") from None
    except yaml.YAMLError as exc:
        raise CycleFileError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise CycleFileError(f"{path}: expected a mapping (an AssessmentCycle resource)")
    if doc.get("kind") != KIND or doc.get("apiVersion") != API_VERSION:
        raise CycleFileError(f"{path}: expected apiVersion {API_VERSION} and kind {KIND}, "
                             f"got {doc.get('apiVersion')!r} / {doc.get('kind')!r}")
    meta = doc.get("metadata") or {}
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        raise CycleFileError(f"{path}: metadata.name is required")
    annotations = {str(k): str(v) for k, v in (meta.get("annotations") or {}).items()}
    return CycleFile(name, doc.get("spec"), annotations, meta.get("uid"), meta.get("namespace"))


class FileEvents:
    """Events as JSON lines in ``events.jsonl`` and as log lines."""

    def __init__(self, path: Path, echo: Callable[[str], None] | None = None):
        self.path, self.echo = path, echo

    def emit(self, event: EmitEvent) -> None:
        now = datetime.now(timezone.utc).isoformat()
        line = {"time": now, "type": event.type, "reason": event.reason, "message": event.message}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as fh:
            fh.write(json.dumps(line) + "\n")
        if self.echo is not None:
            self.echo(f"{now} {event.type:7s} {event.reason}: {event.message}")


class LocalController:
    def __init__(self, cycle_path: str | Path, state_dir: str | Path | None = None, store_url: str | None = None,
                 pipeline_callable: str = DEFAULT_CALLABLE, champion_hook: ChampionHook | None = None,
                 echo: Callable[[str], None] | None = None, clock: Callable[[], datetime] | None = None,
                 filter_hook: FilterHook | None = None):
        """``filter_hook``: how a filter goes in or out; default: the store's filter service record,
        which the local gateway's TRANSFORMER node follows (daic.serving.filter)."""
        self.cycle_path = Path(cycle_path)
        first = read_cycle_file(self.cycle_path)
        self.state_dir = Path(state_dir) if state_dir else Path(".daic") / "controller" / first.name
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.status_path = self.state_dir / "status.json"
        self.store_url = store_url
        # The run writes to the controller's store (the pipeline reads DAIC_STORE when no store_url).
        self.runner = LocalRunner(self.state_dir, pipeline_callable,
                                  env={"DAIC_STORE": store_url} if store_url else None)
        self.champion_hook = champion_hook
        self.filter_hook = filter_hook or registry_filter_hook(store_url)
        self.events = RepeatFilter(FileEvents(self.state_dir / "events.jsonl", echo))
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        self._outcomes: tuple = ()
        self._store = None

    # -- the resource on disk -------------------------------------------------------------------

    def load(self) -> dict[str, Any]:
        """The saved metadata and status (``{}`` before the first pass), parsed as ``step`` wrote
        them; :class:`StateFileError` naming the file when it is not (a ``[]``, ``{"metadata": 5}``
        or a truncated file was an AttributeError/JSONDecodeError at start)."""
        try:
            saved = load_json_file(self.status_path, ControllerState)
        except FileNotFoundError:
            return {}
        except CorruptObject as exc:
            raise StateFileError(
                f"{exc}; this is the controller's own state and it cannot be read, so the controller "
                f"will not act on it: move it aside (mv {self.status_path} {self.status_path}.bad) to "
                "start this cycle's state afresh, or restore it") from None
        return {"metadata": saved.metadata.model_dump(exclude_none=True),
                "status": saved.status.to_wire() if saved.status is not None else None}

    def _identity(self, cycle: CycleFile, saved: dict[str, Any]) -> tuple[CycleIdentity, dict[str, Any]]:
        meta = dict(saved.get("metadata") or {})
        if meta.get("name") not in (None, cycle.name):
            raise CycleFileError(f"{self.status_path} belongs to cycle {meta['name']!r}, not {cycle.name!r}; "
                                 "use another --state-dir")
        uid = cycle.uid or meta.get("uid") or str(uuid.uuid4())
        digest = hashlib.sha256(json.dumps(cycle.spec, sort_keys=True, default=str).encode()).hexdigest()
        generation = int(meta.get("generation") or 0)
        if meta.get("specHash") != digest:
            generation += 1
        meta.update(name=cycle.name, uid=uid, generation=generation, specHash=digest)
        if cycle.namespace:
            meta["namespace"] = cycle.namespace
        return CycleIdentity(cycle.name, uid, cycle.namespace, generation), meta

    def _ports(self, spec: CycleSpec) -> Ports:
        if self._store is None:
            from daic.storage import open_store

            self._store = open_store(self.store_url)
        return Ports(
            estimate=estimate_source(spec.estimate),
            canary=canary_source(spec.estimate),
            runner=self.runner,
            deployment=LocalDeployment(self.state_dir / "deployment.json", spec.deployment.model_name,
                                       self.champion_hook, on_filter=self.filter_hook),
            records=self._store,
        )

    # -- the loop ---------------------------------------------------------------------------------

    def step(self) -> PassResult:
        cycle = read_cycle_file(self.cycle_path)
        saved = self.load()
        ident, meta = self._identity(cycle, saved)

        def persist(status: CycleStatus) -> None:
            write_json_atomic(self.status_path, {
                "apiVersion": API_VERSION, "kind": KIND, "metadata": meta,
                "spec": cycle.spec, "status": status.to_wire(),
            })

        result = run_pass(ident, cycle.spec, saved.get("status"), cycle.annotations, self._ports,
                          self.events, persist, self.clock(), self._outcomes)
        self._outcomes = result.outcomes
        return result

    def run(self, interval: float = 5.0, passes: int | None = None, exit_after_cycles: int | None = None,
            stop: threading.Event | None = None) -> CycleStatus:
        """Reconcile every ``interval`` seconds until ``stop`` is set, ``passes`` passes ran, or
        ``exit_after_cycles`` cycles have finished (and their records are written); the state
        directory is this controller's alone meanwhile (:class:`ControllerBusy` otherwise)."""
        stop = stop or threading.Event()
        with exclusive(self.state_dir):
            return self._loop(interval, passes, exit_after_cycles, stop)

    def _loop(self, interval: float, passes: int | None, exit_after_cycles: int | None,
              stop: threading.Event) -> CycleStatus:
        done = 0
        status = CycleStatus.from_wire(self.load().get("status"))
        while not stop.is_set():
            status = self.step().status
            done += 1
            if passes is not None and done >= passes:
                break
            if (exit_after_cycles is not None and len(status.history) >= exit_after_cycles
                    and status.current is None and not status.outbox):
                break
            stop.wait(interval)
        return status
