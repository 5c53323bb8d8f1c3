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

from pydantic import BaseModel, ConfigDict

from daic.storage.parsed import CorruptObject, parse_object
from daic.sampling.pool import Pool, SampledPool
from daic.sampling.sample import Sample
from daic.storage import KeyNotFound, ObjectStore

_CYCLE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
UNLABELED = -1  # label of a sampled input nobody labeled (a human said "unsure", or timeout)
N_CLASSES = 10  # labels lie in 0..N_CLASSES-1 (MNIST digits)
IMAGE_SHAPE = (28, 28)


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


class _SampleMeta(BaseModel):
    """``sample.json`` as read back: an object whose ``design`` is an object; the rest is the step's
    free-form summary (kept as it is)."""

    model_config = ConfigDict(extra="allow")

    cycle: str | None = None
    design: dict[str, Any]


def _corrupt(store: ObjectStore, k: str, what: str) -> CorruptObject:
    return CorruptObject(f"{store.url}: object {k!r} {what}")


def _need(store: ObjectStore, k: str, arrays: dict[str, np.ndarray], names: tuple[str, ...]) -> None:
    missing = [n for n in names if n not in arrays]
    if missing:
        raise _corrupt(store, k, f"lacks the array(s) {', '.join(missing)} (has: {', '.join(sorted(arrays)) or 'none'})")


def _scalar(store: ObjectStore, k: str, arrays: dict[str, np.ndarray], name: str) -> float:
    a = arrays[name]
    if a.size != 1 or a.dtype.kind not in "iuf" or not np.isfinite(a).all():
        raise _corrupt(store, k, f"array {name!r} must be one finite number, got {a.dtype} of shape {a.shape}")
    return a.reshape(()).item()


def _rows(store: ObjectStore, k: str, arrays: dict[str, np.ndarray], *, ints: tuple[str, ...] = (),
          floats: tuple[str, ...] = (), ids: tuple[str, ...] = (), images: str | None = None) -> int:
    """Check that the named arrays are one row per input (``ids``: 1-d strings or integers; ``ints``:
    1-d integers; ``floats``: 1-d finite numbers; ``images``: (n, 28, 28) finite numbers) and
    return n; CorruptObject naming the key and the array otherwise."""
    names = ids + ints + floats + ((images,) if images else ())
    _need(store, k, arrays, names)
    n = len(arrays[names[0]]) if arrays[names[0]].ndim else -1
    for name in names:
        a = arrays[name]
        shape = (n, *IMAGE_SHAPE) if name == images else (n,)
        if a.shape != shape:
            raise _corrupt(store, k, f"array {name!r} has shape {a.shape}, expected {shape}")
        kinds = "UiuS" if name in ids else "iu" if name in ints else "iuf"
        if a.dtype.kind not in kinds:
            raise _corrupt(store, k, f"array {name!r} has dtype {a.dtype}, expected "
                           f"{'ids' if name in ids else 'integers' if name in ints else 'numbers'}")
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise _corrupt(store, k, f"array {name!r} holds NaN or infinite values")
    return n


def read_sample(store: ObjectStore, cycle: str) -> SampleRecord:
    """The cycle's sample; KeyNotFound when there is none, CorruptObject naming the key when
    ``sample.json`` or ``sample.npz`` is not a sample record (arrays missing, of another dtype or
    length, draws outside the drawn inputs, NaN)."""
    meta_key, arrays_key = key(cycle, "sample.json"), key(cycle, "sample.npz")
    try:
        raw = store.get_json(meta_key)
        arrays = store.get_arrays(arrays_key)
    except KeyNotFound:
        raise KeyNotFound(f"cycle {cycle!r} has no sample in {store.url} (run sample-operational first)") from None
    meta = parse_object(store, meta_key, _SampleMeta, raw).model_dump()
    if "pool_ids" in arrays:  # a record from before the pool stayed in the sampling step
        n = _rows(store, arrays_key, arrays, ids=("pool_ids",), ints=("pool_predictions",), floats=("pool_p_correct",))
        build = lambda: Pool(ids=arrays["pool_ids"], p_correct=arrays["pool_p_correct"],  # noqa: E731
                             predictions=arrays["pool_predictions"])
    else:
        n = _rows(store, arrays_key, arrays, ids=("ids",), ints=("predictions",), floats=("p_correct",))
        _need(store, arrays_key, arrays, ("pool_size", "oracle_accuracy"))
        size, accuracy = _scalar(store, arrays_key, arrays, "pool_size"), _scalar(store, arrays_key, arrays, "oracle_accuracy")
        if size != int(size) or not 0 <= accuracy <= 1:
            raise _corrupt(store, arrays_key, f"pool_size {size!r} / oracle_accuracy {accuracy!r} out of range")
        build = lambda: SampledPool(ids=arrays["ids"], p_correct=arrays["p_correct"],  # noqa: E731
                                    predictions=arrays["predictions"], size=int(size), oracle_accuracy=accuracy)
    draws = _rows(store, arrays_key, arrays, ints=("indices", "batch", *(("stratum",) if "stratum" in arrays else ())),
                  floats=tuple(f for f in ("selection_prob", "control", "control_mean") if f in arrays))
    if draws and (arrays["indices"].min() < 0 or arrays["indices"].max() >= n or arrays["batch"].min() < 0):
        raise _corrupt(store, arrays_key, f"draws point outside the {n} drawn inputs (indices "
                       f"{arrays['indices'].min()}..{arrays['indices'].max()}) or have a negative batch")
    for name, length in (("holdout", draws), ("queued", n)):
        if name in arrays and (arrays[name].shape != (length,) or arrays[name].dtype.kind != "b"):
            raise _corrupt(store, arrays_key, f"array {name!r} must be {length} booleans, "
                           f"got {arrays[name].dtype} of shape {arrays[name].shape}")
    _need(store, arrays_key, arrays, ("holdout",))
    design = meta.pop("design")
    meta.pop("cycle", None)
    try:
        sample = Sample(indices=arrays["indices"], batch=arrays["batch"],
                        selection_prob=arrays.get("selection_prob"), stratum=arrays.get("stratum"),
                        control=arrays.get("control"), control_mean=arrays.get("control_mean"))
        return SampleRecord(pool=build(), sample=sample, holdout=arrays["holdout"], design=design, meta=meta,
                            queued=arrays.get("queued"))
    except ValueError as exc:  # the pool's and sample's own checks (ids unique, p_correct in [0, 1], ...)
        raise _corrupt(store, arrays_key, f"is not a valid sample: {exc}") from None


def read_sample_inputs(store: ObjectStore, cycle: str) -> tuple[np.ndarray, np.ndarray]:
    """(ids, images) of the inputs to label; CorruptObject naming the key when they do not pair up."""
    k = key(cycle, "sample-inputs.npz")
    arrays = store.get_arrays(k)
    _rows(store, k, arrays, ids=("ids",), images="inputs")
    return arrays["ids"].astype(str), arrays["inputs"]


def write_labels(store: ObjectStore, cycle: str, ids: np.ndarray, labels: np.ndarray, backend: str) -> None:
    store.put_arrays(key(cycle, "labels.npz"), ids=np.asarray(ids).astype(str),
                     labels=np.asarray(labels, dtype=np.int64), backend=np.array(backend))


def read_labels(store: ObjectStore, cycle: str) -> dict[str, int]:
    """id -> label for every labeled sampled input (UNLABELED ones left out)."""
    k = key(cycle, "labels.npz")
    try:
        arrays = store.get_arrays(k)
    except KeyNotFound:
        raise KeyNotFound(f"cycle {cycle!r} has no labels in {store.url} (run collect-labels first)") from None
    _rows(store, k, arrays, ids=("ids",), ints=("labels",))
    _check_labels(store, k, arrays["labels"], UNLABELED)
    return {i: int(y) for i, y in zip(arrays["ids"].astype(str), arrays["labels"]) if y != UNLABELED}


def _check_labels(store: ObjectStore, k: str, labels: np.ndarray, lowest: int) -> None:
    if labels.size and (labels.min() < lowest or labels.max() >= N_CLASSES):
        raise _corrupt(store, k, f"array 'labels' holds {labels.min()}..{labels.max()}, outside "
                       f"{lowest}..{N_CLASSES - 1}")


def read_holdout(store: ObjectStore, cycle: str) -> dict[str, np.ndarray]:
    """``images`` (n, 28, 28), ``labels`` (n,) in 0..9 and ``ids`` (n,) of the held-out inputs (and
    any extra arrays stored with them); CorruptObject naming the key when they are not that."""
    k = key(cycle, "holdout.npz")
    try:
        arrays = store.get_arrays(k)
    except KeyNotFound:
        raise KeyNotFound(f"cycle {cycle!r} has no held-out labeled inputs in {store.url}") from None
    _rows(store, k, arrays, ids=("ids",), ints=("labels",), images="images")
    _check_labels(store, k, arrays["labels"], 0)
    return arrays
