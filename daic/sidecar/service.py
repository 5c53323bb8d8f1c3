"""The sidecar's engine: accept, log ahead, join, score, estimate, write batches, checkpoint.

Everything runs on one asyncio loop; numerical work (decoding, oracle scoring, fitting a new
reference) and store writes go to worker threads so the loop keeps accepting events.

Flow of one event::

    accept ──► write-ahead log (then HTTP 200) ──► queue ──► scorer: join by request id
        ──► score joined predictions (thread) ──► estimator window + record buffer
    every batch_rows inputs or flush_interval_s:  rotate the log segment, put a flush marker in
        the queue; when the scorer reaches it, everything before it is processed: write the
        records to the store, save a checkpoint, delete the retired segments.

Backpressure: the queue is bounded by ``max_queue`` accepted-but-unprocessed events; beyond it
``accept`` raises :class:`Backpressure` (HTTP 503, counted as dropped) rather than making Seldon's
logger wait. Nothing acknowledged is lost: on start the uncommitted log is replayed. Delivery to the
store is at least once: a crash between a batch write and its checkpoint writes those rows again
after the replay (in a later batch), and readers drop repeated ids. If processing ever fails unexpectedly, commits stop (the log keeps everything) and
liveness fails, so Kubernetes restarts the container and the replay retries.
"""
from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from daic.oracles.recalibration import RecalibrationCovariates, fit_recalibration
from daic.serving.abstain import abstained_of
from daic.serving.inputs import decode_request
from daic.serving.protocol import CLASS_NAMES, parse_response
from daic.sidecar.assess import filter_of_body
from daic.sidecar.assessment import AssessorPool, Widths, assessor_widths, self_agreement_of, width_mismatch
from daic.sidecar.checkpoint import corrupt_part, parse_checkpoint
from daic.sidecar.config import SidecarConfig
from daic.sidecar.events import LoggedEvent
from daic.sidecar.feedback import parse_feedback
from daic.sidecar.join import Joined, JoinBuffer
from daic.sidecar.metrics import SidecarMetrics
from daic.sidecar.records import OperationalRecords, write_parts
from daic.sidecar.serving import ServingVersions
from daic.sidecar.versions import RegistryVersions
from daic.sidecar.wal import CHECKPOINT, WriteAheadLog
from daic.storage import ObjectStore

logger = logging.getLogger(__name__)
#: The sidecar reads back what the model server already accepted; this bound only guards memory.
_DECODE_LIMIT = 1 << 20
_MIN_FEEDBACK_TO_RECALIBRATE = 30
#: Labelled inputs kept per version for recalibration (the most recent; bounds the checkpoint).
_FEEDBACK_KEPT = 10_000
#: Inputs of the recent predictions that feedback can link to (with ``feedback_memory``, which
#: counts predictions: bounds memory and the checkpoint, which keeps them across restarts).
_RECENT_ROWS = 50_000
#: Model versions whose held widths are kept (and checkpointed): the most recently seen.
_WIDTHS_KEPT = 64
_HELD = "the first predictions accepted for it (its oracle reference is not loaded)"


def _filter_of(pair) -> tuple[str, str] | None:
    """(filter version, gate) when the response says an input filter stood before the model, else None."""
    return filter_of_body(pair.response.body)


def _tags(body) -> Any:
    meta = body.get("meta") if isinstance(body, dict) else None
    return meta.get("tags") if isinstance(meta, dict) else None


def _covariate_rows(scores) -> np.ndarray | None:
    """``RecalibrationCovariates.as_rows`` of every input of ``scores``, or None when the scores
    do not carry (valid) window columns: those inputs' labels can only use the intercept method."""
    if scores is None:
        return None
    try:
        return RecalibrationCovariates.from_scores(scores).as_rows()
    except ValueError:
        return None


class FlushFailed(Exception):
    """A flush did not reach the store (kept and retried at the next one): ``/admin/flush``
    answers 503 with the reason instead of the "nothing to write" of a successful empty flush."""


class Backpressure(Exception):
    """The queue is full (or the service is stopping): answer 503, count the drop."""


@dataclass
class _FlushMarker:
    segment: int
    done: asyncio.Future


@dataclass
class _Scored:
    """One joined prediction after scoring (rows = inputs of the request)."""

    records: OperationalRecords
    version: str
    scored: bool  # False when the version has no usable reference
    covariates: np.ndarray | None = None  # (n, 4) rows for covariate recalibration, see _FeedbackStats
    reason: str | None = None  # why not scored (GET /estimate's unscored_reason)


@dataclass
class _ScoredBatch:
    """What one scoring call produced: the predictions in arrival order, and per model version
    the scores of all its inputs in that order (one estimator update per version, not per
    request: the window's update copies its arrays, so per-request updates cost O(window))."""

    items: list[_Scored]
    by_version: dict[str, Any]  # version -> [(PerInputScores, (filter, gate) of the wrapped assessor or None)]
    unreadable: int
    unknown: dict[str, int] = field(default_factory=dict)  # version not in the registry -> predictions
    mismatched: dict[str, int] = field(default_factory=dict)  # field of the wrong width -> predictions


@dataclass
class _FeedbackStats:
    """Labels received for one model version; per labelled input its online P(correct), whether
    the model was right, and its recalibration covariates (agreement, confidence, drift,
    predicted class; empty when the scores lacked them)."""

    n: int = 0
    correct: int = 0
    p_correct: list[float] = field(default_factory=list)
    is_correct: list[bool] = field(default_factory=list)
    covariates: list[list[float]] = field(default_factory=list)


class SidecarService:
    def __init__(self, config: SidecarConfig, store: ObjectStore, assessors: AssessorPool,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.store = store
        self.assessors = assessors
        self.clock = clock
        self.wal = WriteAheadLog(config.wal_dir)
        self.plan = config.join_plan()
        self._events_per_prediction = sum(self.plan.needed().values())
        self.registry_versions = RegistryVersions(store, config.model_name)
        self.join = JoinBuffer(config.join_timeout_s, config.max_pending, config.remember_ids, self.plan,
                               max_pending_bytes=config.max_pending_bytes)
        self.metrics = SidecarMetrics(config.deployment, self.estimates)
        self.estimators: dict[str, Any] = {}
        self.feedback: dict[str, _FeedbackStats] = {}
        self.champion: str | None = None
        self.failed: str | None = None
        self.ready = False
        self.accepting = False
        self.last_batch_key: str | None = None
        self._serving_version: str | None = None
        self.serving = ServingVersions(idle_s=config.canary_idle_s)  # the versions whose estimates are exported
        # version -> inputs recorded unscored since its last scored one, and the last reason (GET /estimate)
        self._unscored: OrderedDict[str, tuple[int, str]] = OrderedDict()
        self._recent: OrderedDict[str, tuple[str, np.ndarray, np.ndarray, np.ndarray | None]] = OrderedDict()
        self._recent_rows = 0
        self._buffer: list[OperationalRecords] = []
        self._feedback_rows: list[dict[str, np.ndarray]] = []
        self._reward_rows: list[dict[str, np.ndarray]] = []
        self._queue: asyncio.Queue = asyncio.Queue()
        self._queued = 0
        self._queued_bytes = 0
        self._appended = 0
        self._buffered_rows = 0
        self._last_rotate = clock()
        self._last_champion_check = -math.inf
        self._markers_outstanding = 0
        self._to_score: list[Joined] = []
        self._feedback_waiting: list[LoggedEvent] = []
        self._score_due = 0.0
        self._tasks: list[asyncio.Task] = []
        self._recovered: list[dict[str, Any]] = []
        self._unknown_nodes: set[str] = set()
        self._activity = asyncio.Event()
        # version -> the widths its predictions must have (see _expected_widths)
        self._widths: OrderedDict[str, Widths] = OrderedDict()

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        """:meth:`open` then :meth:`warm_up`."""
        await self.open()
        await self.warm_up()

    async def open(self) -> None:
        """Recover the write-ahead log and start taking events (written ahead, queued): fast, so
        the ingest endpoint is up at once after a restart, before the reference is loaded."""
        recovery = await asyncio.to_thread(self.wal.recover)
        if recovery.checkpoint:
            self._restore(recovery.checkpoint)
        if recovery.torn_lines:
            logger.warning("write-ahead log: skipped %d torn line(s) (never acknowledged)", recovery.torn_lines)
        self._recovered = recovery.entries
        self.accepting = True

    async def warm_up(self) -> None:
        """Load the champion's reference, replay what the log held, start processing; then ready.
        Events taken meanwhile wait in the queue behind the replay."""
        await self.check_champion()
        events = []
        recovered, self._recovered = self._recovered, []
        for entry in recovered:
            try:
                events.append(LoggedEvent.from_wal(entry))
            except (KeyError, ValueError, TypeError):
                self.metrics.drop("unreadable")
        if events:
            logger.info("replaying %d event(s) from the write-ahead log", len(events))
            self.metrics.replayed.labels(self.config.deployment).inc(len(events))
            await self._process(events)
        self._tasks = [asyncio.create_task(coro, name=name) for name, coro in (
            ("scorer", self._scorer()), ("fsync", self._syncer()), ("maintenance", self._maintenance()))]
        self.ready = True
        if events or self._buffer:
            self.request_flush()

    async def drain(self, quiet_s: float, max_s: float) -> None:
        """Not ready, still taking events, until none came for ``quiet_s`` (at most ``max_s``): on
        SIGTERM the executor in the same pod is stopping too and may still post its queue."""
        self.ready = False
        loop = asyncio.get_running_loop()
        end = loop.time() + max_s
        while (remaining := end - loop.time()) > 0:
            self._activity.clear()
            try:
                await asyncio.wait_for(self._activity.wait(), min(quiet_s, remaining))
            except asyncio.TimeoutError:
                return

    async def stop(self, timeout_s: float = 30.0) -> None:
        """Stop accepting, process what was accepted, write it, checkpoint, close the log."""
        self.accepting = False
        self.ready = False
        if self.failed is None and self._tasks:
            try:
                await asyncio.wait_for(self.request_flush(), timeout_s)
            except asyncio.TimeoutError:
                logger.error("shutdown flush did not finish in %.0fs; the write-ahead log keeps the events",
                             timeout_s)
            except FlushFailed as exc:
                logger.error("shutdown flush failed (%s); the write-ahead log keeps the events", exc)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        self.wal.close()

    # -- accepting ----------------------------------------------------------------------------
    def accept(self, event: LoggedEvent) -> None:
        """Log ``event`` ahead and queue it; returns only once it is durable against a crash of
        this process. Raises Backpressure when full or stopping (the caller answers 503)."""
        if not self.accepting:
            self.metrics.drop("backpressure")
            raise Backpressure("the sidecar is not accepting events (starting or stopping)")
        if self._queued >= self.config.max_queue or \
                self._queued_bytes + len(event.raw) > self.config.max_queue_bytes:
            self.metrics.drop("backpressure")
            raise Backpressure(f"{self._queued} events ({self._queued_bytes} bytes) are waiting to be scored "
                               f"(max_queue {self.config.max_queue}, max_queue_bytes {self.config.max_queue_bytes})")
        try:
            self.wal.append(event.to_wal())
        except OSError as exc:
            self.metrics.drop("unwritable")
            raise Backpressure(f"cannot write the write-ahead log in {self.wal.directory}: {exc}") from None
        self._appended += 1
        self._queued += 1
        self._queued_bytes += len(event.raw)
        self._queue.put_nowait(event)
        self._activity.set()
        self.metrics.received.labels(self.config.deployment, event.kind).inc()
        self.metrics.queue_depth.labels(self.config.deployment).set(self._queued)

    def reject_invalid(self) -> None:
        self.metrics.drop("invalid")

    def request_flush(self) -> asyncio.Future:
        """Rotate the log and queue a marker; the future resolves (to the batch key or None)
        once everything accepted before it is in the store and checkpointed, or raises
        :class:`FlushFailed` when the store write failed."""
        segment = self.wal.rotate()
        done = asyncio.get_running_loop().create_future()
        # Automatic flushes are not awaited: mark their outcome retrieved (the failure is logged).
        done.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._queue.put_nowait(_FlushMarker(segment, done))
        self._markers_outstanding += 1
        self._appended = 0
        self._last_rotate = self.clock()
        return done

    # -- background tasks ---------------------------------------------------------------------
    async def _scorer(self) -> None:
        """Take events off the queue, join them at once, score joined predictions in batches:
        when ``score_batch`` are waiting, ``score_delay_s`` after the first one, or at a flush
        marker. Oracle scoring has a fixed cost per call (input checks, several scikit-learn
        models), so scoring one prediction at a time would cost the sidecar several times more
        CPU per request than scoring a few dozen together."""
        loop = asyncio.get_running_loop()
        while True:
            if self._to_score or self._feedback_waiting:
                try:
                    item = await asyncio.wait_for(self._queue.get(), max(0.0, self._score_due - loop.time()))
                except asyncio.TimeoutError:
                    await self._guarded(self._score_pending())
                    continue
            else:
                item = await self._queue.get()
            batch: list[LoggedEvent] = []
            marker = None
            while True:
                if isinstance(item, _FlushMarker):
                    marker = item
                    break
                batch.append(item)
                if len(batch) >= self.config.score_batch or self._queue.empty():
                    break
                item = self._queue.get_nowait()
            if batch:
                self._queued -= len(batch)
                self._queued_bytes -= sum(len(e.raw) for e in batch)
                self.metrics.queue_depth.labels(self.config.deployment).set(self._queued)
                was_idle = not (self._to_score or self._feedback_waiting)
                await self._guarded(self._ingest(batch))
                if was_idle and (self._to_score or self._feedback_waiting):
                    self._score_due = loop.time() + self.config.score_delay_s
            if (self._to_score or self._feedback_waiting) and (
                    marker is not None or len(self._to_score) >= self.config.score_batch
                    or loop.time() >= self._score_due):
                await self._guarded(self._score_pending())
            if marker is not None:
                self._markers_outstanding -= 1
                await self._commit(marker)
            elif self._buffered_rows >= self.config.batch_rows and not self._markers_outstanding:
                self.request_flush()

    async def _guarded(self, step) -> None:
        if self.failed is not None:
            step.close()
            return
        try:
            await step
        except Exception as exc:  # noqa: BLE001 - see module docstring
            self.failed = f"{type(exc).__name__}: {exc}"
            logger.exception("processing failed; commits stop, the log keeps every event")

    async def _syncer(self) -> None:
        while True:
            await asyncio.sleep(self.config.fsync_interval_s)
            fd = self.wal.sync_handle()
            if fd is not None:
                await asyncio.to_thread(_fsync_and_close, fd)

    async def _maintenance(self) -> None:
        while True:
            await asyncio.sleep(min(0.5, self.config.flush_interval_s / 2))
            now = self.clock()
            for group in self.join.expire(now):
                self._count_gap(group)
            self.metrics.pending_joins.labels(self.config.deployment).set(len(self.join))
            if self._appended and now - self._last_rotate >= self.config.flush_interval_s:
                self.request_flush()
            if now - self._last_champion_check >= self.config.reference_check_s:
                try:
                    await self.check_champion(wait=False)
                except Exception as exc:  # noqa: BLE001 - keep scoring with what is loaded
                    logger.warning("champion check failed: %s", exc)

    async def check_champion(self, wait: bool = True) -> None:
        """Follow the registry's champion: load its assessor before its traffic arrives. With
        ``wait=False`` (the periodic check) the load runs in the background and scoring goes on
        with what is loaded; the first champion is always waited for (the sidecar is not ready
        before)."""
        self._last_champion_check = self.clock()
        champion = await asyncio.to_thread(self.assessors.champion)
        if champion and champion != self.champion:
            # The pointer names it, so it is in the registry: its first predictions must not wait for
            # the next listing (a version registered within refresh_s of the last one was refused).
            self.registry_versions.add(champion)
            try:
                if wait or self.champion is None:
                    await asyncio.to_thread(self.assessors.get, champion)
                else:
                    self.assessors.prepare(champion)
            except Exception as exc:  # noqa: BLE001 - scored as unscored until a reference exists
                logger.warning("champion %s has no usable oracle reference: %s", champion, exc)
            logger.info("champion is now %s (was %s)", champion, self.champion)
            self.champion = champion
            self.metrics.init_version(champion)
        now = self.clock()
        self._stop_serving((self.serving.set_champion(champion, now) if champion else []) + self.serving.expire(now))

    def _stop_serving(self, versions: list[str]) -> None:
        """Versions this sidecar no longer serves (daic.sidecar.serving): their windows go, and
        with them their series in /metrics and their place in the checkpoint."""
        for version in versions:
            self.estimators.pop(version, None)
            logger.info("model version %s no longer serves here; its estimate is dropped", version)

    # -- processing ---------------------------------------------------------------------------
    async def _process(self, events: list[LoggedEvent]) -> None:
        """Join and score ``events`` now (start-up replay)."""
        await self._ingest(events)
        await self._score_pending()

    def _count_gap(self, group, reason: str | None = None) -> None:
        """A request id given up on: its events are dropped (``unanswered`` when the graph's input
        came, ``orphan_response`` when only responses did, or ``reason``), and the prediction counts
        once in the gap it shows: a request without a response, or a response without a request."""
        self.metrics.drop(reason or ("unanswered" if group.has_request else "orphan_response"), len(group.events))
        self.metrics.gap.labels(self.config.deployment, "request_without_response" if group.has_request
                                else "response_without_request").inc()

    async def _ingest(self, events: list[LoggedEvent]) -> None:
        """Join the events of each prediction (daic.sidecar.join); joined predictions and feedback
        wait for scoring. Events of intermediate graph nodes are counted as skipped."""
        dep = self.config.deployment
        for event in events:
            if event.kind == "feedback":
                if event.model_id and event.model_id != self.plan.feedback:
                    self.metrics.skipped.labels(dep).inc()  # the same feedback, logged by another node
                else:
                    self._feedback_waiting.append(event)
                continue
            outcome = self.join.add(event)
            if outcome.status == "skipped" and event.model_id not in self.plan.nodes \
                    and event.model_id not in self._unknown_nodes and len(self._unknown_nodes) < 16:
                self._unknown_nodes.add(event.model_id)
                logger.warning("events from graph node %r, which the sidecar's graph does not have (nodes: %s): "
                               "counted as skipped; is --graph the deployment's graph?", event.model_id[:80],
                               ", ".join(self.plan.nodes))
            for group in outcome.evicted:
                self._count_gap(group, "overflow")
            if outcome.status == "duplicate":
                self.metrics.duplicate.labels(dep).inc()
            elif outcome.status == "skipped":
                self.metrics.skipped.labels(dep).inc()
            elif outcome.status == "joined":
                self._to_score.append(outcome.joined)
                self.metrics.joined.labels(dep).inc()
        self.metrics.pending_joins.labels(dep).set(len(self.join))

    async def _score_pending(self) -> None:
        """Score what is waiting (in a worker thread), then apply waiting feedback, which may
        name predictions scored just now."""
        joined, self._to_score = self._to_score, []
        if joined:
            batch = await asyncio.to_thread(self._score, joined)
            if batch.unreadable:
                self.metrics.drop("unreadable", self._events_per_prediction * batch.unreadable)
            for name, count in batch.mismatched.items():
                self.metrics.width_mismatch.labels(self.config.deployment, name).inc(count)
            for version, count in batch.unknown.items():
                logger.warning("%d prediction(s) tagged with model version %r, which is not in the registry of %s: "
                               "refused (not scored, recorded or exported)", count, version[:80],
                               self.config.model_name)
                self.metrics.drop("unknown_version", self._events_per_prediction * count)
            for item in batch.items:
                self._absorb(item)
            for version, groups in batch.by_version.items():
                for scores, behind in groups:
                    try:
                        self._estimate(version, scores, behind)
                    except Exception:  # noqa: BLE001 - the records are kept; one batch must not stop the service
                        logger.exception("model version %s: updating its estimate failed; its %d input(s) are "
                                         "recorded but not in the estimate", version, len(scores.p_correct))
        feedback, self._feedback_waiting = self._feedback_waiting, []
        for event in feedback:
            self._apply_feedback(event)

    def _score(self, joined: list[Joined]) -> _ScoredBatch:
        """Decode, refuse what is unreadable (a malformed body, an unknown version, widths that are
        not its version's), group by model version, filter and widths, score each group in one
        call (worker thread). A group that fails anyway is recorded unscored, input by input:
        nothing here may raise, or one bad batch would stop the service (and its replay would
        stop it again)."""
        decoded = []
        unreadable = 0
        for pair in joined:
            try:
                images = decode_request(pair.request.body, max_batch=_DECODE_LIMIT).images
                outputs = parse_response(pair.response.body)
                if outputs.probs.shape[0] != images.shape[0]:
                    raise ValueError(f"{images.shape[0]} inputs but {outputs.probs.shape[0]} outputs")
            except ValueError as exc:
                logger.warning("request %s: unreadable prediction: %s", pair.request_id, exc)
                unreadable += 1
                continue
            decoded.append((pair, images, outputs))
        known = []
        unknown: dict[str, int] = {}
        for item in decoded:
            version = item[2].version
            if not self.registry_versions.known(version):
                unknown[version] = unknown.get(version, 0) + 1
                continue
            known.append(item)
        admitted, mismatched = self._check_widths(known)
        unreadable += sum(mismatched.values())
        groups: dict[tuple, list] = {}
        for item in admitted:
            key = (item[2].version, _filter_of(item[0]), Widths.of(item[2]), item[2].self_agreement_views)
            groups.setdefault(key, []).append(item)
        results = []
        scored_by_version: dict[str, list] = {}
        for (version, behind, _widths, _views), items in groups.items():
            try:
                scored, entry = self._score_group(version, behind, items)
            except Exception as exc:  # noqa: BLE001 - never lose what was accepted: record the inputs unscored
                logger.exception("model version %s: scoring %d prediction(s) failed; recording them unscored",
                                 version, len(items))
                scored, entry = [], None
                reason = f"scoring failed: {type(exc).__name__}: {exc}"
                for pair, images, outputs in items:
                    try:
                        scored.append(_Scored(self._records(pair, images, outputs, None, None), version, False,
                                              reason=reason))
                    except Exception as exc:  # noqa: BLE001
                        logger.warning("request %s: unreadable prediction: %s", pair.request_id, exc)
                        unreadable += 1
            results.extend(scored)
            if entry is not None:
                scored_by_version.setdefault(version, []).append(entry)
        return _ScoredBatch(results, scored_by_version, unreadable, unknown, mismatched)

    def _score_group(self, version: str, behind: tuple[str, str] | None, items: list) -> tuple[list, tuple | None]:
        """Score predictions of one version, filter and widths in one call: (their _Scored, in
        order; (scores, the wrapped assessor's (filter, gate) or None) for the estimator, or None
        when they could not be scored)."""
        sizes = [it[1].shape[0] for it in items]
        probs = np.concatenate([it[2].probs for it in items])
        emb = np.concatenate([it[2].embeddings for it in items])
        shadow = np.concatenate([it[2].shadow_probs for it in items])
        wrapped = None
        try:
            # Never waits on a load or fit: a version not ready yet is scored with a stand-in
            # (daic.sidecar.assessment) while its own assessor loads in the background.
            assessor, _own = self.assessors.for_scoring(version)
            wrapped = self.assessors.wrapped_for_scoring(*behind) if behind is not None else None
            if wrapped is not None:  # the model behind the input filter (issue 21)
                assessor = wrapped
            if assessor is None:
                raise LookupError("its assessor is still loading and there is none to stand in")
            scores = assessor.score(probs, emb, shadow, self_agreement_of(assessor, [it[2] for it in items]))
        except Exception as exc:  # noqa: BLE001 - record the inputs anyway, unscored
            logger.warning("model version %s: cannot score (%s); recording unscored", version, exc)
            scores, reason = None, str(exc)
        else:
            reason = None
        covariates = _covariate_rows(scores)
        results = []
        start = 0
        for (pair, images, outputs), n in zip(items, sizes):
            rows = slice(start, start + n)
            p_correct, drift = (None, None) if scores is None else (scores.p_correct[rows], scores.drift[rows])
            results.append(_Scored(self._records(pair, images, outputs, p_correct, drift), version,
                                   scores is not None, None if covariates is None else covariates[rows], reason))
            start += n
        entry = None if scores is None else (scores, behind if wrapped is not None else None)
        return results, entry

    def _check_widths(self, items: list) -> tuple[list, dict[str, int]]:
        """The ``(pair, images, outputs)`` of ``items`` whose widths are their version's, and the
        refused ones counted by field (``probs``, ``embeddings``, ``shadow_probs``), each logged
        once a batch with the field, the expected and the actual width. A refused prediction is
        unreadable: never recorded, scored or estimated (its events count as dropped), so no batch
        the sidecar concatenates, scores or writes ever mixes widths within a version."""
        by_version: dict[str, list] = {}
        for item in items:
            by_version.setdefault(item[2].version, []).append(item)
        refused: set[int] = set()
        counts: dict[str, int] = {}
        reasons: dict[str, list[str]] = {}
        for version, group in by_version.items():
            expected = self._expected_widths(version, group)
            for item in group:
                refusal = self._width_refusal(version, item[2], expected)
                if refusal is not None:
                    name, message = refusal
                    refused.add(id(item))
                    counts[name] = counts.get(name, 0) + 1
                    reasons.setdefault(message, []).append(item[0].request_id)
        for message, request_ids in reasons.items():
            logger.warning("%d prediction(s) refused as unreadable: %s (request ids %s)", len(request_ids),
                           message, ", ".join(repr(r[:80]) for r in request_ids[:5]))
        return [item for item in items if id(item) not in refused], counts

    def _width_refusal(self, version: str, outputs, expected: tuple[Widths, str]) -> tuple[str, str] | None:
        """(field, message) when ``outputs`` do not have the ``expected`` (widths, their source)."""
        widths, source = expected
        return width_mismatch(outputs, widths, version, source)

    def _expected_widths(self, version: str, group: list) -> tuple[Widths, str]:
        """The widths ``version``'s predictions must have, and where they come from.

        Its oracle reference decides whenever its own assessor is loaded (for the champion always:
        the sidecar is not ready before it is): those are the only widths its oracles can score,
        however many predictions disagree. Until then (a canary's assessor still loading, or a
        version without a usable reference, whose predictions are recorded unscored) the widths
        held for the version decide; with none held yet, the widths of most of ``group`` (its
        predictions in this batch; a tie goes to the first to arrive) become the held ones. Held
        widths are checkpointed, so the records of one version keep one width across restarts,
        and are replaced by the reference's once its assessor is loaded. Holding beats refusing
        everything (the version's traffic would be lost) and beats taking every width (one
        mismatched prediction would again reach the batch that is concatenated and written).
        Only the loopback ingest port takes events, and only versions in the registry get here,
        so the held widths are bounded, and one wrong hold costs at most that version's unscored
        records until its reference loads."""
        own = self.assessors.ready(version)
        reference = assessor_widths(own) if own is not None else None
        if reference is not None:
            held = self._widths.get(version)
            if held is not None and held != reference:
                logger.warning("model version %s: its oracle reference's widths %s replace the widths held from its "
                               "first predictions %s", version, reference, held)
            self._hold(version, reference)
            return reference, "its oracle reference"
        held = self._widths.get(version)
        if held is None:
            counts = Counter(Widths.of(item[2]) for item in group)
            held = max(counts, key=counts.__getitem__)  # the first of the most common
            logger.info("model version %s: no oracle reference loaded; its predictions must have the widths of "
                        "the first accepted: %s", version, held)
        self._hold(version, held)
        return held, _HELD

    def _hold(self, version: str, widths: Widths) -> None:
        self._widths[version] = widths
        self._widths.move_to_end(version)
        while len(self._widths) > _WIDTHS_KEPT:
            self._widths.popitem(last=False)

    @staticmethod
    def _records(pair: Joined, images: np.ndarray, outputs, p_correct: np.ndarray | None,
                 drift: np.ndarray | None) -> OperationalRecords:
        n = images.shape[0]
        nan = np.full(n, np.nan)
        return OperationalRecords(
            ids=[f"{pair.request_id}:{i}" for i in range(n)],
            request_ids=[pair.request_id] * n,
            times=np.full(n, pair.time),
            inputs=images,
            predictions=outputs.probs.argmax(axis=1),
            probs=outputs.probs,
            embeddings=outputs.embeddings,
            shadow_probs=outputs.shadow_probs,
            p_correct=nan if p_correct is None else p_correct,
            drift=nan if drift is None else drift,
            model_version=[outputs.version] * n,
            abstained=abstained_of(_tags(pair.response.body), n),  # issue 21: queued for labeling
        )

    def _absorb(self, item: _Scored) -> None:
        dep = self.config.deployment
        n = len(item.records)
        self._buffer.append(item.records)
        self._buffered_rows += n
        rid = str(item.records.request_ids[0])
        self._remember(rid, (item.version, item.records.predictions, item.records.p_correct, item.covariates))
        self._serving_version = item.version
        if item.scored:
            # Only a scored input moves the estimate's timestamp: inputs recorded unscored leave the
            # window as it was, and an estimate that looked fresh while frozen would hide it.
            self.serving.seen(item.version, float(np.max(item.records.times)))
            self._unscored.pop(item.version, None)
            self.metrics.scored.labels(dep, item.version).inc(n)
        else:
            count, _ = self._unscored.pop(item.version, (0, ""))
            self._unscored[item.version] = (count + n, _bounded_reason(item.reason))
            while len(self._unscored) > _UNSCORED_VERSIONS:
                self._unscored.popitem(last=False)
            self.metrics.unscored.labels(dep, item.version).inc(n)

    def _remember(self, rid: str, entry: tuple) -> None:
        """Keep a scored prediction for feedback to link to (bounded by predictions and inputs)."""
        old = self._recent.pop(rid, None)
        if old is not None:
            self._recent_rows -= len(old[1])
        self._recent[rid] = entry
        self._recent_rows += len(entry[1])
        while self._recent and (len(self._recent) > self.config.feedback_memory
                                or self._recent_rows > _RECENT_ROWS):
            _, dropped = self._recent.popitem(last=False)
            self._recent_rows -= len(dropped[1])

    def _estimate(self, version: str, scores, behind: tuple[str, str] | None = None) -> None:
        # Built with the version's own assessor once ready (a stand-in's until then; the window is
        # kept), or with the wrapped model's while its scores come from it (behind the input filter).
        current = self.estimators.get(version)
        if behind is not None:
            estimator = self.assessors.estimator_behind(version, current, behind)
        else:
            estimator = self.assessors.estimator_for(version, current)
        self.estimators[version] = estimator
        # A count-limited window: arrival order is the order (no timestamps, so clock steps
        # between the two halves of a join can never reorder it).
        estimator.update(scores)

    def _apply_feedback(self, event: LoggedEvent) -> None:
        """Link feedback to the prediction stored under its request id (the Seldon-Puid the client
        sent with it); the predicted classes and the version come from that prediction. Labels of
        a linked prediction count and recalibrate; reward-only feedback is recorded as a reward;
        feedback naming no stored prediction is recorded and counted as unlinked, never silently."""
        try:
            truth = parse_feedback(event.body, event.request_id)
        except ValueError as exc:
            logger.warning("feedback %s rejected after acceptance: %s", event.event_id, exc)
            self.metrics.drop("unreadable")
            return
        dep = self.config.deployment
        known = self._recent.get(truth.request_id)
        if known is None:
            self.metrics.feedback_received.labels(dep, "unlinked").inc()
            logger.warning("feedback %s names request id %r, which is not a prediction this sidecar stored "
                           "(no Seldon-Puid header on the feedback call, or an old or unknown id)",
                           event.event_id, truth.request_id)
        version, stored_predictions, stored_p, stored_rows = known if known is not None else ("", None, None, None)
        n = truth.labels.size if truth.labels is not None else (len(stored_predictions) if known else 1)
        predictions = stored_predictions if stored_predictions is not None and len(stored_predictions) == n else None
        p_correct = stored_p if stored_p is not None and len(stored_p) == n else None
        common = {
            "ids": np.array([f"{truth.request_id}:{i}" for i in range(n)]),
            "request_ids": np.array([truth.request_id] * n),
            "times": np.full(n, event.time),
            "predictions": np.asarray(predictions if predictions is not None else np.full(n, -1), dtype=np.int64),
            "p_correct": np.asarray(p_correct if p_correct is not None else np.full(n, np.nan), dtype=np.float32),
            "model_version": np.array([version] * n),
            "reward": np.full(n, np.nan if truth.reward is None else truth.reward),
        }
        if truth.labels is None:
            if known is not None:
                self.metrics.feedback_received.labels(dep, "reward").inc()
            self._reward_rows.append(common)
            return
        if known is not None:
            self.metrics.feedback_received.labels(dep, "labels").inc()
        self._feedback_rows.append({**common, "labels": truth.labels})
        if predictions is None:
            return
        correct = predictions == truth.labels
        stats = self.feedback.setdefault(version, _FeedbackStats())
        stats.n += n
        stats.correct += int(correct.sum())
        if p_correct is not None and np.all(np.isfinite(p_correct)):
            if stored_rows is None or len(stats.covariates) != len(stats.p_correct):
                stats.covariates = []  # one input without covariates: the intercept method for all
            else:
                stats.covariates.extend(stored_rows.tolist())
            stats.p_correct.extend(float(p) for p in p_correct)
            stats.is_correct.extend(bool(c) for c in correct)
            del stats.p_correct[:-_FEEDBACK_KEPT], stats.is_correct[:-_FEEDBACK_KEPT]
            del stats.covariates[:-_FEEDBACK_KEPT]
            self._recalibrate(version, stats)

    def _recalibrate(self, version: str, stats: _FeedbackStats) -> None:
        """Offline corrects online: labels recalibrate the version's estimator once enough of them
        have arrived (daic.oracles.recalibration). The covariate method when every labelled input
        came with its covariates (it refits P(correct) on them with a prior at "no change"; its
        unpenalised intercept makes it a difference estimator), else the intercept correction."""
        estimator = self.estimators.get(version)
        if estimator is None or len(stats.p_correct) < _MIN_FEEDBACK_TO_RECALIBRATE:
            return
        p, y = np.array(stats.p_correct), np.array(stats.is_correct)
        try:
            if len(stats.covariates) == len(p):
                covariates = RecalibrationCovariates.from_rows(stats.covariates)
                try:
                    estimator.recalibrate(fit_recalibration(p, y, method="covariate", covariates=covariates,
                                                            n_classes=len(CLASS_NAMES)))
                    return
                except ValueError as exc:
                    logger.warning("covariate recalibration failed for %s (%s); using the intercept method",
                                   version, exc)
            estimator.recalibrate(fit_recalibration(p, y))
        except ValueError as exc:
            logger.warning("recalibration from feedback failed for %s: %s", version, exc)

    # -- commit -------------------------------------------------------------------------------
    async def _commit(self, marker: _FlushMarker) -> None:
        if self.failed is not None:
            marker.done.set_exception(FlushFailed(f"processing failed ({self.failed}); the write-ahead log keeps "
                                                  "every event for the restart"))
            return
        key = None
        try:
            if self._buffer:
                # one batch per widths: model versions of different architectures share a flush
                keys = await asyncio.to_thread(write_parts, self.store, self.config.deployment, self._buffer,
                                               marker.segment)
                key = keys[0]
                self.metrics.records_written.labels(self.config.deployment).inc(sum(map(len, self._buffer)))
                self._buffer = []
                self._buffered_rows = 0
                self.last_batch_key = key
            for attr, prefix in (("_feedback_rows", "feedback"), ("_reward_rows", "reward")):
                rows = getattr(self, attr)
                if rows:
                    arrays = {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}
                    fkey = key_for_feedback(self.config.deployment, float(arrays["times"].min()), marker.segment,
                                            prefix)
                    await asyncio.to_thread(self.store.put_arrays, fkey, **arrays)
                    setattr(self, attr, [])
        except Exception as exc:  # noqa: BLE001 - keep everything, retry at the next marker
            self.metrics.store_failures.labels(self.config.deployment).inc()
            logger.error("writing operational records failed (kept, retried at the next flush): %s", exc)
            marker.done.set_exception(FlushFailed(f"writing to the store failed: {type(exc).__name__}: {exc}; "
                                                  "the records are kept and retried at the next flush"))
            return
        checkpoint = self._checkpoint()
        await asyncio.to_thread(self.wal.commit, marker.segment, checkpoint)
        marker.done.set_result(key)

    def _checkpoint(self) -> dict[str, Any]:
        return {
            "pending": [e.to_wal() for e in self.join.pending_events()],
            "completed": self.join.completed_ids(),
            "estimators": {v: est.to_state() for v, est in self.estimators.items()},
            "serving": self.serving.to_state(),
            # the predictions feedback can still link to (a restart must not unlink them)
            "recent": [[rid, version, predictions.tolist(),
                        [float(p) if np.isfinite(p) else None for p in p_correct],
                        None if covariates is None else np.asarray(covariates).tolist()]
                       for rid, (version, predictions, p_correct, covariates) in self._recent.items()],
            "feedback": {v: {"n": s.n, "correct": s.correct, "p_correct": s.p_correct, "is_correct": s.is_correct,
                             "covariates": s.covariates}
                         for v, s in self.feedback.items()},
            "widths": {v: [w.n_classes, w.embedding_dim] for v, w in self._widths.items()},
        }

    def _restore(self, checkpoint: dict[str, Any]) -> None:
        """Resume from the log's checkpoint, parsed as a whole first (daic.sidecar.checkpoint): one
        of the wrong shape is refused naming the file and the field, and nothing is restored,
        rather than a KeyError/AttributeError at start or accepted events dropped unasked."""
        path = self.wal.directory / CHECKPOINT
        cp = parse_checkpoint(path, checkpoint)
        pending = []
        for i, entry in enumerate(cp.pending):
            try:
                pending.append(LoggedEvent.from_wal(entry.model_dump()))
            except ValueError as exc:  # the body is not JSON: the sidecar wrote only bodies it had parsed
                raise corrupt_part(path, f"pending.{i}.b", exc) from None
        estimators = {}
        for version, state in cp.estimators.items():
            try:
                estimators[version] = self.assessors.estimator_from_state(state, version)
            except (ValueError, OverflowError) as exc:  # OnlineEstimator.from_state's refusal of a malformed
                # window (an inf where an int column belongs escapes it as OverflowError)
                raise corrupt_part(path, f"estimators.{version}", exc) from None
        self.join.restore(pending, list(cp.completed))
        self.estimators.update(estimators)
        self.serving = ServingVersions.from_state(None if cp.serving is None else cp.serving.model_dump(),
                                                  self.config.canary_idle_s, list(self.estimators), self.clock())
        for version, s in cp.feedback.items():
            self.feedback[version] = _FeedbackStats(
                s.n, s.correct, [np.nan if p is None else p for p in s.p_correct], list(s.is_correct),
                [[np.nan if c is None else c for c in row] for row in s.covariates])
        for version, (n_classes, embedding_dim) in cp.widths.items():
            self._hold(version, Widths(n_classes, embedding_dim))
        for rid, version, predictions, p_correct, covariates in cp.recent:
            self._remember(rid, (version, np.asarray(predictions, dtype=np.int64),
                                 np.asarray([np.nan if p is None else p for p in p_correct], dtype=np.float64),
                                 None if covariates is None else np.asarray(
                                     [[np.nan if c is None else c for c in row] for row in covariates],
                                     dtype=np.float64)))

    # -- reading ------------------------------------------------------------------------------
    def estimates(self) -> dict[str, dict[str, Any]]:
        """{model_version: estimate fields + feedback} of the versions serving here now
        (daic.sidecar.serving), for /metrics and /estimate. Besides the window's fields: ``role``
        (champion or canary), ``timestamp`` (the time of the version's newest input, Unix seconds:
        the same window gives the same timestamp) and ``reference_accuracy``."""
        out: dict[str, dict[str, Any]] = {}
        loaded = set(self.assessors.loaded_versions())
        for version in self.serving.serving():
            estimator = self.estimators.get(version)
            if estimator is None:
                continue
            fields = estimator.estimate().to_dict()
            fields["role"] = self.serving.role(version)
            fields["timestamp"] = self.serving.newest[version]
            fields["reference_accuracy"] = (float(self.assessors.get(version).reference_accuracy)
                                            if version in loaded else None)
            stats = self.feedback.get(version)
            if stats is not None:
                fields["feedback_n"] = stats.n
                fields["feedback_accuracy"] = stats.correct / stats.n if stats.n else None
            out[version] = fields
        return out

    def status(self) -> dict[str, Any]:
        """The ``GET /estimate`` body. Top level: the estimate of the version this sidecar serves
        (the champion's when it serves here, else the one with the newest input: a canary
        predictor's sidecar), flat, as the operator reads it; ``timestamp`` is the time of that
        window's newest input (None before any); ``versions``: every serving version's;
        ``sidecar``: the event flow."""
        versions = self.estimates()
        if self.champion in versions:
            primary = self.champion
        elif versions:
            primary = max(versions, key=lambda v: versions[v]["timestamp"])
        else:
            primary = self.champion
        fields = dict(versions.get(primary, {})) if primary else {}
        fields.setdefault("accuracy", None)
        fields.setdefault("n", 0)
        fields.setdefault("timestamp", None)
        reference_accuracy = fields.pop("reference_accuracy", None)
        if reference_accuracy is None and primary and primary in self.assessors.loaded_versions():
            reference_accuracy = float(self.assessors.get(primary).reference_accuracy)
        unscored, reason = self._unscored.get(primary, (0, None)) if primary else (0, None)
        return {
            **fields,
            "model_version": primary,
            "reference_accuracy": reference_accuracy,
            # inputs of that version recorded unscored since its last scored one, and why (the
            # estimate above stands still meanwhile; the operator shows the reason)
            "unscored_inputs": unscored,
            "unscored_reason": reason,
            "deployment": self.config.deployment,
            "champion": self.champion,
            "versions": versions,
            "sidecar": {
                "ready": self.ready,
                "failed": self.failed,
                "queue_depth": self._queued,
                "pending_joins": len(self.join),
                "buffered_inputs": self._buffered_rows,
                "last_batch": self.last_batch_key,
                "unscored": {v: {"inputs": c, "reason": r} for v, (c, r) in self._unscored.items()},
            },
        }


_UNSCORED_VERSIONS = 16  # versions whose unscored inputs GET /estimate reports (the oldest go first)
_REASON_CHARS = 500


def _bounded_reason(reason: str | None) -> str:
    text = reason or "no reason recorded"
    return text if len(text) <= _REASON_CHARS else text[:_REASON_CHARS - 3] + "..."


def key_for_feedback(deployment: str, first_time: float, seq: int, prefix: str = "feedback") -> str:
    """``operational/<deployment>/feedback-*.npz`` (labels) or ``reward-*.npz`` (reward-only)."""
    from daic.sidecar.records import batch_key

    return batch_key(deployment, first_time, seq).replace("/batch-", f"/{prefix}-", 1)


def _fsync_and_close(fd: int) -> None:
    import os

    try:
        os.fsync(fd)
    finally:
        os.close(fd)
