"""The promotion path's own JSON reads (components/evaluate, components/deploy) on wrong contents.

``estimate.json`` is written by the real estimate step on a real sample of logged operational
records with simulated labels (the fixture of tests/test_corrupt_objects_cycle.py);
``evaluation.json`` in the shape the evaluate step writes (its fields deploy acts on: the versions
and the decision), and ``filter.json`` in fit-filter's. Each is replaced by seeded corrupted
variants (tests/corrupt_variants.py). A reader must return figures a promotion may act on (finite,
in [0, 1], lower <= accuracy <= upper; a boolean decision) or raise a CorruptObject naming the key:
never a KeyError/TypeError/AttributeError from inside, never a NaN or a string compared with a
figure, never ``"promote": "no"`` read as true.
"""
from __future__ import annotations

import json
import math

import pytest

from corrupt_variants import check_planted, json_variants
from daic.components import cycle_store
from daic.components.deploy.logic import evaluated_champion, serving_filter
from daic.components.estimate_accuracy.decision import DropRule
from daic.components.estimate_accuracy.logic import EstimateConfig
from daic.components.estimate_accuracy.logic import run as estimate
from daic.components.evaluate.logic import champion_interval_of, read_filter_record
from daic.storage import StorageError
from test_corrupt_objects_cycle import store, store_dir  # noqa: F401 - the fixtures

SEEDS = (0, 1, 2)


@pytest.fixture
def estimated(store):  # noqa: F811 - the imported fixture
    estimate(store, "c1", EstimateConfig(rule=DropRule(threshold=0.7)))
    return store


def _interval_ok(got):
    if not (isinstance(got, tuple) and len(got) == 3 and all(isinstance(x, float) and math.isfinite(x) for x in got)):
        return "not three finite floats"
    accuracy, lower, upper = got
    return None if 0 <= lower <= accuracy <= upper <= 1 else "not 0 <= lower <= accuracy <= upper <= 1"


@pytest.mark.parametrize("seed", SEEDS)
def test_estimate_json_variants(estimated, seed):
    key = cycle_store.key("c1", "estimate.json")
    check_planted(estimated, key, json_variants(estimated.get_bytes(key), seed, n_fields=10),
                  lambda: champion_interval_of(estimated, "c1"), _interval_ok)


@pytest.mark.parametrize("bad", [float("nan"), "0.9", None, 1.5, -0.1])
def test_a_bad_champion_accuracy_is_refused_naming_the_key(estimated, bad):
    key = cycle_store.key("c1", "estimate.json")
    doc = json.loads(estimated.get_bytes(key))
    doc["estimate"]["accuracy"] = bad
    estimated.put_bytes(key, json.dumps(doc).encode())
    with pytest.raises(StorageError, match=r"c1/estimate\.json.*estimate\.accuracy"):
        champion_interval_of(estimated, "c1")


EVALUATION = {"cycle": "c1", "champion_version": "v0001", "challenger_version": "v0002",
              "champion_offline": {"accuracy": 0.7, "lower": 0.6, "upper": 0.8},
              "decision": {"promote": True, "improves_operational": True, "keeps_clean": True, "reason": "better"},
              "serving": None, "created": 1.0, "attempt": "a"}


def _deploy_ok(got):
    return None if got == "v0001" else "not the evaluated champion"


@pytest.mark.parametrize("seed", SEEDS)
def test_evaluation_json_variants(store, seed):  # noqa: F811
    key = cycle_store.key("c1", "evaluation.json")
    store.put_json(key, EVALUATION)

    def read():
        try:
            return evaluated_champion(store, "c1", "v0002"), serving_filter(store, "c1")
        except ValueError as exc:  # deploy's own refusals: another version evaluated, no promotion
            if "refusing to deploy" in str(exc) or "did not find" in str(exc):
                return "refused", None
            raise

    check_planted(store, key, json_variants(store.get_bytes(key), seed, n_fields=10), read,
                  lambda got: None if got[0] in ("v0001", "refused") else f"acted on {got[0]!r}")


@pytest.mark.parametrize("promote", ["no", "false", 1, None])
def test_a_promote_that_is_not_a_boolean_is_never_a_promotion(store, promote):  # noqa: F811
    key = cycle_store.key("c1", "evaluation.json")
    store.put_json(key, {**EVALUATION, "decision": {"promote": promote, "reason": "x"}})
    with pytest.raises(StorageError, match=r"c1/evaluation\.json.*decision\.promote"):
        evaluated_champion(store, "c1", "v0002")


@pytest.mark.parametrize("seed", SEEDS)
def test_filter_record_variants(store, seed):  # noqa: F811
    key = cycle_store.key("c1", "filter.json")
    store.put_json(key, {"cycle": "c1", "filter_version": "v0003", "gate": "gated", "decision": "deploy"})
    check_planted(store, key, json_variants(store.get_bytes(key), seed), lambda: read_filter_record(store, "c1"),
                  lambda got: None if got is None or isinstance(got.get("filter_version"), str) else "bad version")


def test_a_filter_record_that_is_a_list_is_not_read_as_no_filter(store):  # noqa: F811
    key = cycle_store.key("c1", "filter.json")
    store.put_bytes(key, b'[{"filter_version": "v0003"}]')
    with pytest.raises(StorageError, match=r"c1/filter\.json"):
        read_filter_record(store, "c1")
