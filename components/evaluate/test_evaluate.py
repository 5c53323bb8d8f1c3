"""evaluate alone: the promotion rule's truth table, and the operational comparison on held-out
draws with known truth (the challenger's predictions are given, so no model is needed here)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from daic.components import cycle_store
from daic.components.collect_labels.logic import CollectConfig
from daic.components.collect_labels.logic import run as collect
from daic.components.evaluate.decision import PromotionRule, decide_promotion
from daic.components.evaluate.logic import EvaluateConfig, operational_estimates, paired_against_champion
from daic.components.sample_operational.logic import SampleConfig
from daic.sidecar.records import read_operational
from daic.components.sample_operational.logic import run as sample

SPEC = json.dumps({"name": "sudden", "seed": 3, "batch_size": 50, "n_steps": 8, "drift_start": 4,
                   "corruption": "translate", "severity": 3})


@pytest.mark.parametrize("chall_op,champ_upper,chall_clean,champ_clean,promote,improves,keeps", [
    (0.90, 0.80, 0.98, 0.98, True, True, True),     # better on drift, same on clean
    (0.90, 0.80, 0.975, 0.98, True, True, True),    # loses 0.005 <= 0.01 tolerance
    (0.90, 0.80, 0.97, 0.98, True, True, True),     # loses exactly the tolerance
    (0.90, 0.80, 0.96, 0.98, False, True, False),   # forgets clean data
    (0.80, 0.80, 0.99, 0.98, False, False, True),   # equal to the upper bound is not beyond it
    (0.75, 0.80, 0.99, 0.98, False, False, True),   # inside the champion's interval
    (0.70, 0.80, 0.90, 0.98, False, False, False),  # worse everywhere
])
def test_promotion_truth_table(chall_op, champ_upper, chall_clean, champ_clean, promote, improves, keeps):
    d = decide_promotion(chall_op, champ_upper, chall_clean, champ_clean, PromotionRule(clean_tolerance=0.01))
    assert (d.promote, d.improves_operational, d.keeps_clean) == (promote, improves, keeps)


def test_rule_and_config_errors():
    with pytest.raises(ValueError, match="clean_tolerance must be in"):
        PromotionRule(clean_tolerance=1.5)
    with pytest.raises(ValueError, match="challenger_clean must be an accuracy"):
        decide_promotion(0.9, 0.8, 1.2, 0.9, PromotionRule())
    with pytest.raises(ValueError, match="clean_limit must be >= 0"):
        EvaluateConfig(clean_limit=-5)


@pytest.mark.parametrize("sampler", ["srs", "stratified", "failure-seeking", "active"])
def test_operational_estimates_on_held_out_draws(operational_store, sampler):
    """A perfect challenger scores 1 on the held-out draws and the champion its true accuracy there."""
    store, stream = operational_store
    sample(store, SampleConfig(sampler=sampler, budget=120, cycle="c1", seed=6))
    collect(store, "c1", CollectConfig(backend="simulated", simulated_scenario=SPEC))
    record = cycle_store.read_sample(store, "c1")
    labels = cycle_store.read_labels(store, "c1")
    truth = dict(zip(stream.ids, stream.labels.tolist()))
    perfect = {i: truth[i] for i in record.holdout_ids}
    champion, challenger = operational_estimates(record, labels, perfect, 0.95)
    assert challenger.accuracy == pytest.approx(1.0) or sampler == "active"
    window = read_operational(store, "mnist")  # the pool, as logged
    true_champion = float(np.mean(window.predictions == np.array([truth[i] for i in window.ids])))
    assert champion.lower <= true_champion <= champion.upper
    assert champion.n_draws == int(record.holdout.sum())
    if sampler == "active":  # the difference estimator centres on the oracle, then corrects it
        assert challenger.lower <= 1.0 <= challenger.upper + 1e-9
    # a challenger that copies the champion scores what the champion scores
    copy = {i: int(record.pool.predictions[list(record.pool.ids).index(i)]) for i in record.holdout_ids}
    same, copied = operational_estimates(record, labels, copy, 0.95)
    assert copied.accuracy == pytest.approx(same.accuracy)
    # the paired comparison on the same draws (recorded beside the rule): for the designs it serves,
    # its difference is the difference of the two linear estimates; a copy differs nowhere
    paired = paired_against_champion(record, labels, perfect, 0.95)
    if sampler in ("srs", "stratified"):
        assert paired.difference == pytest.approx(challenger.accuracy - champion.accuracy)
        pos = {i: k for k, i in enumerate(record.pool.ids)}
        wrong = sum(int(record.pool.predictions[pos[i]]) != truth[i] for i in record.holdout_ids)
        assert (paired.b_only, paired.a_only) == (wrong, 0) and wrong > 0
        assert paired.n_draws == champion.n_draws
        tie = paired_against_champion(record, labels, copy, 0.95)
        assert (tie.difference, tie.b_only, tie.a_only, tie.better) == (0.0, 0, 0, False)
    else:  # with replacement: no valid paired bound at these sizes (benchmarks/promotion_rule.py)
        assert paired is None


def test_run_chooses_what_serves_with_the_cycles_filter(operational_store, monkeypatch):
    """With a filter in the cycle's record, the held-out draws judge the challenger alone and behind
    the filter and the champion behind it; choose_serving picks, and a chosen filtered challenger
    gets a filter version of its own (same weights, wrapping the challenger)."""
    import daic.filters.apply as apply
    from daic.components.estimate_accuracy.logic import EstimateConfig
    from daic.components.estimate_accuracy.logic import run as estimate
    from daic.components.evaluate.logic import run as evaluate
    from daic.components.testing.registry import register_untrained
    from daic.components.train import registry_access
    from daic.filters.network import FilterNet
    from daic.filters.registry import FilterRegistry
    from daic.models.card import DataLineage

    store, stream = operational_store
    sample(store, SampleConfig(sampler="srs", budget=120, cycle="c1", seed=6))
    collect(store, "c1", CollectConfig(backend="simulated", simulated_scenario=SPEC))
    register_untrained(store, [None, "v0001"])
    estimate(store, "c1", EstimateConfig(reference_accuracy=0.95))
    filters = FilterRegistry(store, "mnist")
    cycle_filter = filters.register_filter(net=FilterNet(), data=DataLineage(dataset="mnist", base_count=10),
                                           wraps_version="v0001", metrics={"gate_threshold": 0.0})
    store.put_json("cycles/c1/filter.json", {"filter_version": cycle_filter.version, "gate": "always",
                                             "decision": "deploy"})
    truth = {im.astype(np.float32).tobytes(): int(label) for im, label in zip(stream.images, stream.labels)}
    real = apply.wrapped_predictions

    def fingerprint(model) -> float:
        return float(next(model.parameters()).detach().sum())

    def right_behind_the_filter(*which):
        marks = {fingerprint(registry_access.load_model(store, "mnist", v)) for v in which}

        def fake(model, net, images, mode, threshold):  # the filter makes these models right on operational inputs
            predicted, mask = real(model, net, images, mode, threshold)
            if fingerprint(model) in marks:
                predicted = np.array([truth.get(np.asarray(im, np.float32).tobytes(), p)
                                      for im, p in zip(images, predicted)])
            return predicted, mask
        return fake

    config = EvaluateConfig(clean_tolerance=0.9, clean_limit=100, wrapped_assessor=False)
    monkeypatch.setattr(apply, "wrapped_predictions", right_behind_the_filter("v0002"))
    result = evaluate(store, "c1", "v0002", config)
    serving = result.serving
    assert serving["serve"] == "challenger+filter" and result.decision.promote
    recorded = store.get_json("cycles/c1/evaluation.json")["paired"]  # the promoted variant against the champion
    assert recorded["a_only"] == 0 and recorded["b_only"] > 0 and recorded["difference"] == pytest.approx(
        serving["challenger_filter_accuracy"] - result.champion_operational.accuracy)
    assert result.metrics()["paired_difference"] == pytest.approx(recorded["difference"])
    assert serving["challenger_filter_accuracy"] == pytest.approx(1.0)
    assert serving["challenger_filter_accuracy"] > serving["challenger_alone_accuracy"]
    assert result.challenger_operational.accuracy == serving["challenger_filter_accuracy"]
    own = serving["challenger_filter_version"]
    assert filters.wraps(own) == "v0002" and filters.card(own).parent == cycle_filter.version
    written = store.get_json("cycles/c1/result.json")
    assert (written["serve"], written["challenger_filter_version"], written["challenger_filter_gate"]) == \
        ("challenger+filter", own, "always")
    assert "challenger+filter 1.0000 > challenger alone" in written["serve_reason"]
    # what deploy reads from this evaluation.json puts the challenger's own filter in front of it
    from daic.components.deploy.logic import serving_filter

    chosen = serving_filter(store, "c1")
    assert (chosen.version, chosen.gate) == (own, "always")

    # the filter's gate costs clean accuracy beyond the rule's tolerance (these untrained models score
    # ~5 % on clean digits either way, so the clean split's figures are set here: 0.99 for a model
    # alone, 0.95 behind the filter): the challenger+filter is passed over, not allowed to block the
    # challenger alone
    from daic.components.evaluate import logic

    monkeypatch.setattr(logic, "clean_accuracy", lambda model, limit=0, net=None, gate="off", threshold=0.0:
                        0.95 if net is not None else 0.99)
    strict = EvaluateConfig(clean_tolerance=0.01, clean_limit=100, wrapped_assessor=False)
    result = evaluate(store, "c1", "v0002", strict)
    s = result.serving
    assert (s["challenger_filter_clean"], result.champion_clean, s["challenger_alone_clean"]) == (0.95, 0.99, 0.99)
    assert s["challenger_filter_accuracy"] > s["challenger_alone_accuracy"]  # better where it drifted ...
    assert "challenger+filter" not in (s["serve"], result.decision.reason.split(";")[0])
    assert "loses more clean accuracy than the rule tolerates" in s["serve_reason"]
    assert result.challenger_clean == s["challenger_alone_clean"]  # ... but the rule judges the challenger alone
    assert store.get_json("cycles/c1/result.json")["challenger_filter_version"] is None
    monkeypatch.undo()
    monkeypatch.setattr(apply, "wrapped_predictions", right_behind_the_filter("v0002"))

    # the champion behind the filter is as good: it keeps serving, the challenger is not promoted
    monkeypatch.setattr(apply, "wrapped_predictions", right_behind_the_filter("v0001", "v0002"))
    result = evaluate(store, "c1", "v0002", config)
    assert result.serving["serve"] == "champion+filter" and not result.decision.promote
    assert "champion+filter keeps serving" in result.decision.reason
    assert store.get_json("cycles/c1/result.json")["challenger_filter_version"] is None

    # no filter adopted by the cycle: the challenger alone, as before
    store.put_json("cycles/c1/filter.json", {"decision": "none", "filter_version": None})
    result = evaluate(store, "c1", "v0002", config)
    assert result.serving is None and store.get_json("cycles/c1/evaluation.json")["serving"] is None
