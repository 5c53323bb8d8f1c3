"""estimate-accuracy's merge into ``cycles/<c>/result.json`` when the record's *contents* are wrong.

A real cycle is made by the steps themselves (sample-operational on logged operational records,
collect-labels with the simulated labeler, estimate-accuracy writing result.json), as in
tests/test_corrupt_objects_cycle.py. ``result.json`` is then replaced by seeded corrupted variants
(tests/corrupt_variants.py) and estimate-accuracy runs again (a late retry merging into it; evaluate
and fit-filter merge through the same ``write_result``). It must leave a record the operator can
read (``daic.operators.status.RunResult``) or fail with one StorageError naming the key and leave
the record as it was: never a TypeError from ``{**current}``, and never garbage merged on for the
operator to trip over (``champion_accuracy: "x"`` kept because the merge only adds fields).
"""
from __future__ import annotations

import json

import pytest

from corrupt_variants import json_variants
from daic.components import cycle_store
from daic.components.collect_labels.logic import CollectConfig
from daic.components.collect_labels.logic import run as collect
from daic.components.estimate_accuracy.decision import DropRule
from daic.components.estimate_accuracy.logic import EstimateConfig
from daic.components.estimate_accuracy.logic import run as estimate
from daic.components.sample_operational.logic import SampleConfig
from daic.components.sample_operational.logic import run as sample
from daic.components.testing.operational import write_operational
from daic.data.scenarios import build_scenario
from daic.operators.status import RunResult
from daic.storage import StorageError, open_store
from test_corrupt_objects_cycle import SPEC, _classifier

SEEDS = (0, 1, 2)
CONFIG = EstimateConfig(rule=DropRule(threshold=0.7))


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("result")
    store = open_store(f"file://{root}")
    write_operational(store, "mnist", build_scenario(**SPEC), _classifier())
    sample(store, SampleConfig(sampler="stratified", budget=60, cycle="c1", seed=4))
    collect(store, "c1", CollectConfig(backend="simulated", simulated_scenario=json.dumps(SPEC)))
    estimate(store, "c1", CONFIG)
    # evaluate's fields too, as a later step leaves them, so the variants hit those as well
    record = store.get_json(cycle_store.key("c1", "result.json"))
    store.put_json(cycle_store.key("c1", "result.json"), {
        **record, "champion_version": "v0001", "champion_accuracy": 0.6, "challenger_version": "v0002",
        "challenger_accuracy": 0.9, "promote": True, "promotion_reason": "better", "serve": "challenger"})
    return root


@pytest.mark.parametrize("seed", SEEDS)
def test_result_record_variants(store_dir, seed):
    store = open_store(f"file://{store_dir}")
    key = cycle_store.key("c1", "result.json")
    original = store.get_bytes(key)
    failures = []
    for what, data in json_variants(original, seed):
        store.put_bytes(key, data)
        try:
            estimate(store, "c1", CONFIG)
        except StorageError as exc:
            if key not in str(exc) or store.get_bytes(key) != data:
                failures.append(f"{what}: StorageError without the key or with the record changed: {exc}")
            continue
        except Exception as exc:  # noqa: BLE001 -- the failure being looked for
            failures.append(f"{what}: {type(exc).__name__}: {str(exc)[:200]}")
            continue
        try:
            RunResult.model_validate(store.get_json(key))
        except Exception as exc:  # noqa: BLE001
            failures.append(f"{what}: merged into a record the operator cannot read: {str(exc)[:200]}")
    store.put_bytes(key, original)
    assert not failures, "\n".join(failures)


def test_a_mistyped_field_of_a_later_step_is_one_error_naming_the_key(store_dir):
    store = open_store(f"file://{store_dir}")
    key = cycle_store.key("c1", "result.json")
    original = store.get_bytes(key)
    store.put_json(key, {**json.loads(original), "champion_accuracy": "x"})
    try:
        with pytest.raises(StorageError, match=r"c1/result\.json.*champion_accuracy"):
            estimate(store, "c1", CONFIG)
    finally:
        store.put_bytes(key, original)
