"""kopf handlers for ``AssessmentCycle`` resources: thin I/O around the pure reconcile function.

Run on a cluster as ``kopf run --standalone -m daic.operators.main --namespace NS
--liveness http://0.0.0.0:8080/healthz`` (manifests/operator/deployment.yaml). Every handler does
the same thing: read the object fresh from the API (not kopf's cached body, which may predate the
last status write), run one pass (observe -> reconcile -> write status -> execute actions), and
keep the action outcomes for the next pass. Create, resume and update (spec or annotations, e.g.
an approval) reconcile at once; a timer reconciles every ``interval`` seconds, which is how run
states and estimates are observed. Passes for one object never overlap (a lock per object).
On delete, an optional finalizer cancels a run still in flight.

Nothing here waits without end (docs/operator.md, "Timeouts"): every Kubernetes call has a
(connect, read) timeout, every KFP call too (operators/runners/kfp_runner.py), the object store
its own deadline (daic.storage), the estimate source ``spec.estimate.timeoutSeconds``; kopf's own
API requests and watch streams are bounded in ``configure``; and each handler has a kopf timeout,
a retry limit and a backoff, so a failing handler is retried a few times, spaced out, and then left
to the timer instead of hammering the API server.
"""
from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import kopf

from daic.operators.actions import EmitEvent
from daic.operators.driver import PassResult, Ports, RepeatFilter, run_pass
from daic.operators.estimates import canary_source, estimate_source
from daic.operators.kube import API_TIMEOUT, StatusWriter, connection_info, load_client_config
from daic.operators.reconcile import CycleIdentity
from daic.operators.runners.kfp_runner import KfpRunner
from daic.operators.seldon import SeldonTarget
from daic.operators.spec import GROUP, PLURAL, VERSION, CycleSpec, InvalidSpec, parse_spec
from daic.operators.status import CycleStatus

log = logging.getLogger(__name__)

FINALIZER = "daic.dev/cancel-run"


def _env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name}={raw!r}: use true or false")


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number of seconds") from None


@dataclass(frozen=True)
class OperatorConfig:
    """Operator-wide settings (environment variables in the Deployment)."""

    interval: float = 30.0           # DAIC_OPERATOR_INTERVAL: seconds between timer passes
    peering: bool = False            # DAIC_OPERATOR_PEERING: kopf peering (off: one replica, standalone)
    cancel_on_delete: bool = True    # DAIC_OPERATOR_CANCEL_ON_DELETE: finalizer cancels a run in flight
    store_url: str | None = None     # DAIC_STORE: where records and run results live
    api_timeout: float = API_TIMEOUT[1]  # DAIC_OPERATOR_API_TIMEOUT: read timeout of each Kubernetes/KFP call
    handler_timeout: float = 300.0   # DAIC_OPERATOR_HANDLER_TIMEOUT: kopf gives up on one handler run
    handler_retries: int = 5         # DAIC_OPERATOR_HANDLER_RETRIES: attempts of a failing create/update/delete
    handler_backoff: float = 30.0    # DAIC_OPERATOR_HANDLER_BACKOFF: seconds between those attempts

    def __post_init__(self) -> None:
        for name, value in (("DAIC_OPERATOR_INTERVAL", self.interval), ("DAIC_OPERATOR_API_TIMEOUT", self.api_timeout),
                            ("DAIC_OPERATOR_HANDLER_TIMEOUT", self.handler_timeout),
                            ("DAIC_OPERATOR_HANDLER_BACKOFF", self.handler_backoff)):
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        if self.handler_retries < 1:
            raise ValueError(f"DAIC_OPERATOR_HANDLER_RETRIES must be >= 1, got {self.handler_retries}")

    @property
    def request_timeout(self) -> tuple[float, float]:
        """(connect, read) seconds for each Kubernetes and KFP request."""
        return (min(API_TIMEOUT[0], self.api_timeout), self.api_timeout)

    @classmethod
    def from_env(cls) -> "OperatorConfig":
        return cls(interval=_env_float("DAIC_OPERATOR_INTERVAL", cls.interval),
                   peering=_env_bool("DAIC_OPERATOR_PEERING", False),
                   cancel_on_delete=_env_bool("DAIC_OPERATOR_CANCEL_ON_DELETE", True),
                   store_url=os.environ.get("DAIC_STORE") or None,
                   api_timeout=_env_float("DAIC_OPERATOR_API_TIMEOUT", cls.api_timeout),
                   handler_timeout=_env_float("DAIC_OPERATOR_HANDLER_TIMEOUT", cls.handler_timeout),
                   handler_retries=int(_env_float("DAIC_OPERATOR_HANDLER_RETRIES", cls.handler_retries)),
                   handler_backoff=_env_float("DAIC_OPERATOR_HANDLER_BACKOFF", cls.handler_backoff))


class KopfEvents:
    """Kubernetes Events on the AssessmentCycle, posted by kopf's event poster."""

    def __init__(self, body: Any):
        self.body = body

    def emit(self, event: EmitEvent) -> None:
        kopf.event(self.body, type=event.type, reason=event.reason, message=event.message[:1024])


@dataclass
class _ObjectState:
    lock: threading.Lock = field(default_factory=threading.Lock)
    outcomes: tuple = ()
    events: KopfEvents | None = None
    filter: RepeatFilter | None = None


class Operator:
    """Per-process state shared by the handlers: API clients, runners, per-object memory."""

    def __init__(self, config: OperatorConfig):
        self.config = config
        self._objects: dict[tuple[str, str], _ObjectState] = {}
        self._runners: dict[tuple, KfpRunner] = {}
        self._guard = threading.Lock()
        self._api: Any = None
        self._store: Any = None
        self.passes = 0
        self.last_pass: datetime | None = None

    def api(self) -> Any:
        if self._api is None:
            import kubernetes

            load_client_config()
            self._api = kubernetes.client.CustomObjectsApi()
        return self._api

    def store(self) -> Any:
        if self._store is None:
            from daic.storage import open_store

            self._store = open_store(self.config.store_url)
        return self._store

    def _state(self, namespace: str, name: str) -> _ObjectState:
        with self._guard:
            return self._objects.setdefault((namespace, name), _ObjectState())

    def forget(self, namespace: str, name: str) -> None:
        with self._guard:
            self._objects.pop((namespace, name), None)

    def runner(self, spec: CycleSpec) -> KfpRunner:
        p = spec.pipeline
        key = (p.host, p.experiment, p.package, p.pipeline_id, p.version_id)
        with self._guard:
            if key not in self._runners:
                self._runners[key] = KfpRunner(self.store(), host=p.host, experiment=p.experiment,
                                               package=p.package, pipeline_id=p.pipeline_id,
                                               version_id=p.version_id, timeout=self.config.request_timeout)
            return self._runners[key]

    def ports(self, spec: CycleSpec, namespace: str) -> Ports:
        ref = spec.deployment
        return Ports(estimate=estimate_source(spec.estimate), canary=canary_source(spec.estimate),
                     runner=self.runner(spec),
                     deployment=SeldonTarget(self.api(), ref.namespace or namespace, ref.name, ref.predictor,
                                             timeout=self.config.request_timeout),
                     records=self.store())

    def reconcile(self, namespace: str, name: str) -> PassResult | None:
        """One pass for one object; None when the object is gone or the pass lost a write race."""
        import kubernetes

        state = self._state(namespace, name)
        with state.lock:
            try:
                obj = self.api().get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name,
                                                              _request_timeout=self.config.request_timeout)
            except kubernetes.client.ApiException as exc:
                if exc.status == 404:
                    return None
                raise
            meta = obj["metadata"]
            if meta.get("deletionTimestamp"):
                return None
            ident = CycleIdentity(name=name, uid=meta["uid"], namespace=namespace,
                                  generation=int(meta.get("generation") or 1))
            if state.events is None or state.filter is None:
                state.events = KopfEvents(obj)
                state.filter = RepeatFilter(state.events)
            state.events.body = obj  # events refer to the object as read in this pass
            writer = StatusWriter(self.api(), namespace, name, meta.get("resourceVersion"),
                                  timeout=self.config.request_timeout)
            try:
                result = run_pass(ident, obj.get("spec"), obj.get("status"), meta.get("annotations") or {},
                                  lambda spec: self.ports(spec, namespace), state.filter, writer,
                                  datetime.now(timezone.utc), state.outcomes)
            except kubernetes.client.ApiException as exc:
                if exc.status == 409:
                    log.info("%s/%s changed during the pass; the next pass starts from the new version",
                             namespace, name)
                    return None
                raise
            state.outcomes = result.outcomes
            self.passes += 1
            self.last_pass = datetime.now(timezone.utc)
            return result

    def cancel_in_flight(self, namespace: str, name: str, spec: Any, status: Any) -> list[str]:
        """Cancel the run of the cycle in flight (and any awaiting cancellation); never raises."""
        try:
            parsed = parse_spec(dict(spec or {}))
        except InvalidSpec as exc:
            log.warning("%s/%s deleted with an invalid spec; cannot reach its runs: %s", namespace, name, exc)
            return []
        st = CycleStatus.from_wire(dict(status or {}))
        names = ([st.current.run_name] if st.current else []) + list(st.pending_cancel)
        cancelled = []
        for run in dict.fromkeys(names):
            try:
                self.runner(parsed).cancel(run)
                cancelled.append(run)
            except Exception as exc:  # noqa: BLE001 - deletion must not hang on an unreachable KFP
                log.warning("could not cancel run %s of %s/%s: %s", run, namespace, name, exc)
        self.forget(namespace, name)
        return cancelled


def build_registry(config: OperatorConfig, registry: kopf.OperatorRegistry | None = None
                   ) -> tuple[kopf.OperatorRegistry, Operator]:
    """Register the handlers on ``registry`` (a fresh one by default) and return it with its state."""
    registry = registry if registry is not None else kopf.OperatorRegistry()
    op = Operator(config)
    res = dict(group=GROUP, version=VERSION, plural=PLURAL)

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.peering.standalone = not config.peering
        settings.persistence.finalizer = FINALIZER
        settings.posting.level = logging.WARNING   # our own events are explicit; kopf's only on warnings
        settings.scanning.disabled = True          # no CRD/namespace watching: fewer RBAC rights
        settings.watching.server_timeout = 300
        # kopf's own requests: bounded (its default is 5 minutes per request and no connect limit);
        # a watch stream silent past server_timeout + 60 s is dropped and re-opened.
        connect, read = config.request_timeout
        settings.networking.connect_timeout = connect
        settings.networking.request_timeout = read
        settings.watching.connect_timeout = connect
        settings.watching.client_timeout = settings.watching.server_timeout + 60
        settings.execution.max_workers = 4
        # A delete that lands while a (sync, uncancellable) timer pass runs waits for that pass to
        # end before the finalizer goes; kopf re-checks every `cancellation_polling` seconds (60 by
        # default, which would hold a deletion for a minute).
        settings.background.cancellation_polling = min(5.0, config.interval)

    @kopf.on.login(registry=registry)
    def login(settings: kopf.OperatorSettings, **_: Any) -> Any:
        return connection_info(trust_env=settings.networking.trust_env)

    def _pass(namespace: str, name: str, **_: Any) -> None:
        op.reconcile(namespace, name)

    # A failing pass is retried `handler_retries` times, `handler_backoff` s apart, each run cut off
    # after `handler_timeout` s; then kopf stops retrying that event and the timer carries on.
    bounds = dict(timeout=config.handler_timeout, retries=config.handler_retries, backoff=config.handler_backoff)
    kopf.on.create(**res, **bounds, registry=registry)(_pass)
    kopf.on.resume(**res, **bounds, registry=registry)(_pass)
    kopf.on.update(**res, **bounds, registry=registry)(_pass)
    kopf.timer(**res, interval=config.interval, sharp=False, timeout=config.handler_timeout,
               backoff=config.handler_backoff, registry=registry)(_pass)

    @kopf.on.delete(**res, optional=not config.cancel_on_delete, **bounds, registry=registry)
    def cancel_on_delete(namespace: str, name: str, spec: Any, status: Any, body: Any, **_: Any) -> None:
        cancelled = op.cancel_in_flight(namespace, name, spec, status)
        if cancelled:
            kopf.event(body, type="Normal", reason="RunCancelled",
                       message=f"cancelled {', '.join(cancelled)} on delete")

    @kopf.on.probe(id="reconcile", registry=registry)
    def probe(**_: Any) -> dict[str, Any]:
        return {"passes": op.passes, "last_pass": op.last_pass.isoformat() if op.last_pass else None}

    return registry, op
