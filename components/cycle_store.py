"""Where one cycle's pipeline steps leave their results in the object store, and how they read them.

Steps hand each other small values as KFP parameters (the cycle id, a decision) and everything
bulky through the object store under ``cycles/<cycle>/`` (docs/CONTRACTS.md), so a run on a
cluster and a local ``kfp.local`` run leave the same record and the report, the operator and a
person with ``daic store`` can read it afterwards:

=============================  ===========================================================
``cycles/<c>/sample.json``     design, parameters, window, the pool's summary (size, oracle mean,
                               P(correct) histogram) and what reading it cost (sample-operational)
``cycles/<c>/sample.npz``      the draws (with their inclusion probabilities) and the drawn
                               inputs (ids, p_correct, predictions): not the pool's N ids,
                               which never leave the sampling step
``cycles/<c>/sample-inputs.npz``  the images of the sampled inputs (ids, inputs)
``cycles/<c>/labels.npz``      one label per sampled input (collect-labels)
``cycles/<c>/holdout.npz``     held-out labeled inputs, never trained on (images, labels, ids)
``labels/<c>/batch-0.npz``     the labeled inputs the trainer may use (images, labels, ids)
``cycles/<c>/estimate.json``   the offline estimate and the drop decision (estimate-accuracy)
``cycles/<c>/train.json``      the challenger version and how it was trained (train)
``cycles/<c>/evaluation.json`` challenger vs champion and the promotion decision (evaluate)
``cycles/<c>/deploy.json``     what was promoted and how (deploy)
=============================  ===========================================================

The held-out inputs go to ``cycles/`` and not ``labels/`` because the trainer reads every batch
under ``labels/``: evaluating on inputs the challenger was trained on would flatter it.
"""
from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from daic.sampling.pool import Pool, SampledPool
from daic.sampling.sample import Sample
from daic.storage import KeyNotFound, ObjectStore

_CYCLE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
UNLABELED = -1  # label of a sampled input nobody labeled (a human said "unsure", or timeout)


def check_cycle(cycle: str) -> str:
    if not isinstance(cycle, str) or not _CYCLE.match(cycle):
        raise ValueError(
            f"cycle id {cycle!r} is invalid: use 1-100 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return cycle


def new_cycle_id(now: float | None = None) -> str:
    """A fresh, sortable cycle id: ``c-20250101T120000Z-1a2b3c``."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    return f"c-{stamp}-{secrets.token_hex(3)}"


def key(cycle: str, name: str) -> str:
    return f"cycles/{check_cycle(cycle)}/{name}"


def train_labels_key(cycle: str, n: int = 0) -> str:
    return f"labels/{check_cycle(cycle)}/batch-{n}.npz"


@dataclass(frozen=True)
class SampleRecord:
    """What sample-operational drew: the drawn inputs (a `SampledPool`: their ids, P(correct) and
    predictions, and the pool's size), the draws (indices into those inputs), which draws are held
    out, the design. Records written before the pool stayed in the sampling step hold a whole
    `Pool` instead; both read the same way."""

    pool: Pool | SampledPool
    sample: Sample
    holdout: np.ndarray  # (n_draws,) bool: this draw is reserved for evaluating the challenger
    design: dict[str, Any]  # {"name": ..., "params": {...}} (see sample_operational.designs)
    meta: dict[str, Any]
    # (pool rows,) bool: queued for labeling as abstained (issue 21), not drawn; outside the
    # estimate, trained on, never held out (daic.sampling.abstain). None: nothing queued.
    queued: np.ndarray | None = None

    def __post_init__(self) -> None:
        holdout = np.asarray(self.holdout, dtype=bool)
        if holdout.shape != (self.sample.n_draws,):
            raise ValueError(f"holdout must have shape ({self.sample.n_draws},), got {holdout.shape}")
        object.__setattr__(self, "holdout", holdout)
        if self.queued is not None:
            queued = np.asarray(self.queued, dtype=bool)
            if queued.shape != (len(self.pool.ids),):
                raise ValueError(f"queued must have shape ({len(self.pool.ids)},), got {queued.shape}")
            if queued[self.sample.indices].any():
                raise ValueError("a queued input cannot also be drawn (a drawn one is labeled as a draw)")
            object.__setattr__(self, "queued", queued)

    @property
    def queued_ids(self) -> np.ndarray:
        """Abstained inputs queued for labeling beside the sample (none drawn), in pool order."""
        return self.pool.ids[self.queued] if self.queued is not None else self.pool.ids[:0]

    @property
    def label_ids(self) -> np.ndarray:
        """Every input to label: the sampled ones and the queued ones, in pool order."""
        if self.queued is None:
            return self.sampled_ids
        return self.pool.ids[np.union1d(self.sample.distinct, np.flatnonzero(self.queued))]

    @property
    def sampled_ids(self) -> np.ndarray:
        """Distinct sampled input ids (each needs one label), in pool order."""
        return self.pool.ids[self.sample.distinct]

    @property
    def holdout_ids(self) -> np.ndarray:
        return np.unique(self.pool.ids[self.sample.indices[self.holdout]])

    @property
    def train_ids(self) -> np.ndarray:
        """Sampled inputs the trainer may use: in a training draw and in no held-out draw."""
        train = np.unique(np.concatenate([self.pool.ids[self.sample.indices[~self.holdout]], self.queued_ids]))
        return np.setdiff1d(train, self.holdout_ids)


def write_sample(store: ObjectStore, cycle: str, record: SampleRecord, inputs: np.ndarray,
                 inclusion: np.ndarray | None = None) -> None:
    """``inclusion``: per draw, its first-order inclusion probability (stored as ``inclusion_prob``)."""
    s = record.sample
    arrays = {
        "ids": record.pool.ids,
        "p_correct": record.pool.p_correct,
        "predictions": record.pool.predictions,
        "pool_size": np.int64(record.pool.size),
        "oracle_accuracy": np.float64(record.pool.oracle_accuracy),
        "indices": s.indices,
        "batch": s.batch,
        "holdout": record.holdout,
    }
    for name in ("selection_prob", "stratum", "control", "control_mean"):
        if getattr(s, name) is not None:
            arrays[name] = getattr(s, name)
    if inclusion is not None:
        arrays["inclusion_prob"] = np.asarray(inclusion, dtype=np.float64)
    if record.queued is not None and record.queued.any():
        arrays["queued"] = record.queued
    store.put_arrays(key(cycle, "sample.npz"), **arrays)
    # ``inputs``: one per ``label_ids`` (the sampled inputs and the queued ones), in pool order
    store.put_arrays(key(cycle, "sample-inputs.npz"), ids=record.label_ids,
                     inputs=np.asarray(inputs, dtype=np.float32))
    store.put_json(key(cycle, "sample.json"), {"cycle": cycle, "design": record.design, **record.meta})


def read_sample(store: ObjectStore, cycle: str) -> SampleRecord:
    try:
        meta = store.get_json(key(cycle, "sample.json"))
        arrays = store.get_arrays(key(cycle, "sample.npz"))
    except KeyNotFound:
        raise KeyNotFound(f"cycle {cycle!r} has no sample in {store.url} (run sample-operational first)") from None
    if "pool_ids" in arrays:  # a record from before the pool stayed in the sampling step
        pool = Pool(ids=arrays["pool_ids"], p_correct=arrays["pool_p_correct"],
                    predictions=arrays["pool_predictions"])
    else:
        pool = SampledPool(ids=arrays["ids"], p_correct=arrays["p_correct"], predictions=arrays["predictions"],
                           size=int(arrays["pool_size"]), oracle_accuracy=float(arrays["oracle_accuracy"]))
    sample = Sample(indices=arrays["indices"], batch=arrays["batch"],
                    selection_prob=arrays.get("selection_prob"), stratum=arrays.get("stratum"),
                    control=arrays.get("control"), control_mean=arrays.get("control_mean"))
    design = meta.pop("design")
    meta.pop("cycle", None)
    return SampleRecord(pool=pool, sample=sample, holdout=arrays["holdout"], design=design, meta=meta,
                        queued=arrays.get("queued"))


def read_sample_inputs(store: ObjectStore, cycle: str) -> tuple[np.ndarray, np.ndarray]:
    arrays = store.get_arrays(key(cycle, "sample-inputs.npz"))
    return arrays["ids"].astype(str), arrays["inputs"]


def write_labels(store: ObjectStore, cycle: str, ids: np.ndarray, labels: np.ndarray, backend: str) -> None:
    store.put_arrays(key(cycle, "labels.npz"), ids=np.asarray(ids).astype(str),
                     labels=np.asarray(labels, dtype=np.int64), backend=np.array(backend))


def read_labels(store: ObjectStore, cycle: str) -> dict[str, int]:
    """id -> label for every labeled sampled input (UNLABELED ones left out)."""
    try:
        arrays = store.get_arrays(key(cycle, "labels.npz"))
    except KeyNotFound:
        raise KeyNotFound(f"cycle {cycle!r} has no labels in {store.url} (run collect-labels first)") from None
    return {i: int(y) for i, y in zip(arrays["ids"].astype(str), arrays["labels"]) if y != UNLABELED}


def read_holdout(store: ObjectStore, cycle: str) -> dict[str, np.ndarray]:
    try:
        return store.get_arrays(key(cycle, "holdout.npz"))
    except KeyNotFound:
        raise KeyNotFound(f"cycle {cycle!r} has no held-out labeled inputs in {store.url}") from None
