"""evaluate: the challenger against the champion, on held-out operational inputs and on clean data.

Operational side: the held-out draws of the cycle's sample (never trained on, see
:mod:`daic.components.sample_operational.holdout`) form a sample of the same design, so the design's
estimator gives each model's operational accuracy from them. The champion is judged by the
predictions it actually served (logged with the inputs), the challenger by predicting the same
inputs. Clean side: both models on the clean test split (``clean_limit`` > 0 uses its first
``clean_limit`` images). The decision (:mod:`.decision`) compares the challenger with the
champion's offline interval from estimate-accuracy.

**With the input filter** (issue 21): when the cycle's fit-filter step adopted a filter
(``cycles/<c>/filter.json`` names ``filter_version``), the same held-out draws also give the
challenger behind that filter (its alignment search scoring with the challenger) and the champion
behind it, and :func:`daic.operators.reconcile.choose_serving` chooses what serves among the
challenger alone, the challenger behind the filter and the champion behind the filter (when the
filter went in). The challenger variant judged by the promotion rule is the chosen one; a chosen
filtered challenger gets a filter version of its own (the same weights, registered as wrapping the
challenger, parent the cycle's filter), which the operator puts in front of it at promotion.

Writes ``cycles/<c>/evaluation.json`` and adds the challenger to ``cycles/<c>/result.json``
(``champion_accuracy`` is the champion's offline estimate, ``challenger_accuracy`` the challenger's
operational estimate; ``promote`` is this step's decision, which the operator should follow).
Two attempts of one cycle at once (a KFP retry while the first still writes) never mix their
records: ``evaluation.json`` is replaced only if it is still the one the attempt began with, and the
result is merged only while that record is still the attempt's own; the attempt that lost raises
``EvaluationConflict``. A rerun after an attempt finished replaces both records.
"""
from __future__ import annotations

import logging
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any, Optional

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from daic.components import cycle_store
from daic.components.estimate_accuracy.logic import labeled_subsample, write_result
from daic.components.evaluate.decision import PromotionDecision, PromotionRule, decide_promotion
from daic.components.sample_operational.designs import make_design
from daic.components.train import registry_access
from daic.sampling.paired import PairedComparison, compare_paired
from daic.sampling.sample import Estimate, check_level
from daic.storage import KeyNotFound, ObjectStore, PreconditionFailed, open_store
from daic.storage.parsed import read_object

log = logging.getLogger(__name__)


class EvaluationConflict(RuntimeError):
    """Another evaluate attempt of the same cycle wrote its record first or overtook this one's:
    this attempt's result was not recorded (the cycle's records are the other attempt's)."""


def _record_etag(store: ObjectStore, key: str) -> str | None:
    """The ETag of the record at ``key`` now; None when there is none yet."""
    try:
        return store.get_with_etag(key)[1]
    except KeyNotFound:
        return None


@dataclass(frozen=True)
class EvaluateConfig:
    model_name: str = "mnist"
    champion_version: str = ""
    level: float = 0.95
    clean_tolerance: float = 0.01
    clean_limit: int = 0
    wrapped_assessor: bool = True  # fit the sidecar's assessor behind a chosen challenger's filter

    def __post_init__(self) -> None:
        check_level(self.level)
        PromotionRule(self.clean_tolerance)
        if self.clean_limit < 0:
            raise ValueError(f"clean_limit must be >= 0 (0 = the whole test split), got {self.clean_limit!r}")


@dataclass(frozen=True)
class EvaluateResult:
    champion_version: str
    challenger_version: str
    champion_operational: Estimate
    challenger_operational: Estimate
    champion_interval: tuple[float, float, float]
    champion_clean: float
    challenger_clean: float
    decision: PromotionDecision
    serving: dict[str, Any] | None = None  # the choice with the filter (issue 21); None: no filter adopted
    paired: PairedComparison | None = None  # the judged challenger against the champion, same draws (information)

    def metrics(self) -> dict[str, float]:
        """What the Kubeflow UI shows for this step."""
        return {
            "challenger_operational_accuracy": self.challenger_operational.accuracy,
            "challenger_operational_lower": self.challenger_operational.lower,
            "challenger_operational_upper": self.challenger_operational.upper,
            "champion_holdout_accuracy": self.champion_operational.accuracy,
            "champion_offline_accuracy": self.champion_interval[0],
            "champion_offline_upper": self.champion_interval[2],
            "challenger_clean_accuracy": self.challenger_clean,
            "champion_clean_accuracy": self.champion_clean,
            "holdout_labels": float(self.challenger_operational.n_labels),
            "promote": float(self.decision.promote),
            **({} if self.paired is None else {"paired_difference": self.paired.difference,
                                               "paired_lower": self.paired.lower,
                                               "paired_better": float(self.paired.better)}),
            **{k: float(v) for k, v in (self.serving or {}).items()
               if k.endswith("_accuracy") and isinstance(v, (int, float))},
        }


def operational_estimates(record: cycle_store.SampleRecord, labels: dict[str, int],
                          challenger_predictions: dict[str, int], level: float,
                          *others: dict[str, int]) -> tuple[Estimate, ...]:
    """(champion, challenger, *others) design estimates on the labeled held-out draws (``others``:
    more models' predictions by input id, e.g. behind the filter)."""
    design = make_design(record.design["name"], record.design.get("params"))
    sub, y = labeled_subsample(record, labels, draws=record.holdout)
    if sub.n_draws < 2:
        raise ValueError(f"only {sub.n_draws} labeled held-out draws: cannot judge the challenger")
    ids = record.pool.ids[sub.indices]
    champion_correct = record.pool.predictions[sub.indices] == y
    return (design.estimate(record.pool, sub, champion_correct, level),
            *(design.estimate(record.pool, sub, np.array([p[i] for i in ids]) == y, level)
              for p in (challenger_predictions, *others)))


def paired_against_champion(record: cycle_store.SampleRecord, labels: dict[str, int], predictions: dict[str, int],
                            level: float) -> Optional[PairedComparison]:
    """The model predicting ``predictions`` against the champion's served predictions on the same
    labeled held-out draws (:mod:`daic.sampling.paired`); None where the design has no valid paired
    bound (the with-replacement designs) or a stratum has fewer than 2 held-out draws. Recorded
    beside the promotion rule, not used by it: benchmarks/promotion_rule.py measures both."""
    design = make_design(record.design["name"], record.design.get("params"))
    sub, y = labeled_subsample(record, labels, draws=record.holdout)
    ids = record.pool.ids[sub.indices]
    try:
        return compare_paired(design, record.pool, sub, record.pool.predictions[sub.indices] == y,
                              np.array([predictions[i] for i in ids]) == y, level)
    except ValueError as exc:
        log.info("no paired comparison: %s", exc)
        return None


class _Interval(BaseModel):
    """The champion's offline estimate: finite accuracies in [0, 1], lower <= accuracy <= upper."""

    model_config = ConfigDict(extra="ignore", strict=True)  # strict: "0.9" is not a figure
    accuracy: float = Field(ge=0, le=1)
    lower: float = Field(ge=0, le=1)
    upper: float = Field(ge=0, le=1)

    @model_validator(mode="after")
    def _ordered(self) -> "_Interval":
        if not self.lower <= self.accuracy <= self.upper:
            raise ValueError(f"not lower <= accuracy <= upper: {self.lower}, {self.accuracy}, {self.upper}")
        return self


class EstimateRecord(BaseModel):
    """``cycles/<c>/estimate.json`` as the estimate step writes it, the part evaluate compares with."""

    model_config = ConfigDict(extra="ignore")
    estimate: _Interval


class FilterRecord(BaseModel):
    """``cycles/<c>/filter.json`` (fit-filter), the part evaluate reads."""

    model_config = ConfigDict(extra="allow")
    filter_version: Optional[str] = None
    gate: Optional[str] = None


def champion_interval_of(store: ObjectStore, cycle: str) -> tuple[float, float, float]:
    """(accuracy, lower, upper) of the champion's offline estimate: CorruptObject naming the key for
    a NaN, a string, a figure outside [0, 1] or a missing one (it decides the promotion)."""
    est = read_object(store, cycle_store.key(cycle, "estimate.json"), EstimateRecord).estimate
    return est.accuracy, est.lower, est.upper


def read_filter_record(store: ObjectStore, cycle: str) -> Optional[dict]:
    """The fit-filter step's record when it adopted a filter (None: no filter to judge);
    CorruptObject naming the key when it is not a record (it was read as "no filter")."""
    key = cycle_store.key(cycle, "filter.json")
    if not store.exists(key):
        return None
    record = read_object(store, key, FilterRecord)
    return record.model_dump() if record.filter_version else None


def filter_for(store: ObjectStore, model_name: str, filter_version: str, model_version: str, notes: dict):
    """A filter version wrapping ``model_version``: the same weights as ``filter_version`` (its search
    then scores with that model), parent ``filter_version``; the filter itself when it wraps it already."""
    from daic.filters.registry import FilterRegistry

    registry = FilterRegistry(store, model_name)
    card = registry.card(filter_version)
    if registry.wraps(filter_version) == model_version:
        return card
    from daic.filters.network import FilterNet

    net = FilterNet()
    net.load_state_dict(registry.state_dict(filter_version))
    data = card.data.model_copy(update={"notes": {**card.data.notes, **notes, "wraps": f"{model_name}/{model_version}"}})
    config = {k: v for k, v in card.train_config.items() if k not in ("classifier", "classifier_version")}
    return registry.register_filter(net=net, data=data, wraps_version=model_version, parent=filter_version,
                                    metrics=dict(card.metrics), history=list(card.history), train_config=config)


def clean_accuracy(model, limit: int = 0, net=None, gate: str = "off", threshold: float = 0.0) -> float:
    """On the clean test split (its first ``limit`` images; 0: all), behind ``net`` in ``gate`` mode if given."""
    from daic.data.mnist import load_split

    test = load_split("test")
    images, labels = (test.images[:limit], test.labels[:limit]) if limit else (test.images, test.labels)
    if net is not None:
        from daic.filters.apply import wrapped_predictions

        return float(np.mean(wrapped_predictions(model, net, np.asarray(images, np.float32), gate, threshold)[0] == labels))
    return float(np.mean(registry_access.predict(model, images) == labels))


def run(store: ObjectStore | str, cycle: str, challenger_version: str, config: EvaluateConfig) -> EvaluateResult:
    store = open_store(store or None) if isinstance(store, str) else store
    if not challenger_version:
        raise ValueError("challenger_version is empty: nothing to evaluate")
    # Two attempts of one cycle (a retry while the first still runs): the record is replaced only
    # if it is still the one there when this attempt began (compare-and-set below).
    evaluation_key = cycle_store.key(cycle, "evaluation.json")
    began_with = _record_etag(store, evaluation_key)
    record = cycle_store.read_sample(store, cycle)
    labels = cycle_store.read_labels(store, cycle)
    champion_interval = champion_interval_of(store, cycle)
    champion_version = registry_access.champion_version(store, config.model_name, config.champion_version or None)
    champion = registry_access.load_model(store, config.model_name, champion_version)
    challenger = registry_access.load_model(store, config.model_name, challenger_version)

    held = cycle_store.read_holdout(store, cycle)
    held_ids = held["ids"].astype(str)
    predicted = registry_access.predict(challenger, held["images"])
    challenger_predictions = dict(zip(held_ids, predicted.tolist()))
    frecord = read_filter_record(store, cycle)
    serving: dict[str, Any] | None = None
    champ_clean = clean_accuracy(champion, config.clean_limit)
    chall_clean = clean_accuracy(challenger, config.clean_limit)
    rule = PromotionRule(config.clean_tolerance)
    if frecord is None:
        champ_op, chall_op = operational_estimates(record, labels, challenger_predictions, config.level)
        chosen_op, chosen_net, gate, threshold = chall_op, None, "off", 0.0
        chosen_predictions = challenger_predictions
    else:
        from daic.filters.apply import wrapped_predictions
        from daic.filters.registry import FilterRegistry
        from daic.operators.reconcile import choose_serving

        registry = FilterRegistry(store, config.model_name)
        version, gate = str(frecord["filter_version"]), str(frecord.get("gate") or "gated")
        threshold = float(registry.card(version).metrics.get("gate_threshold", 0.0))
        images = np.asarray(held["images"], np.float32)
        behind = {}
        for name, model in (("challenger", challenger), ("champion", champion)):
            p, _ = wrapped_predictions(model, registry.load_filter(version, classifier=model), images, gate, threshold)
            behind[name] = dict(zip(held_ids, p.tolist()))
        champ_op, chall_op, chall_f_op, champ_f_op = operational_estimates(
            record, labels, challenger_predictions, config.level, behind["challenger"], behind["champion"])
        in_service = frecord.get("decision") in ("deploy", "keep")
        # Both variants' clean accuracy before the choice: one the clean rule would refuse must not
        # be chosen over one it accepts (choose_challenger_variant).
        chall_net = registry.load_filter(version, classifier=challenger)
        chall_f_clean = clean_accuracy(challenger, config.clean_limit, chall_net, gate, threshold)
        choice = choose_serving(champion=champion_interval[2], wrapped_champion=champ_f_op.accuracy,
                                challenger=chall_op.accuracy, challenger_filtered=chall_f_op.accuracy,
                                filter_in_service=in_service,
                                alone_keeps_clean=rule.keeps_clean(chall_clean, champ_clean),
                                filtered_keeps_clean=rule.keeps_clean(chall_f_clean, champ_clean))
        use_filter = choice.variant == "challenger+filter"  # the variant judged, whether or not it serves
        chosen_op = chall_f_op if use_filter else chall_op
        chosen_predictions = behind["challenger"] if use_filter else challenger_predictions
        chosen_net = chall_net if use_filter else None
        serving = {"serve": choice.serve, "serve_reason": choice.reason, "filter_version": version, "gate": gate,
                   "filter_in_service": in_service,
                   "challenger_alone_accuracy": chall_op.accuracy, "challenger_filter_accuracy": chall_f_op.accuracy,
                   "wrapped_champion_accuracy": champ_f_op.accuracy, "champion_upper": champion_interval[2],
                   "challenger_alone_clean": chall_clean, "challenger_filter_clean": chall_f_clean}
    paired = paired_against_champion(record, labels, chosen_predictions, config.level)
    chosen_clean = chall_f_clean if chosen_net is not None else chall_clean
    decision = decide_promotion(chosen_op.accuracy, champion_interval[2], chosen_clean, champ_clean, rule)
    if serving is not None:
        promote = decision.promote and serving["serve"] in ("challenger", "challenger+filter")
        if decision.promote and not promote:
            decision = PromotionDecision(False, decision.improves_operational, decision.keeps_clean,
                                         f"{decision.reason}; but {serving['serve_reason']}")
        if promote and chosen_net is not None:
            own = filter_for(store, config.model_name, serving["filter_version"], challenger_version,
                             {"cycle": cycle, "purpose": "challenger"})
            serving["challenger_filter_version"] = own.version
            if config.wrapped_assessor:  # the sidecar's estimate must cover the challenger behind it
                try:
                    from daic.filters.assessor import fit_wrapped_assessor

                    serving["wrapped_assessor"] = fit_wrapped_assessor(store, config.model_name, own.version,
                                                                       serving["gate"])["key"]
                except Exception as exc:  # noqa: BLE001 - the sidecar scores with the model's own
                    log.exception("cycle %s: no wrapped assessor for filter %s", cycle, own.version)
                    serving["wrapped_assessor_error"] = f"{type(exc).__name__}: {exc}"
        if not promote:
            serving["serve"] = "champion+filter" if serving["filter_in_service"] else "champion"
    result = EvaluateResult(champion_version=champion_version, challenger_version=challenger_version,
                            champion_operational=champ_op, challenger_operational=chosen_op,
                            champion_interval=champion_interval, champion_clean=champ_clean,
                            challenger_clean=chosen_clean, decision=decision, serving=serving, paired=paired)
    evaluation = {
        "cycle": cycle, "champion_version": champion_version, "challenger_version": challenger_version,
        "champion_holdout": asdict(champ_op), "challenger_holdout": asdict(chosen_op),
        "champion_offline": dict(zip(("accuracy", "lower", "upper"), champion_interval)),
        "champion_clean": champ_clean, "challenger_clean": chosen_clean, "challenger_alone_clean": chall_clean,
        "clean_limit": config.clean_limit, "rule": asdict(rule),
        "decision": asdict(decision), "serving": serving, "created": time.time(), "attempt": uuid.uuid4().hex,
        "paired": None if paired is None else {**asdict(paired), "better": paired.better},
    }
    try:
        written = store.put_json_if_unchanged(evaluation_key, evaluation, began_with)
    except PreconditionFailed:
        raise EvaluationConflict(
            f"cycle {cycle!r}: another evaluate attempt wrote {evaluation_key} while this one ran; "
            f"its record stands and this attempt's ({challenger_version} against {champion_version}) "
            "was not written") from None

    def still_ours() -> None:  # a later attempt replaced the record: its result must stand
        if _record_etag(store, evaluation_key) != written:
            raise EvaluationConflict(
                f"cycle {cycle!r}: a later evaluate attempt replaced {evaluation_key}; this attempt's "
                "result was not written")

    write_result(store, cycle, {
        "champion_version": champion_version,
        "champion_accuracy": champion_interval[0],
        "challenger_version": challenger_version,
        "challenger_accuracy": chosen_op.accuracy,
        "promote": decision.promote,
        "promotion_reason": decision.reason,
        **({"serve": serving["serve"], "serve_reason": serving["serve_reason"],
            "challenger_filter_version": serving.get("challenger_filter_version"),
            "challenger_filter_gate": serving["gate"] if serving.get("challenger_filter_version") else None,
            "challenger_alone_accuracy": serving["challenger_alone_accuracy"],
            "challenger_filter_accuracy": serving["challenger_filter_accuracy"],
            "wrapped_champion_holdout_accuracy": serving["wrapped_champion_accuracy"]} if serving else {}),
    }, guard=still_ours)
    log.info("cycle %s: %s %s (%s)", cycle, challenger_version,
             "beats the champion" if decision.promote else "does not replace the champion", decision.reason)
    return result
