"""estimate-accuracy: the offline accuracy estimate of the cycle's sample and the drop decision.

The design that drew the sample (recorded by sample-operational) gives the estimator and its
interval (:mod:`daic.sampling`); draws whose input got no label ("unsure") are left out, which the
record counts. The decision (:mod:`.decision`) and the estimate go to ``cycles/<c>/estimate.json``,
and a first ``cycles/<c>/result.json`` is written in the shape the operator reads
(``daic.operators.status.RunResult``): a run that stops here (no drop) has a complete result; later
steps add the challenger to it.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
from pydantic import Field

from daic.components import cycle_store
from daic.components.estimate_accuracy.decision import DropDecision, DropRule, decide_drop
from daic.components.sample_operational.designs import make_design
from daic.sampling.intervals import wilson_required_n
from daic.sampling.sample import Estimate, Sample, check_level
from daic.operators.status import RunResult
from daic.storage import KeyNotFound, ObjectStore, PreconditionFailed, StorageError, open_store
from daic.storage.parsed import parse_object

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EstimateConfig:
    level: float = 0.95
    rule: DropRule = DropRule()
    reference_accuracy: float = -1.0  # < 0: the champion's recorded clean test accuracy
    model_name: str = "mnist"
    champion_version: str = ""  # "" = the registry's champion

    def __post_init__(self) -> None:
        check_level(self.level)
        if self.reference_accuracy > 1.0:
            raise ValueError(f"reference_accuracy must be <= 1 (negative: read it from the champion), "
                             f"got {self.reference_accuracy!r}")


@dataclass(frozen=True)
class EstimateResult:
    estimate: Estimate
    decision: DropDecision
    oracle_accuracy: float
    n_unlabeled_draws: int
    srs_labels_needed: int


def srs_labels_needed(estimate: Estimate) -> int:
    """Labels simple random sampling would have needed for the same half-width at the estimated
    accuracy (Wilson interval solved for n), the rule of ``daic.sampling.record``'s assessment
    record: the design's label saving is this over ``estimate.n_labels``."""
    if not 0.0 < estimate.half_width < 0.5:
        return 1
    return wilson_required_n(estimate.accuracy, estimate.half_width, estimate.level)


def labeled_subsample(record: cycle_store.SampleRecord, labels: dict[str, int],
                      draws: np.ndarray | None = None) -> tuple[Sample, np.ndarray]:
    """The draws (optionally only ``draws``, a bool mask) whose input has a label, and their labels."""
    ids = record.pool.ids[record.sample.indices]
    keep = np.array([i in labels for i in ids], dtype=bool)
    if draws is not None:
        keep &= draws
    return record.sample.subset(keep), np.array([labels[i] for i in ids[keep]], dtype=np.int64)


def offline_estimate(record: cycle_store.SampleRecord, labels: dict[str, int], level: float) -> tuple[Estimate, int]:
    """The design's estimate of the champion's accuracy on the pool; and how many draws lacked a label."""
    design = make_design(record.design["name"], record.design.get("params"))
    sub, y = labeled_subsample(record, labels)
    if sub.n_draws < 2:
        raise ValueError(f"only {sub.n_draws} labeled draws: nothing to estimate from")
    correct = record.pool.predictions[sub.indices] == y
    return design.estimate(record.pool, sub, correct, level), record.sample.n_draws - sub.n_draws


def reference_accuracy(store: ObjectStore, config: EstimateConfig) -> float | None:
    """The accuracy the drop is measured from: the parameter, else the champion's card."""
    if config.reference_accuracy >= 0:
        return config.reference_accuracy
    if config.rule.threshold > 0:
        return None  # not needed
    from daic.components.train.registry_access import champion_reference_accuracy

    return champion_reference_accuracy(store, config.model_name, config.champion_version or None)


def run(store: ObjectStore | str, cycle: str, config: EstimateConfig) -> EstimateResult:
    store = open_store(store or None) if isinstance(store, str) else store
    record = cycle_store.read_sample(store, cycle)
    labels = cycle_store.read_labels(store, cycle)
    estimate, missing = offline_estimate(record, labels, config.level)
    reference = reference_accuracy(store, config)
    decision = decide_drop(estimate.accuracy, estimate.lower, estimate.upper,
                           config.rule.effective_threshold(reference))
    srs_n = srs_labels_needed(estimate)
    doc = {
        "cycle": cycle,
        "estimate": asdict(estimate),
        "srs_labels_needed": srs_n,
        "oracle_accuracy": record.pool.oracle_accuracy,
        "n_unlabeled_draws": missing,
        "reference_accuracy": reference,
        "rule": asdict(config.rule),
        "decision": asdict(decision),
        "created": time.time(),
    }
    store.put_json(cycle_store.key(cycle, "estimate.json"), doc)
    write_result(store, cycle, {
        "drop_confirmed": decision.confirmed,
        "drop_outcome": decision.outcome,
        "offline_accuracy": estimate.accuracy,
        "offline_lower": estimate.lower,
        "offline_upper": estimate.upper,
        "labels_used": estimate.n_labels,
        **({"champion_version": config.champion_version} if config.champion_version else {}),
    }, defaults={"champion_version": None, "champion_accuracy": None, "challenger_version": None,
                 "challenger_accuracy": None})  # evaluate's: a late retry of this step must not wipe them
    log.info("cycle %s: %s (%s)", cycle, decision.outcome, decision.reason)
    return EstimateResult(estimate=estimate, decision=decision, oracle_accuracy=record.pool.oracle_accuracy,
                          n_unlabeled_draws=missing, srs_labels_needed=srs_n)


class ResultRecord(RunResult):
    """``result.json`` as it stands between steps: the operator's RunResult, each field checked
    where it is present (a step merging before this one has written its fields finds them absent).
    A record that is not an object, or has a field the operator could not read, is refused at the
    merge (one CorruptObject naming the key) instead of a TypeError, or garbage merged on."""

    drop_confirmed: bool | None = None
    offline_accuracy: float | None = Field(default=None, ge=0, le=1)
    offline_lower: float | None = Field(default=None, ge=0, le=1)
    offline_upper: float | None = Field(default=None, ge=0, le=1)
    labels_used: int | None = Field(default=None, ge=0)


def write_result(store: ObjectStore, cycle: str, fields: dict,
                 guard: Callable[[], None] | None = None, attempts: int = 50,
                 defaults: dict | None = None) -> dict:
    """Merge ``fields`` into ``cycles/<c>/result.json`` (the operator's run result); returns it.
    ``defaults`` are written only where the record has no such field yet (a late attempt of an
    early step must not wipe what a later step wrote).

    Several steps merge into the record (and a retried step's first attempt may still be writing),
    so the merge is a compare-and-set on the record's ETag, retried from a fresh read when another
    writer got in between: no writer's fields are lost. ``guard`` runs after each read and may
    raise to abandon the merge (evaluate: its evaluation record was superseded)."""
    key = cycle_store.key(cycle, "result.json")
    for _ in range(attempts):
        try:
            current, etag = store.get_json_with_etag(key)
            parse_object(store, key, ResultRecord, current)  # what is merged into stays as read
        except KeyNotFound:
            current, etag = {}, None
        if guard is not None:
            guard()
        merged = {**(defaults or {}), **current, **fields}
        try:
            store.put_json_if_unchanged(key, merged, etag)
        except PreconditionFailed:
            continue  # another step merged first: merge again into what it wrote
        return merged
    raise StorageError(f"{store.url}: could not merge into {key!r} after {attempts} attempts "
                       "(it kept changing under this step)")
