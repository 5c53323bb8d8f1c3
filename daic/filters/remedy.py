"""The filter remedy of one cycle (issue 21), as the cycle's step calls it: adapt, estimate, decide, serve.

0. at once: estimate the champion behind the **generic** filter (registered before any drift) on
   the cycle's labeled sample; if the rule puts it in, its service record is written before any
   fitting (``generic_in_service_s`` in the record: seconds from the step's start), so a filter
   serves within seconds of the trigger while the adaptation runs;
1. adapt the generic filter to the cycle's unlabeled pool (label-free, warm start, within the
   ``max_seconds`` budget of :data:`ADAPT_DEFAULTS` unless ``adapt`` says otherwise; daic.filters.workflow);
2. on the cycle's labeled sample, estimate the champion alone and behind the generic and the
   adapted filter in each gate mode; the filter and mode adopted are the better on the sample among
   those whose clean validation accuracy (the card's) is at most ``max_clean_loss`` below the
   champion's (the generic one wins where the short adaptation did not help);
3. decide with the operator's pure rule (daic.operators.reconcile.decide_remedy);
4. write the service record (filter in, kept or removed) and the decision with its reason to
   ``cycles/<cycle>/filter.json``.

:func:`remove_when_clean` is the end of the lifecycle: a filter in service is removed once traffic
is clean again (the estimate back above the threshold, no drift alarm).
"""
from __future__ import annotations

import time
from typing import Any, Callable, Optional

import numpy as np

from daic.filters.config import FilterConfig
from daic.filters.registry import FilterService, read_service, write_service


def _record(store, cycle: str, record: dict[str, Any]) -> dict[str, Any]:
    store.put_json(f"cycles/{cycle}/filter.json", record)
    return record


#: the cycle's adaptation: at most 3 epochs on 4,000 base images, stopped after 45 s of fit
#: (FilterConfig.max_seconds), gate calibrated on 1,000 clean validation images
ADAPT_DEFAULTS: dict[str, Any] = {"epochs": 3, "base_limit": 4000, "max_seconds": 45.0, "val_limit": 1000}


def _by_mode(model, net, card, images, labels, max_clean_loss: float) -> dict[str, float]:
    from daic.filters.apply import predictions_by_mode

    m = card.metrics
    allowed = tuple(mode for mode in ("gated", "always")  # no clean validation figures: not adopted
                    if "val_accuracy_alone" in m and f"val_accuracy_{mode}" in m
                    and m["val_accuracy_alone"] - m[f"val_accuracy_{mode}"] <= max_clean_loss)
    threshold = float(m["gate_threshold"])
    return {mode: float((p == labels).mean())
            for mode, (p, _) in predictions_by_mode(model, net, images, threshold, allowed).items()}


def filter_remedy(store, *, classifier: str, champion_version: str, generic_version: str, pool_key: str,
                  labels_prefix: str, cycle: str, remedy: str = "both", drop_confirmed: bool = True,
                  min_improvement: float = 0.0, max_clean_loss: float = 0.003,
                  adapt: Optional[dict[str, Any]] = None, serve: bool = True,
                  write_record: Optional[Callable[[dict[str, Any]], Any]] = None) -> dict[str, Any]:
    """``serve`` False: decide and record, but leave the service record to the caller (the operator
    rolls a filter out as a canary, like a challenger; daic.operators.reconcile). ``write_record``:
    how the decision's record (``cycles/<c>/filter.json``) is written; default a plain put
    (the fit-filter step passes its attempt's compare-and-set, so a retry never interleaves)."""
    from daic.filters.registry import FilterRegistry
    from daic.filters.workflow import train_filter
    from daic.models.inference import predict
    from daic.models.registry import ModelRegistry
    from daic.operators.reconcile import decide_remedy
    from daic.training.data import load_labeled_batches

    started = time.perf_counter()
    in_service = read_service(store, classifier).version is not None
    labeled = load_labeled_batches(store, labels_prefix)
    images, labels = np.asarray(labeled.images, np.float32), np.asarray(labeled.labels)
    model, _ = ModelRegistry(store, classifier).load_networks(champion_version)
    champion_acc = float((predict(model, images).predictions == labels).mean())
    record: dict[str, Any] = {"cycle": cycle, "remedy": str(getattr(remedy, "value", remedy)),
                              "champion_version": champion_version, "labels": int(len(labels)),
                              "champion_accuracy": champion_acc}
    filter_acc, gate, version = None, "gated", None
    if remedy != "retrain" and drop_confirmed:
        registry = FilterRegistry(store, classifier)
        candidates: dict[str, dict[str, float]] = {}
        if generic_version:
            candidates[generic_version] = _by_mode(model, registry.load_filter(generic_version, classifier=model),
                                                   registry.card(generic_version), images, labels, max_clean_loss)
            record["generic_accuracy_by_mode"] = candidates[generic_version]
            if candidates[generic_version] and serve:
                g_gate = max(candidates[generic_version], key=candidates[generic_version].get)
                early = decide_remedy(remedy, drop_confirmed=True, traffic_clean=False, filter_in_service=in_service,
                                      champion_accuracy=champion_acc,
                                      filter_accuracy=candidates[generic_version][g_gate],
                                      min_improvement=min_improvement)
                if early.filter == "deploy":
                    write_service(store, classifier, FilterService(
                        version=generic_version, gate=g_gate, cycle=cycle,
                        reason=f"generic filter at once, while it adapts: {early.reason}"))
                    record["generic_in_service_s"] = time.perf_counter() - started
        config = FilterConfig(classifier=classifier, classifier_version=champion_version, pool_key=pool_key,
                              warm_start_from=generic_version, **{**ADAPT_DEFAULTS, **(adapt or {})})
        outcome = train_filter(store, config, notes={"cycle": cycle})
        candidates[outcome.version] = _by_mode(model, registry.load_filter(outcome.version, classifier=model),
                                               outcome.card, images, labels, max_clean_loss)
        record["adapted_version"], record["filter_accuracy_by_mode"] = outcome.version, candidates[outcome.version]
        scored = [(acc, v == outcome.version, v, mode) for v, modes in candidates.items() for mode, acc in modes.items()]
        version = outcome.version
        if scored:
            filter_acc, _, version, gate = max(scored)  # ties: the adapted filter
        record["filter_version"] = version
    decision = decide_remedy(remedy, drop_confirmed=drop_confirmed, traffic_clean=False,
                             filter_in_service=in_service, champion_accuracy=champion_acc,
                             filter_accuracy=filter_acc, min_improvement=min_improvement)
    record.update({"filter_accuracy": filter_acc, "gate": gate, "decision": decision.filter,
                   "retrain": decision.retrain, "compare_to": decision.compare_to, "reason": decision.reason})
    if not serve:
        pass
    elif decision.filter == "deploy":
        write_service(store, classifier, FilterService(version=version, gate=gate, reason=decision.reason, cycle=cycle))
    elif decision.filter == "remove":
        write_service(store, classifier, FilterService(version=None, reason=decision.reason, cycle=cycle))
    if write_record is not None:
        write_record(record)
        return record
    return _record(store, cycle, record)


def remove_when_clean(store, *, classifier: str, traffic_clean: bool, remedy: str = "both",
                      cycle: Optional[str] = None) -> Optional[FilterService]:
    """Remove the filter in service when traffic is clean again; the new record, or None if nothing changed."""
    from daic.operators.reconcile import decide_remedy

    serving = read_service(store, classifier).version is not None
    d = decide_remedy(remedy, drop_confirmed=False, traffic_clean=traffic_clean, filter_in_service=serving,
                      champion_accuracy=None, filter_accuracy=None)
    if d.filter != "remove":
        return None
    return write_service(store, classifier, FilterService(version=None, reason=d.reason, cycle=cycle))
