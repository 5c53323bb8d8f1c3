"""The record of one offline assessment, and where it and its labels go in the object store.

``cycles/<cycle>/assessment.json``  the `AssessmentRecord` (estimate, interval, labels used,
                                    mispredictions found, what SRS would have needed, sampled ids)
``labels/<cycle>/batch-<n>.npz``    each labeling batch as the trainer reads it: ``images``
                                    (N, 28, 28) float32, ``labels`` (N,) int64, ``ids`` (N,) str

The same labels both measure the model (the record) and improve it (the batches), which is the
point of DAIC. Building the record is pure (`build_record`); only the ``save_*``/``load_*``
functions touch the store.
"""
from __future__ import annotations

import dataclasses
import re
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from daic.sampling.intervals import wilson_required_n
from daic.sampling.pool import Pool
from daic.sampling.sample import Design
from daic.sampling.sequential import AssessmentRun, SequentialConfig

_CYCLE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")  # same rule as components.cycle_store


def check_cycle(cycle: str) -> str:
    if not isinstance(cycle, str) or not _CYCLE.match(cycle):
        raise ValueError(
            f"cycle id {cycle!r} is invalid: use 1-100 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return cycle


def assessment_key(cycle: str) -> str:
    return f"cycles/{check_cycle(cycle)}/assessment.json"


def label_batch_key(cycle: str, n: int) -> str:
    return f"labels/{check_cycle(cycle)}/batch-{int(n)}.npz"


@dataclass(frozen=True)
class AssessmentRecord:
    """What one assessment found, in a form that survives JSON.

    ``srs_labels_needed`` is the number of labels simple random sampling would have needed for the
    same half-width at the estimated accuracy (Wilson interval, solved for n): the label saving is
    ``srs_labels_needed / n_labels``.
    """

    cycle: str
    design: dict[str, Any]
    method: str
    level: float
    accuracy: float
    lower: float
    upper: float
    half_width: float
    n_labels: int
    n_draws: int
    n_failures_found: int
    srs_labels_needed: int
    oracle_accuracy: float
    pool_size: int
    stop_reason: str
    budget: int
    batch_size: int
    target_half_width: float | None
    sampled_ids: list[str]
    selection_prob: list[float] | None
    trace: list[dict[str, float]]
    created: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> "AssessmentRecord":
        names = {f.name for f in dataclasses.fields(cls)}
        missing = sorted(n for n in names - set(doc) if n != "created")
        if missing:
            raise ValueError(f"assessment record lacks field(s) {missing}")
        return cls(**{k: v for k, v in doc.items() if k in names})


def build_record(
    cycle: str, design: Design, pool: Pool, run: AssessmentRun, config: SequentialConfig
) -> AssessmentRecord:
    """The record of ``run`` (made by `daic.sampling.sequential.run_assessment`)."""
    est = run.estimate
    params = dataclasses.asdict(design) if dataclasses.is_dataclass(design) else {}
    params.pop("name", None)
    srs_n = wilson_required_n(est.accuracy, est.half_width, est.level) if 0 < est.half_width < 0.5 else 1
    s = run.sample
    return AssessmentRecord(
        cycle=check_cycle(cycle),
        design={"name": design.name, "params": params},
        method=est.method,
        level=est.level,
        accuracy=est.accuracy,
        lower=est.lower,
        upper=est.upper,
        half_width=est.half_width,
        n_labels=est.n_labels,
        n_draws=est.n_draws,
        n_failures_found=est.n_failures_found,
        srs_labels_needed=int(srs_n),
        oracle_accuracy=pool.oracle_accuracy,
        pool_size=pool.size,
        stop_reason=run.stop_reason,
        budget=config.budget,
        batch_size=config.batch_size,
        target_half_width=config.target_half_width,
        sampled_ids=pool.ids[s.indices].tolist(),
        selection_prob=None if s.selection_prob is None else s.selection_prob.tolist(),
        trace=[
            {"n_draws": e.n_draws, "n_labels": e.n_labels, "accuracy": e.accuracy, "lower": e.lower,
             "upper": e.upper}
            for e in run.trace
        ],
    )


def save_assessment(store, record: AssessmentRecord) -> str:
    """Write ``cycles/<cycle>/assessment.json``; returns the key."""
    key = assessment_key(record.cycle)
    store.put_json(key, record.to_json())
    return key


def load_assessment(store, cycle: str) -> AssessmentRecord:
    return AssessmentRecord.from_json(store.get_json(assessment_key(cycle)))


def check_label_batch(images: np.ndarray, labels: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, ...]:
    """Validate one labeled batch against docs/CONTRACTS.md; returns the arrays in contract dtypes."""
    images = np.asarray(images)
    labels = np.asarray(labels)
    ids = np.asarray(ids)
    n = labels.shape[0] if labels.ndim == 1 else -1
    if n < 1:
        raise ValueError(f"labels must be a non-empty 1-d array, got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
        raise ValueError(f"labels must be non-negative integer classes, got dtype {labels.dtype}")
    if ids.shape != (n,):
        raise ValueError(f"ids must have shape ({n},) like labels, got {ids.shape}")
    if images.shape != (n, 28, 28):
        raise ValueError(f"images must have shape ({n}, 28, 28), got {images.shape}")
    images = images.astype(np.float32)
    if not np.all(np.isfinite(images)) or images.min() < 0 or images.max() > 1:
        raise ValueError("images must be finite and in [0, 1]")
    return images, labels.astype(np.int64), ids.astype(str)


def save_label_batches(store, cycle: str, run: AssessmentRun, images_of) -> list[str]:
    """Write the run's labels to ``labels/<cycle>/batch-<n>.npz``, one object per labeling batch.

    ``images_of(ids) -> (k, 28, 28)`` fetches the labeled inputs (from the operational log).
    Refuses to write into a cycle that already has label batches, so a re-run never mixes labels
    from two assessments.
    """
    prefix = f"labels/{check_cycle(cycle)}/"
    if store.list(prefix):
        raise ValueError(f"{prefix} already holds label batches; use a new cycle id")
    keys = []
    for n, b in enumerate(np.unique(run.label_batch)):
        pick = run.label_batch == b
        ids = run.labeled_ids[pick]
        images, labels, ids = check_label_batch(images_of(ids), run.labels[pick], ids)
        key = label_batch_key(cycle, n)
        store.put_arrays(key, images=images, labels=labels, ids=ids)
        keys.append(key)
    return keys
