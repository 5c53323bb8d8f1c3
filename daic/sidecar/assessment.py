"""The sidecar's one door to ``daic.oracles``: a fitted assessor and an estimator per version.

Every served response names the model version that produced it; that version's oracle
reference (``models/<name>/<version>/oracle_reference.npz``, and its shifted reference when the
registry has one) is what its predictions are scored against.

Off the serving path (issue 22): an assessor is fitted once per version when the version is
registered and stored with it (:mod:`daic.models.assessor_store`); the pool loads that. Only a
version without a usable stored assessor is fitted here, and then in a background thread. Loads
and fits run on one worker thread, never under a lock scoring takes: the ready assessors are an
immutable mapping whose reference is swapped in one assignment (copy on write), so
:meth:`AssessorPool.for_scoring` never waits. Until a version's own assessor is ready its
predictions are scored with a stand-in, the assessor last used for scoring (the old champion's
across a champion change), and its estimator is rebuilt with its own assessor's window model and
error terms once that is ready (:meth:`AssessorPool.estimator_for`), keeping the window's inputs.

Behind the input filter (issue 21): a response whose ``meta.tags`` name a filter (``daic.filter``,
``daic.filter.gate``: the TRANSFORMER's tags, echoed by the model) is scored with the *wrapped*
assessor, fitted on the classifier's outputs on filtered references when the filter was chosen
(:mod:`daic.filters.assessor`), loaded here in the background like a version's
(:meth:`AssessorPool.wrapped_for_scoring`, never fitted here), and with the version's own until
it is ready or when there is none.

A fit made here is also pickled to ``cache_dir`` (the sidecar's own state directory), keyed by a
fingerprint of the reference arrays and of the ``daic.oracles`` source: a changed reference or
new code refits, a missing or unreadable file refits, and only files this sidecar wrote are loaded.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import pickle
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from daic.models import assessor_store, first_window
from daic.oracles.base import NotFittedError
from daic.oracles.pipeline import OnlineAssessor
from daic.oracles.self_agreement import for_assessor
from daic.oracles.window import OnlineEstimator
from daic.serving.loading import load_oracle_reference, resolve_version
from daic.storage import ObjectStore

logger = logging.getLogger(__name__)


def _code_fingerprint() -> str:
    """Hash of the daic.oracles sources: a pickled assessor is only reused by the same code.
    Taken once per process: it stands for the code that was loaded, not for later edits."""
    return assessor_store.code_fingerprint()


def reference_fingerprint(*references) -> str:
    """Hash of every array and scalar field of the (dataclass) references given, None skipped."""
    digest = hashlib.sha256()
    for reference in references:
        if reference is None:
            digest.update(b"none")
            continue
        for f in dataclasses.fields(reference):
            value = getattr(reference, f.name)
            digest.update(f.name.encode())
            if isinstance(value, np.ndarray):
                digest.update(str(value.dtype).encode() + str(value.shape).encode())
                digest.update(np.ascontiguousarray(value).tobytes() if value.dtype != object
                              else repr(value.tolist()).encode())
            else:
                digest.update(repr(value).encode())
    return digest.hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class Widths:
    """The widths of one model version's outputs: ``n_classes`` columns of probabilities (and of
    shadow probabilities), ``embedding_dim`` columns of embeddings."""

    n_classes: int
    embedding_dim: int

    @classmethod
    def of(cls, outputs) -> "Widths":
        """The widths of parsed outputs (``daic.serving.protocol.ModelOutputs``)."""
        return cls(int(outputs.probs.shape[1]), int(outputs.embeddings.shape[1]))


def assessor_widths(assessor) -> Widths | None:
    """The widths ``assessor``'s reference was built with (what its oracles can score), or None when
    it does not say (an assessor not fitted, or a stand-in object without a reference)."""
    try:
        return Widths(int(assessor.n_classes), int(assessor.embedding_dim))
    except (AttributeError, TypeError, NotFittedError):
        return None


def width_mismatch(outputs, expected: Widths, version: str,
                   source: str = "its oracle reference") -> tuple[str, str] | None:
    """(field, message) when the parsed ``outputs`` of model version ``version`` do not have the
    ``expected`` widths, else None. ``field`` is ``probs``, ``embeddings`` or ``shadow_probs``; the
    message names the response field, the expected and the actual width, and ``source`` (where the
    expected widths come from)."""
    checks = (("probs", "data (probabilities)", outputs.probs, expected.n_classes, "classes"),
              ("embeddings", "meta.tags.daic.embeddings", outputs.embeddings, expected.embedding_dim, "columns"),
              ("shadow_probs", "meta.tags.daic.shadow_probs", outputs.shadow_probs, expected.n_classes, "classes"))
    for field, where, array, want, unit in checks:
        got = int(array.shape[1]) if array.ndim == 2 else -1
        if got != want:
            return field, (f"{where} has width {got}, expected {want} {unit} for model version {version!r} "
                           f"(the width of {source})")
    return None


def self_agreement_of(assessor, outputs: list) -> np.ndarray | None:
    """The self-agreement of the parsed ``outputs`` (``daic.serving.protocol.ModelOutputs``, in
    order) when ``assessor`` scores with it, else None: the rule of
    :func:`daic.oracles.self_agreement.for_assessor`. A response without it (a model server set to
    ``self_agreement_views: off``, or older than the assessor) or over other views raises
    ValueError, with what to set."""
    try:
        return for_assessor(assessor, [(out.self_agreement, out.self_agreement_views) for out in outputs],
                            source="a response")
    except ValueError as exc:
        raise ValueError(f"{exc} (meta.tags.daic.self_agreement and daic.self_agreement.views; set the model "
                         "server's self_agreement_views to the assessor's views)") from None


class AssessorPool:
    """Ready assessors per version, loaded or fitted in the background (see the module docstring).

    ``fit``: how a version without a stored assessor is fitted, ``fit(reference, shifted)`` ->
    OnlineAssessor (default: :func:`daic.models.assessor_store.fit`; tests gate it on an Event)."""

    def __init__(self, store: ObjectStore, model_name: str, window: int, keep: int = 4,
                 cache_dir: Path | None = None, fit: Callable | None = None) -> None:
        self.store = store
        self.model_name = model_name
        self.window = window
        self.keep = keep
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._fit = fit or assessor_store.fit
        self.fits = 0  # assessors fitted here (not loaded from the registry or the cache)
        self.loads = 0  # assessors loaded from the registry (fitted when the version was registered)
        # version -> assessor, oldest first; replaced whole, never mutated (readers take no lock)
        self._ready: "OrderedDict[str, OnlineAssessor]" = OrderedDict()
        self._pending: dict[str, Future] = {}
        self._standin: str | None = None  # the version last scored with its own assessor
        # (filter version, gate) -> the wrapped model's assessor (daic.filters.assessor), loaded
        self._wrapped: "OrderedDict[tuple[str, str], OnlineAssessor]" = OrderedDict()
        self._wrapped_pending: set[tuple[str, str]] = set()
        # not stored when last looked up (monotonic s), oldest first: at most WRAPPED_MISSING_MAX
        self._wrapped_missing: "OrderedDict[tuple[str, str], float]" = OrderedDict()
        self._lock = threading.Lock()  # guards _pending and the swap of _ready; never held across I/O or a fit
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="assessor-fit")

    def champion(self) -> str | None:
        """The registry's champion version, None while there is none."""
        return resolve_version(self.store, self.model_name, missing_ok=True)

    # -- preparing ------------------------------------------------------------------------------
    def prepare(self, version: str) -> Future:
        """Start loading (or, without a stored assessor, fitting) ``version``'s assessor in the
        background; returns a future of it. Returns at once."""
        with self._lock:
            if version in self._ready:
                done: Future = Future()
                done.set_result(self._ready[version])
                return done
            future = self._pending.get(version)
            if future is None:
                future = self._pending[version] = self._worker.submit(self._prepare, version)
            return future

    def _prepare(self, version: str) -> OnlineAssessor:
        try:
            reference, shifted = load_oracle_reference(self.store, self.model_name, version)
            assessor = assessor_store.load(self.store, self.model_name, version,
                                           reference_fingerprint(reference, shifted))
            if assessor is not None:
                self.loads += 1
            else:
                assessor = self._fit_or_load(version, reference, shifted)
            # Labelled held-out inputs of the cycle that promoted it (daic.models.first_window).
            assessor = first_window.calibrate(assessor, self.store, self.model_name, version)
        except BaseException as exc:
            with self._lock:
                self._pending.pop(version, None)  # a later call tries again
            logger.warning("model version %s: no assessor (%s: %s); its predictions are scored with a stand-in "
                           "or recorded unscored", version, type(exc).__name__, exc)
            raise
        with self._lock:
            ready = OrderedDict(self._ready)
            ready[version] = assessor
            while len(ready) > self.keep:
                ready.popitem(last=False)
            self._ready = ready  # the swap: one assignment
            self._pending.pop(version, None)
        return assessor

    def get(self, version: str, timeout: float | None = None) -> OnlineAssessor:
        """``version``'s own assessor, waiting for its load or fit (never on the scoring path:
        warm-up, an explicit reload, tests and benchmarks)."""
        assessor = self._ready.get(version)
        if assessor is not None:
            return assessor
        return self.prepare(version).result(timeout)

    def ready(self, version: str) -> OnlineAssessor | None:
        """``version``'s assessor if it is ready, else None (never waits)."""
        return self._ready.get(version)

    def for_scoring(self, version: str) -> tuple[OnlineAssessor | None, bool]:
        """(assessor, own) to score ``version``'s predictions with, at once: its own when ready;
        else (its load or fit started in the background) the stand-in, the assessor last used
        for its own version's scoring, with own=False; (None, False) when there is none yet."""
        ready = self._ready  # one read of the current mapping
        assessor = ready.get(version)
        if assessor is not None:
            self._standin = version
            return assessor, True
        self.prepare(version)
        standin = ready.get(self._standin) if self._standin is not None else None
        if standin is None and ready:
            standin = next(reversed(ready.values()))
        return standin, False

    #: seconds before a filter without a stored wrapped assessor is looked up again (the cycle's
    #: step stores it shortly after the filter goes in)
    WRAPPED_RETRY_S = 30.0
    #: filters found without a stored wrapped assessor that are remembered (the most recent)
    WRAPPED_MISSING_MAX = 256
    #: lookups of wrapped assessors queued or running at once; more are not started
    WRAPPED_PENDING_MAX = 4

    def wrapped_for_scoring(self, filter_version: str, gate: str) -> OnlineAssessor | None:
        """The assessor of the model behind ``filter_version`` in ``gate`` mode when it is loaded,
        else None: its load starts in the background; one not stored yet is looked up again
        after :attr:`WRAPPED_RETRY_S`. Never waits.

        The names come from responses (``meta.tags``), which anyone who reaches the ingest port or
        ``/assess`` writes, so what a flood of made-up names costs is bounded: at most
        :attr:`WRAPPED_PENDING_MAX` lookups are queued or running (beyond that None, and the next
        call for the name tries again: the worker also loads the versions' own assessors, which
        must not wait behind a flood), and at most :attr:`WRAPPED_MISSING_MAX` names found missing
        are remembered, the least recently found forgotten first (a forgotten name costs one more
        lookup when it comes again). Memory is bounded by the two caps, store traffic by the first."""
        key = (filter_version, gate)
        assessor = self._wrapped.get(key)  # one read of the current mapping
        if assessor is not None:
            return assessor
        with self._lock:
            missing_since = self._wrapped_missing.get(key)
            if missing_since is not None and time.monotonic() - missing_since >= self.WRAPPED_RETRY_S:
                del self._wrapped_missing[key]  # due again: looked up below
                missing_since = None
            if key in self._wrapped_pending or missing_since is not None \
                    or len(self._wrapped_pending) >= self.WRAPPED_PENDING_MAX:
                return None
            self._wrapped_pending.add(key)
        self._worker.submit(self._load_wrapped, key)
        return None

    def _load_wrapped(self, key: tuple[str, str]) -> None:
        from daic.filters.assessor import load_wrapped_assessor

        try:
            assessor = load_wrapped_assessor(self.store, self.model_name, *key)
        except Exception as exc:  # noqa: BLE001 - scored with the version's own assessor meanwhile
            logger.warning("filter %s (%s): no wrapped assessor (%s: %s); scoring with the model's own",
                           key[0], key[1], type(exc).__name__, exc)
            assessor = None
        with self._lock:
            self._wrapped_pending.discard(key)
            if assessor is None:
                self._wrapped_missing.pop(key, None)
                self._wrapped_missing[key] = time.monotonic()  # the newest last
                while len(self._wrapped_missing) > self.WRAPPED_MISSING_MAX:
                    self._wrapped_missing.popitem(last=False)
                return
            self._wrapped_missing.pop(key, None)
            ready = OrderedDict(self._wrapped)
            ready[key] = assessor
            while len(ready) > self.keep:
                ready.popitem(last=False)
            self._wrapped = ready  # the swap: one assignment
        logger.info("filter %s (%s): scoring with the wrapped model's assessor", *key)

    def _fit_or_load(self, version: str, reference, shifted) -> OnlineAssessor:
        if self.cache_dir is None:
            self.fits += 1
            return self._fit(reference, shifted)
        path = self.cache_dir / f"{version}-{reference_fingerprint(reference, shifted)}-{_code_fingerprint()}.pkl"
        if path.exists():
            try:
                with open(path, "rb") as fh:
                    assessor = pickle.load(fh)
                if isinstance(assessor, OnlineAssessor):
                    return assessor
                logger.warning("%s does not hold an assessor; refitting", path)
            except Exception as exc:  # noqa: BLE001 - any unreadable cache file means: refit
                logger.warning("cannot read the cached assessor %s (%s); refitting", path, exc)
        self.fits += 1
        assessor = self._fit(reference, shifted)
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            for old in self.cache_dir.glob(f"{version}-*.pkl"):
                old.unlink(missing_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.cache_dir, suffix=".tmp")
            with os.fdopen(fd, "wb") as fh:
                pickle.dump(assessor, fh, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, path)
        except OSError as exc:
            logger.warning("cannot cache the fitted assessor in %s: %s", self.cache_dir, exc)
        return assessor

    def loaded_versions(self) -> list[str]:
        return list(self._ready)

    # -- estimators -------------------------------------------------------------------------------
    def new_estimator(self, version: str) -> OnlineEstimator:
        """A window with the version's window model, measured model error and trust region.
        Once feedback recalibrates it, the label-free estimate is still weighed in by inverse
        variance (``fuse_label_free``): 1.92 points of error after 200 labels against 2.00 for
        the recalibration alone in benchmarks/online_estimation.py (docs/benchmarks/online.md)."""
        return self.get(version).new_estimator(max_count=self.window, fuse_label_free=True)

    def estimator_for(self, version: str, current: OnlineEstimator | None) -> OnlineEstimator:
        """The estimator ``version``'s scores go into, without waiting: ``current`` when it was
        built with the version's own assessor; a new one (or ``current`` rebuilt, its window
        kept) with the own assessor once ready; else one with the stand-in's terms, marked
        ``stand_in`` so it is rebuilt later."""
        own = self.ready(version)
        if own is not None:
            if current is None:
                return own.new_estimator(max_count=self.window, fuse_label_free=True)
            if not getattr(current, "stand_in", False) and getattr(current, "behind", None) is None:
                return current
            fresh = own.new_estimator(max_count=self.window, fuse_label_free=True).to_state()
            state = current.to_state()
            state["config"], state["change"] = fresh["config"], fresh["change"]
            return own.estimator_from_state(state)
        if current is not None:
            return current
        standin, _ = self.for_scoring(version)
        if standin is None:
            raise LookupError(f"no assessor ready for {version} and none to stand in")
        estimator = standin.new_estimator(max_count=self.window, fuse_label_free=True)
        estimator.stand_in = True
        return estimator

    def estimator_behind(self, version: str, current: OnlineEstimator | None,
                         behind: tuple[str, str]) -> OnlineEstimator:
        """The estimator ``version``'s scores go into while they come from the wrapped model's
        assessor (``behind``: filter version, gate; it must be loaded): ``current`` when built with
        it, else one with its window model, error terms and trust region, ``current``'s window kept
        (measured: with the model's own window model on the wrapped scores the estimate erred by
        up to 4 points, with the wrapped one's by at most 1.4; docs/benchmarks.md, issue 21)."""
        if current is not None and getattr(current, "behind", None) == behind:
            return current
        wrapped = self._wrapped[behind]
        fresh = wrapped.new_estimator(max_count=self.window, fuse_label_free=True)
        if current is not None:
            state, new = current.to_state(), fresh.to_state()
            state["config"], state["change"] = new["config"], new["change"]
            fresh = wrapped.estimator_from_state(state)
        fresh.behind = behind
        return fresh

    def estimator_from_state(self, state: dict, version: str) -> OnlineEstimator:
        """Resume a persisted window; the window model is refitted (deterministically) with the
        version's assessor, since it is not part of the saved state."""
        return self.get(version).estimator_from_state(state)
