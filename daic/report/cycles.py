"""What the report needs from each cycle's records under ``cycles/<c>/`` (see components/cycle_store)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from daic.storage import KeyNotFound, ObjectStore


@dataclass
class CycleView:
    """One cycle as the report shows it; every field is optional because a cycle can stop early."""

    cycle: str
    estimate: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    evaluation: dict[str, Any] = field(default_factory=dict)
    deploy: dict[str, Any] = field(default_factory=dict)
    filter: dict[str, Any] = field(default_factory=dict)  # the fit-filter step's record (filter.json)
    record: dict[str, Any] = field(default_factory=dict)  # the operator's cycle record (record.json)
    mispredicted_inputs: np.ndarray | None = None  # (k, 28, 28)
    mispredicted_truth: np.ndarray | None = None
    mispredicted_pred: np.ndarray | None = None

    @property
    def labels_used(self) -> int | None:
        return _first(self.estimate, "n_labels")

    @property
    def srs_labels(self) -> int | None:
        return _first(self.estimate, "srs_labels_needed")

    @property
    def remedy(self) -> str | None:
        """'filter deploy v0003 (champion+filter 0.86 vs 0.70 on 200 labels): <reason>' or None."""
        f = self.filter
        operator = (self.record.get("cycle") or {}).get("remedy") or {}
        if operator.get("decision"):  # the operator's decision wins over the step's own
            outcome = f" -> {operator['outcome']}" if operator.get("outcome") else ""
            f = {**f, "decision": f"{operator['decision']}", "reason": f"{operator.get('reason', '')}{outcome}",
                 "filter_version": operator.get("filterVersion") or f.get("filter_version")}
        if not f.get("decision"):
            return None
        figures = ""
        if isinstance(f.get("filter_accuracy"), (int, float)) and isinstance(f.get("champion_accuracy"), (int, float)):
            figures = (f" (champion+filter {f['filter_accuracy']:.3f} vs champion {f['champion_accuracy']:.3f} "
                       f"on {f.get('labels', '?')} labels)")
        version = f" {f['filter_version']}" if f.get("filter_version") and f["decision"] == "deploy" else ""
        return f"filter {f['decision']}{version}{figures}: {f.get('reason', '')}"

    @property
    def decision(self) -> str | None:
        """The operator's ending when its cycle record is there ('challenger-not-better: <message>'),
        else evaluate's: 'promote v0002', 'keep v0001: <reason>'; None when neither ran. (With the
        filter in service the operator holds the challenger to the wrapped champion, so it may
        refuse a challenger that evaluate, comparing with the bare champion, would promote.)"""
        summary = self.record.get("summary") or {}
        if summary.get("decision"):
            return f"{summary['decision']}: {summary.get('message', '')}"
        d = self.evaluation.get("decision")
        if not isinstance(d, dict):
            return None
        challenger = self.evaluation.get("challenger_version", "challenger")
        if d.get("promote"):
            return f"promote {challenger}"
        return f"keep {self.evaluation.get('champion_version', 'champion')}: {d.get('reason', '')}"


def _first(d: dict[str, Any], *names: str) -> Any:
    for n in names:
        if d.get(n) is not None:
            return d[n]
    return None


class _EstimateFigures(BaseModel):
    """The figures of ``estimate.json`` the report prints: numbers, finite (parse_object refuses
    NaN/inf), in range; the rest of the record passes through."""

    model_config = ConfigDict(extra="allow")

    accuracy: Optional[float] = Field(None, ge=0, le=1)
    lower: Optional[float] = Field(None, ge=0, le=1)
    upper: Optional[float] = Field(None, ge=0, le=1)
    n_labels: Optional[int] = Field(None, ge=0)


class _EstimateRecord(BaseModel):
    model_config = ConfigDict(extra="allow")

    estimate: Optional[_EstimateFigures] = None
    srs_labels_needed: Optional[int] = Field(None, ge=0)


class _Record(BaseModel):
    """Any other cycle record: a JSON object (its fields are read with ``.get`` and type checks)."""

    model_config = ConfigDict(extra="allow")


def _json(store: ObjectStore, key: str, model: type[BaseModel] = _Record) -> dict[str, Any]:
    """The record at ``key`` as a dict ({} when absent); CorruptObject naming the key when it is not
    a JSON object of that shape, rather than a report built on garbage or a TypeError."""
    from daic.storage.parsed import parse_object

    try:
        value = store.get_json(key)
    except KeyNotFound:
        return {}
    return parse_object(store, key, model, value).model_dump(exclude_unset=True)


def list_cycles(store: ObjectStore) -> list[str]:
    return sorted({k.split("/")[1] for k in store.list("cycles/")})


def load_cycle(store: ObjectStore, cycle: str) -> CycleView:
    # estimate.json (estimate-accuracy): {"estimate": {accuracy, lower, upper, n_labels, ...},
    # "srs_labels_needed": ..., "decision": ...}; flattened to the estimate's fields here.
    doc = _json(store, f"cycles/{cycle}/estimate.json", _EstimateRecord)
    estimate = dict(doc.get("estimate") or {})
    if doc.get("srs_labels_needed") is not None:
        estimate["srs_labels_needed"] = doc["srs_labels_needed"]
    view = CycleView(cycle=cycle, estimate=estimate,
                     train=_json(store, f"cycles/{cycle}/train.json"),
                     evaluation=_json(store, f"cycles/{cycle}/evaluation.json"),
                     deploy=_json(store, f"cycles/{cycle}/deploy.json"),
                     filter=_json(store, f"cycles/{cycle}/filter.json"),
                     record=_json(store, f"cycles/{cycle}/record.json"))
    try:
        sample = store.get_arrays(f"cycles/{cycle}/sample.npz")
        inputs = store.get_arrays(f"cycles/{cycle}/sample-inputs.npz")
        labels = store.get_arrays(f"cycles/{cycle}/labels.npz")
    except KeyNotFound:
        return view
    _check_arrays(store, cycle, sample, inputs, labels)
    # sample.npz holds the drawn inputs (ids, predictions); records before issue 22 the whole pool
    ids, preds = (sample["ids"], sample["predictions"]) if "ids" in sample else (sample["pool_ids"], sample["pool_predictions"])
    pred_of = dict(zip(ids.astype(str), preds.astype(int)))
    truth_of = {i: int(y) for i, y in zip(labels["ids"].astype(str), labels["labels"]) if y >= 0}
    rows = [(k, truth_of[i], pred_of[i]) for k, i in enumerate(inputs["ids"].astype(str))
            if i in truth_of and i in pred_of and truth_of[i] != pred_of[i]]
    if rows:
        idx, truth, pred = map(np.array, zip(*rows))
        view.mispredicted_inputs = inputs["inputs"][idx]
        view.mispredicted_truth, view.mispredicted_pred = truth, pred
    return view


def _check_arrays(store: ObjectStore, cycle: str, sample, inputs, labels) -> None:
    """The arrays the mispredictions grid pairs up: present, 1-d ids of one length with their
    predictions/labels (integers), images (n, 28, 28); CorruptObject naming the key otherwise."""
    from daic.storage.parsed import CorruptObject

    legacy = "ids" not in sample
    wants = ((f"cycles/{cycle}/sample.npz", sample, ("pool_ids", "pool_predictions") if legacy else ("ids", "predictions")),
             (f"cycles/{cycle}/labels.npz", labels, ("ids", "labels")),
             (f"cycles/{cycle}/sample-inputs.npz", inputs, ("ids", "inputs")))
    for key, arrays, (ids, values) in wants:
        a, b = arrays.get(ids), arrays.get(values)
        ok = a is not None and b is not None and a.ndim == 1 and b.ndim >= 1 and len(b) == len(a)
        if ok:
            ok = (b.shape[1:] == (28, 28) and b.dtype.kind == "f") if values == "inputs" else \
                 (b.ndim == 1 and b.dtype.kind in "iu")
        if not ok:
            raise CorruptObject(f"{store.url}: object {key!r} does not hold {ids!r} and {values!r} of one "
                                f"length (has: {', '.join(f'{k} {v.dtype}{v.shape}' for k, v in arrays.items())})")
