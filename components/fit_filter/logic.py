"""fit-filter: the cycle's second remedy (issue 21; Scanflow, Bravo-Rocca et al. 2021).

1. **Pool** (no labels): up to ``pool_limit`` inputs of the cycle's window, drawn uniformly with
   the cycle's seed, the held-out draws excluded (they stay unseen for the comparison below), read
   with :func:`daic.sampling.scan.scan_pool` / :func:`daic.sampling.fetch.fetch_rows` (only the columns and rows needed)
   and written to ``cycles/<c>/filter_pool-<attempt>.npz`` (one per attempt of the step: two attempts
   of one cycle over a window without an end can read different pools, and each record must name
   the pool its filter was adapted on).
2. **Adapt and decide**: :func:`daic.filters.remedy.filter_remedy` fine-tunes the generic filter
   of the champion on that pool with the label-free objective (SHOT's information maximisation on
   the frozen champion's outputs, plus the generic restoration and task terms on clean training
   images), estimates the champion alone and behind the adapted filter on the cycle's labeled
   training sample (``labels/<c>/``) in each gate mode, adopts the better mode among those that
   cost at most ``max_clean_loss`` clean accuracy, and applies the operator's pure rule
   (:func:`daic.operators.reconcile.decide_remedy`). ``serve`` False (the operator promotes):
   nothing goes in service here, the operator rolls the filter out as a canary like a challenger.
3. **Held-out**: the champion and the champion behind the adopted
   filter on the cycle's labeled held-out draws, the inputs evaluate judges the challenger on, so
   the operator can hold a challenger to the wrapped champion on the same inputs.

4. **The sidecar's assessor behind the filter** (``wrapped_assessor``): once the record is written
   (the operator may roll the filter out meanwhile), the adopted filter's wrapped assessor is fitted
   on the classifier's outputs on filtered references and stored beside it
   (:func:`daic.filters.assessor.fit_wrapped_assessor`), so the online estimate covers the wrapped
   model; a failure is recorded (``wrapped_assessor_error``) and never fails the step.

The generic filter (``generic_version`` empty): the newest filter version with no parent that
wraps the champion (trained before any drift, e.g. by ``make demo``'s setup); none: the filter is
trained from its initial identity on the pool and the base images (slower, weaker).

The remedy must never cost the retraining beside it: a failure after the inputs were checked (the
pool, Ray, the filter's training) is logged and recorded (``error``, decision ``none``), and the
step succeeds, so the run's other branch goes on and the operator sees why no filter came.

Writes ``cycles/<c>/filter.json`` (daic.filters.remedy's record plus the held-out figures) and
adds ``filter_*`` fields to ``cycles/<c>/result.json``.

Two attempts of one cycle at once (a KFP retry while the first still adapts or fits the wrapped
assessor) never mix their records: every write of the record (daic.filters.remedy's own, when it
has decided, included) carries the attempt's id and replaces the record only while it is the one
that was there when the attempt began or the attempt's own (a compare-and-set on its ETag); the
result is merged, and the wrapped assessor's fields added, only while the record is still the
attempt's own. The attempt that lost raises ``FilterConflict`` (the cycle's records are then
entirely the other attempt's). A rerun after an attempt finished replaces both records.
"""
from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from daic.components import cycle_store
from daic.components.estimate_accuracy.logic import write_result
from daic.components.train import registry_access
from daic.storage import KeyNotFound, ObjectStore, PreconditionFailed, open_store

log = logging.getLogger(__name__)

POOL = "filter_pool.npz"
RECORD = "filter.json"
REMEDIES = ("retrain", "filter", "both")


class FilterConflict(RuntimeError):
    """Another fit-filter attempt of the same cycle wrote its record first or overtook this one's:
    this attempt's result was not (or not wholly) recorded; the cycle's records are the other's."""


def _record_attempt(store: ObjectStore, key: str) -> tuple[str | None, str | None]:
    """(ETag, whose) of the record at ``key`` now: ``whose`` is the attempt id it carries (a record
    written before attempts had ids: its ETag); (None, None) when there is none yet."""
    try:
        record, etag = store.get_json_with_etag(key)
    except KeyNotFound:
        return None, None
    attempt = record.get("attempt") if isinstance(record, dict) else None
    return etag, (str(attempt) if attempt else f"etag:{etag}")


class _Attempt:
    """One attempt's writes of the cycle's record (``cycles/<c>/filter.json``)."""

    def __init__(self, store: ObjectStore, cycle: str):
        self.store, self.cycle, self.key = store, cycle, cycle_store.key(cycle, RECORD)
        self.id = uuid.uuid4().hex
        self.began_with = _record_attempt(store, self.key)[1]  # whose record was there (None: none)

    def write(self, record: dict[str, Any], attempts: int = 50) -> str:
        """Write ``record`` (stamped with this attempt's id) only while the record there is the one
        this attempt began with or its own (a compare-and-set on the ETag read); its new ETag.
        Raises ``FilterConflict`` (nothing written) when another attempt's record is there."""
        record["attempt"] = self.id
        for _ in range(attempts):
            etag, whose = _record_attempt(self.store, self.key)
            if etag is not None and whose not in (self.began_with, self.id):
                raise FilterConflict(
                    f"cycle {self.cycle!r}: another fit-filter attempt wrote {self.key} while this one ran; its "
                    f"records stand and this attempt's (decision {record.get('decision')}, filter "
                    f"{record.get('filter_version')}) were not written")
            try:
                return self.store.put_json_if_unchanged(self.key, record, etag)
            except PreconditionFailed:
                continue  # changed since read: look again whose it is
        raise FilterConflict(f"cycle {self.cycle!r}: {self.key} kept changing under this fit-filter attempt; "
                             "not written")

    def still_ours(self) -> None:
        """Raise ``FilterConflict`` when the record is no longer this attempt's."""
        if _record_attempt(self.store, self.key)[1] != self.id:
            raise FilterConflict(f"cycle {self.cycle!r}: a later fit-filter attempt replaced {self.key}; this "
                                 "attempt's result was not written")


@dataclass(frozen=True)
class FitFilterConfig:
    model_name: str = "mnist"
    champion_version: str = ""
    generic_version: str = ""
    remedy: str = "both"
    pool_limit: int = 2000
    epochs: int = 1
    base_limit: int = 4000
    min_improvement: float = 0.0
    max_clean_loss: float = 0.003
    seed: int = 0
    serve: bool = False
    wrapped_assessor: bool = True
    extra: dict[str, Any] = field(default_factory=dict)  # other daic.filters.config.FilterConfig fields

    def __post_init__(self) -> None:
        if self.remedy not in REMEDIES:
            raise ValueError(f"remedy must be one of {', '.join(REMEDIES)}, got {self.remedy!r}")
        for name in ("pool_limit", "epochs", "base_limit"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not 0 <= self.max_clean_loss <= 1:
            raise ValueError(f"max_clean_loss must be in [0, 1], got {self.max_clean_loss!r}")
        if not 0 <= self.min_improvement <= 1:
            raise ValueError(f"min_improvement must be in [0, 1], got {self.min_improvement!r}")


def generic_filter(store: ObjectStore, model_name: str, champion_version: str) -> Optional[str]:
    """The newest generic filter of ``champion_version``: no parent and not fitted for a cycle
    (None: there is none)."""
    from daic.filters.registry import FilterRegistry

    registry = FilterRegistry(store, model_name)
    for version in reversed(registry.versions()):
        card = registry.card(version)
        if (card.parent is None and "cycle" not in card.data.notes
                and str(card.train_config.get("classifier_version")) == champion_version):
            return version
    return None


def write_pool(store: ObjectStore, cycle: str, limit: int, seed: int = 0,
               attempt: str | None = None) -> tuple[str, int]:
    """(key, count): up to ``limit`` unlabeled inputs of the cycle's window, held-out draws excluded,
    under a key of the step's ``attempt`` when given."""
    from daic.sampling.fetch import fetch_rows
    from daic.sampling.scan import id_keys, scan_pool

    record = cycle_store.read_sample(store, cycle)
    meta = record.meta
    scan = scan_pool(store, meta["deployment"], meta["since"], meta.get("until"))
    ids = scan.pool.ids
    held = record.holdout_ids.astype(str)
    taken = np.isin(ids, id_keys(held)) if ids.dtype.kind in "iu" else np.isin(ids.astype(str), held)
    free = np.flatnonzero(~taken)
    if free.size == 0:
        raise ValueError(f"cycle {cycle}: the window holds no input outside the held-out draws to adapt the filter on")
    rng = np.random.default_rng([seed, 0xF117E5])
    chosen = np.sort(rng.choice(free, size=min(limit, free.size), replace=False))
    _, images = fetch_rows(store, scan, chosen)
    key = cycle_store.key(cycle, POOL if attempt is None else POOL.replace(".npz", f"-{attempt}.npz"))
    store.put_arrays(key, images=images.astype(np.float32))
    return key, int(chosen.size)


def holdout_accuracies(store: ObjectStore, cycle: str, model_name: str, champion_version: str,
                       filter_version: str, gate: str) -> dict[str, Any]:
    """The champion and the champion behind the filter (both predicting here) on the labeled held-out draws."""
    from daic.filters.apply import wrapped_predictions
    from daic.filters.registry import FilterRegistry

    labels = cycle_store.read_labels(store, cycle)
    held = cycle_store.read_holdout(store, cycle)
    ids = held["ids"].astype(str)
    keep = np.array([i in labels for i in ids], dtype=bool)
    if keep.sum() < 2:
        return {"holdout_labels": int(keep.sum())}
    y = np.array([labels[i] for i in ids[keep]])
    registry = FilterRegistry(store, model_name)
    net = registry.load_filter(filter_version)
    threshold = float(registry.card(filter_version).metrics["gate_threshold"])
    model = registry_access.load_model(store, model_name, champion_version)
    images = np.asarray(held["images"][keep], np.float32)
    wrapped, _ = wrapped_predictions(model, net, images, gate, threshold)
    champion = registry_access.predict(model, images)
    return {"holdout_labels": int(keep.sum()),
            "champion_holdout_accuracy": float(np.mean(champion == y)),
            "filter_holdout_accuracy": float(np.mean(wrapped == y))}


def run(store: ObjectStore | str, cycle: str, config: FitFilterConfig) -> dict[str, Any]:
    """Adapt, estimate, decide; the record written to ``cycles/<c>/filter.json``."""
    from daic.filters.remedy import filter_remedy

    store = open_store(store or None) if isinstance(store, str) else store
    started = time.time()
    # Two attempts of one cycle (a retry while the first still runs): the record is replaced only
    # while it is still the one there when this attempt began, or this attempt's (_Attempt.write).
    attempt = _Attempt(store, cycle)
    champion = registry_access.champion_version(store, config.model_name, config.champion_version or None)
    labels_prefix = cycle_store.train_labels_key(cycle).rsplit("/", 1)[0] + "/"
    if not store.list(labels_prefix):
        raise ValueError(f"cycle {cycle!r} has no labeled batch under {labels_prefix}: run collect-labels first")
    generic = config.generic_version or None
    if config.remedy == "retrain":
        pool_key, n_pool = "", 0
    else:
        generic = generic or generic_filter(store, config.model_name, champion)
        try:
            pool_key, n_pool = write_pool(store, cycle, config.pool_limit, config.seed, attempt.id)
        except Exception as exc:  # noqa: BLE001 - recorded below; the retraining branch must go on
            return _failed(store, cycle, config, champion, exc, started, attempt)
    adapt = {"epochs": config.epochs, "base_limit": config.base_limit, "seed": config.seed, **config.extra}
    try:
        # Its own write of the record, once it has decided, goes through this attempt's conditional write.
        record = filter_remedy(store, write_record=attempt.write, classifier=config.model_name,
                               champion_version=champion, generic_version=generic, pool_key=pool_key or None,
                               labels_prefix=labels_prefix,
                               cycle=cycle, remedy=config.remedy, drop_confirmed=True,
                               min_improvement=config.min_improvement, max_clean_loss=config.max_clean_loss,
                               adapt=adapt, serve=config.serve)
    except FilterConflict:
        raise  # another attempt's record is there: this attempt records nothing
    except Exception as exc:  # noqa: BLE001 - recorded below; the retraining branch must go on
        return _failed(store, cycle, config, champion, exc, started, attempt)
    record.update({"generic_version": generic, "pool_key": pool_key, "pool_count": n_pool,
                   "served_by": "pipeline" if config.serve else "operator"})
    if record.get("filter_version"):
        record.update(holdout_accuracies(store, cycle, config.model_name, champion, record["filter_version"],
                                         record["gate"]))
    record, written = _write(store, cycle, record, started, attempt)
    if config.wrapped_assessor and record["decision"] == "deploy" and record.get("filter_version"):
        record = wrapped_assessor(store, cycle, config.model_name, record, written)
    return record


def wrapped_assessor(store: ObjectStore, cycle: str, model_name: str, record: dict[str, Any],
                     written: str | None = None) -> dict[str, Any]:
    """Fit and store the sidecar's assessor of the champion behind the adopted filter (its gate);
    the record rewritten with what was done.

    ``written``: the ETag of the record this attempt wrote; the record is rewritten only if it is
    still that one (else ``FilterConflict``: a later attempt replaced it, its record stands). None:
    rewritten unconditionally (a caller that alone writes the cycle's record)."""
    from daic.filters.assessor import fit_wrapped_assessor

    try:
        done = fit_wrapped_assessor(store, model_name, record["filter_version"], record["gate"])
        record = {**record, "wrapped_assessor": done["key"], "wrapped_assessor_s": done["seconds"]}
    except Exception as exc:  # noqa: BLE001 - the sidecar scores with the model's own assessor
        log.exception("cycle %s: the wrapped assessor of filter %s could not be fitted", cycle, record["filter_version"])
        record = {**record, "wrapped_assessor_error": f"{type(exc).__name__}: {exc}"}
    key = cycle_store.key(cycle, RECORD)
    if written is None:
        store.put_json(key, record)
        return record
    try:
        store.put_json(key, record, if_match=written)
    except PreconditionFailed:
        raise FilterConflict(
            f"cycle {cycle!r}: a later fit-filter attempt replaced {key} while this one fitted the wrapped "
            f"assessor of filter {record['filter_version']}; that attempt's records stand") from None
    return record


def _failed(store: ObjectStore, cycle: str, config: FitFilterConfig, champion: str, exc: Exception,
            started: float, attempt: _Attempt) -> dict[str, Any]:
    log.exception("cycle %s: the filter could not be fitted", cycle)
    error = f"{type(exc).__name__}: {exc}"
    record = {"cycle": cycle, "remedy": config.remedy, "champion_version": champion, "decision": "none",
              "retrain": config.remedy != "filter", "compare_to": "champion", "gate": "gated",
              "champion_accuracy": None, "filter_accuracy": None, "error": error,
              "reason": f"the filter could not be fitted ({error}); no filter this cycle"}
    return _write(store, cycle, record, started, attempt)[0]


def _write(store: ObjectStore, cycle: str, record: dict[str, Any], started: float,
           attempt: _Attempt) -> tuple[dict[str, Any], str]:
    """Write the record, then merge its ``filter_*`` fields into the result; (record, its ETag).

    The record is written only while the one there is the one the attempt began with or its own,
    and the result merged only while the record is still the attempt's; else ``FilterConflict``
    (nothing of this attempt's is left in the result)."""
    record["seconds"] = time.time() - started
    written = attempt.write(record)
    write_result(store, cycle, {
        "filter_decision": record["decision"], "filter_reason": record["reason"],
        "filter_version": record.get("filter_version") if record["decision"] == "deploy" else None,
        "filter_gate": record["gate"], "filter_accuracy": record.get("filter_accuracy"),
        "filter_champion_accuracy": record["champion_accuracy"],
        "filter_holdout_accuracy": record.get("filter_holdout_accuracy"),
        "champion_holdout_accuracy": record.get("champion_holdout_accuracy"),
        # Always set (None without an error): a rerun's result must not keep an earlier attempt's error.
        "filter_error": record.get("error") or None,
    }, guard=attempt.still_ours)
    log.info("cycle %s: filter %s (%s)", cycle, record["decision"], record["reason"])
    return record, written
