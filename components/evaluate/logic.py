"""evaluate: the challenger against the champion, on held-out operational inputs and on clean data.

Operational side: the held-out draws of the cycle's sample (never trained on, see
:mod:`daic.components.sample_operational.holdout`) form a sample of the same design, so the design's
estimator gives each model's operational accuracy from them. The champion is judged by the
predictions it actually served (logged with the inputs), the challenger by predicting the same
inputs. Clean side: both models on the clean test split (``clean_limit`` > 0 uses its first
``clean_limit`` images). The decision (:mod:`.decision`) compares the challenger with the
champion's offline interval from estimate-accuracy.

Writes ``cycles/<c>/evaluation.json`` and adds the challenger to ``cycles/<c>/result.json``
(``champion_accuracy`` is the champion's offline estimate, ``challenger_accuracy`` the challenger's
operational estimate; ``promote`` is this step's decision, which the operator should follow).
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass

import numpy as np

from daic.components import cycle_store
from daic.components.estimate_accuracy.logic import labeled_subsample, write_result
from daic.components.evaluate.decision import PromotionDecision, PromotionRule, decide_promotion
from daic.components.sample_operational.designs import make_design
from daic.components.train import registry_access
from daic.sampling.sample import Estimate, check_level
from daic.storage import ObjectStore, open_store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvaluateConfig:
    model_name: str = "mnist"
    champion_version: str = ""
    level: float = 0.95
    clean_tolerance: float = 0.01
    clean_limit: int = 0

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
        }


def operational_estimates(record: cycle_store.SampleRecord, labels: dict[str, int],
                          challenger_predictions: dict[str, int], level: float) -> tuple[Estimate, Estimate]:
    """(champion, challenger) design estimates on the labeled held-out draws."""
    design = make_design(record.design["name"], record.design.get("params"))
    sub, y = labeled_subsample(record, labels, draws=record.holdout)
    if sub.n_draws < 2:
        raise ValueError(f"only {sub.n_draws} labeled held-out draws: cannot judge the challenger")
    ids = record.pool.ids[sub.indices]
    champion_correct = record.pool.predictions[sub.indices] == y
    challenger_correct = np.array([challenger_predictions[i] for i in ids]) == y
    return (design.estimate(record.pool, sub, champion_correct, level),
            design.estimate(record.pool, sub, challenger_correct, level))


def clean_accuracy(model, limit: int = 0) -> float:
    from daic.data.mnist import load_split

    test = load_split("test")
    images, labels = (test.images[:limit], test.labels[:limit]) if limit else (test.images, test.labels)
    return float(np.mean(registry_access.predict(model, images) == labels))


def run(store: ObjectStore | str, cycle: str, challenger_version: str, config: EvaluateConfig) -> EvaluateResult:
    store = open_store(store or None) if isinstance(store, str) else store
    if not challenger_version:
        raise ValueError("challenger_version is empty: nothing to evaluate")
    record = cycle_store.read_sample(store, cycle)
    labels = cycle_store.read_labels(store, cycle)
    estimate_doc = store.get_json(cycle_store.key(cycle, "estimate.json"))["estimate"]
    champion_interval = (estimate_doc["accuracy"], estimate_doc["lower"], estimate_doc["upper"])
    champion_version = registry_access.champion_version(store, config.model_name, config.champion_version or None)
    champion = registry_access.load_model(store, config.model_name, champion_version)
    challenger = registry_access.load_model(store, config.model_name, challenger_version)

    held = cycle_store.read_holdout(store, cycle)
    predicted = registry_access.predict(challenger, held["images"])
    challenger_predictions = dict(zip(held["ids"].astype(str), predicted.tolist()))
    champ_op, chall_op = operational_estimates(record, labels, challenger_predictions, config.level)
    champ_clean = clean_accuracy(champion, config.clean_limit)
    chall_clean = clean_accuracy(challenger, config.clean_limit)
    decision = decide_promotion(chall_op.accuracy, champion_interval[2], chall_clean, champ_clean,
                                PromotionRule(config.clean_tolerance))
    result = EvaluateResult(champion_version=champion_version, challenger_version=challenger_version,
                            champion_operational=champ_op, challenger_operational=chall_op,
                            champion_interval=champion_interval, champion_clean=champ_clean,
                            challenger_clean=chall_clean, decision=decision)
    store.put_json(cycle_store.key(cycle, "evaluation.json"), {
        "cycle": cycle, "champion_version": champion_version, "challenger_version": challenger_version,
        "champion_holdout": asdict(champ_op), "challenger_holdout": asdict(chall_op),
        "champion_offline": dict(zip(("accuracy", "lower", "upper"), champion_interval)),
        "champion_clean": champ_clean, "challenger_clean": chall_clean,
        "clean_limit": config.clean_limit, "rule": asdict(PromotionRule(config.clean_tolerance)),
        "decision": asdict(decision), "created": time.time(),
    })
    write_result(store, cycle, {
        "champion_version": champion_version,
        "champion_accuracy": champion_interval[0],
        "challenger_version": challenger_version,
        "challenger_accuracy": chall_op.accuracy,
        "promote": decision.promote,
        "promotion_reason": decision.reason,
    })
    log.info("cycle %s: %s %s (%s)", cycle, challenger_version,
             "beats the champion" if decision.promote else "does not replace the champion", decision.reason)
    return result
