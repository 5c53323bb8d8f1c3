"""Two attempts of one cycle's fit-filter or train step at once (a KFP retry while the first
attempt still runs), against a real file store, a real model registry and a real filter registry.

The interleavings are forced, not hoped for: the :class:`Gated` store of
``test_concurrency_cycle`` runs a hook before each store operation of a named thread, and the hooks
wait on events the other thread sets (bounded waits; a wait that runs out fails the test).

Only the expensive training is replaced, at its boundary, by a stand-in that registers a real
version (no Ray): fit-filter's ``daic.filters.remedy.filter_remedy`` (returns a record naming a
filter version registered by the fixture, one per attempt) and
``daic.filters.assessor.fit_wrapped_assessor``; train's ``registry_access.retrain`` (registers an
untrained version from the parent, as the Ray training would register a trained one). Everything
else -- the pool, the held-out figures, the records, the result merge -- is the step's own code (the
pool's Arrow scan of the logged Parquet is pointed at the store under the gate).

- fit-filter: ``filter.json`` and the ``filter_*`` fields of ``result.json`` must come from one
  attempt (before the fix the first attempt's wrapped-assessor rewrite put its ``filter.json`` beside
  the retry's result); the attempt that lost raises ``FilterConflict``.
- train: ``train.json`` must name the version every attempt hands on (the one evaluate puts in
  ``result.json``); before the fix it kept whichever attempt wrote last, while the other attempt
  handed on its own version.
"""
from __future__ import annotations

import json
import threading
from collections.abc import Callable

import numpy as np
import pytest
from test_concurrency_cycle import SPEC, Gated, predictor, run_both, wait  # noqa: F401 - predictor: the module fixture

from daic.storage import ObjectStore, open_store

ATTEMPT_FILTER = {"A": "v0001", "B": "v0002"}  # the filter version each attempt's adaptation "registers"


@pytest.fixture
def labeled_cycle(tmp_path, predictor) -> ObjectStore:
    """A file store with cycle c1 sampled and labeled, model v0001 (champion) and two filter
    versions of it (v0001, v0002: one per attempt)."""
    from daic.components.collect_labels.logic import CollectConfig
    from daic.components.collect_labels.logic import run as collect
    from daic.components.sample_operational.logic import SampleConfig
    from daic.components.sample_operational.logic import run as sample
    from daic.components.testing.operational import write_operational
    from daic.components.testing.registry import register_untrained
    from daic.data.scenarios import build_scenario
    from daic.filters.network import FilterNet
    from daic.filters.registry import FilterRegistry
    from daic.models.card import DataLineage

    store = open_store(f"file://{tmp_path / 'store'}")
    write_operational(store, "mnist", build_scenario(**SPEC), predictor)
    sample(store, SampleConfig(sampler="srs", budget=60, cycle="c1", seed=6))
    collect(store, "c1", CollectConfig(backend="simulated", simulated_scenario=json.dumps(SPEC)))
    register_untrained(store, [None])
    registry = FilterRegistry(store, "mnist")
    for _ in ATTEMPT_FILTER:
        registry.register_filter(net=FilterNet(), data=DataLineage(dataset="mnist", base_count=10),
                                 wraps_version="v0001", metrics={"gate_threshold": 0.0})
    return store


@pytest.fixture
def adaptation(monkeypatch):
    """The filter's adaptation and the wrapped assessor's fit replaced by their outcome: attempt
    (thread) A adopts filter v0001 with accuracy 0.61, B filter v0002 with 0.72; both deploy."""
    import daic.filters.assessor as fa
    import daic.filters.remedy as remedy
    import daic.sampling.fetch as fetch
    import daic.sampling.scan as scan

    real_record = remedy._record

    def filter_remedy(store, *, classifier, champion_version, cycle, remedy, write_record=None, **_):
        me = threading.current_thread().name
        version = ATTEMPT_FILTER.get(me, "v0001")
        record = {"cycle": cycle, "remedy": remedy, "champion_version": champion_version, "decision": "deploy",
                  "retrain": True, "compare_to": "champion", "gate": "gated", "champion_accuracy": 0.5,
                  "filter_accuracy": {"A": 0.61, "B": 0.72}.get(me, 0.6), "filter_version": version,
                  "adapted_version": version, "reason": f"attempt {me}"}
        if write_record is not None:  # as the real one: its record, once it has decided, through the caller's writer
            write_record(record)
            return record
        return real_record(store, cycle, record)

    def fit_wrapped_assessor(store, classifier, filter_version, gate, **_):
        return {"key": f"filters/{classifier}/{filter_version}/{gate}/assessor.pkl", "seconds": 0.01}

    monkeypatch.setattr(remedy, "filter_remedy", filter_remedy)
    monkeypatch.setattr(fa, "fit_wrapped_assessor", fit_wrapped_assessor)
    # The pool's scan reads the logged Parquet through Arrow, beside the store API: under the gate.
    real_fs = scan.arrow_filesystem
    for module in (scan, fetch):
        monkeypatch.setattr(module, "arrow_filesystem", lambda store: real_fs(getattr(store, "inner", store)))


def fit_filter_config():
    from daic.components.fit_filter.logic import FitFilterConfig

    return FitFilterConfig(remedy="both", pool_limit=32, wrapped_assessor=True)


def assert_one_attempts_records(store: ObjectStore, winner: str) -> None:
    record, result = store.get_json("cycles/c1/filter.json"), store.get_json("cycles/c1/result.json")
    mixed = (f"filter.json is {record['reason']} (filter {record['filter_version']}), result.json names filter "
             f"{result['filter_version']} at {result['filter_accuracy']}: the records of two attempts are mixed")
    assert (result["filter_version"], result["filter_accuracy"], result["filter_reason"]) == (
        record["filter_version"], record["filter_accuracy"], record["reason"]), mixed
    assert record["reason"] == f"attempt {winner}" and record["filter_version"] == ATTEMPT_FILTER[winner]
    assert record["wrapped_assessor"].endswith(f"{ATTEMPT_FILTER[winner]}/gated/assessor.pkl")
    assert result["filter_holdout_accuracy"] == record["filter_holdout_accuracy"]
    # the pool the record names is the winner's own (two attempts may read different pools)
    assert record["pool_key"] == f"cycles/c1/filter_pool-{record['attempt']}.npz" and store.exists(record["pool_key"])


# -- fit-filter: two attempts of one cycle ---------------------------------------------------------

@pytest.mark.parametrize("a_pauses", ["in its adaptation", "before its record", "before its result",
                                      "before its wrapped-assessor rewrite"])
def test_a_retry_that_runs_while_the_first_attempt_pauses_wins_and_the_first_fails_cleanly(
        labeled_cycle, adaptation, a_pauses):
    """Attempt A pauses (adapting, i.e. before daic.filters.remedy writes its record; before its
    final record; before merging its result; before its wrapped-assessor rewrite), the retry B runs
    from start to end meanwhile, then A goes on. Before the fix nobody failed, and pausing before the
    rewrite left filter.json A's beside B's filter_* fields in result.json, the mix the operator
    would roll out; otherwise A's late writes silently replaced the records B had reported."""
    from daic.components.fit_filter.logic import run as fit_filter

    store = Gated(labeled_cycle)
    record_key, result_key = "cycles/c1/filter.json", "cycles/c1/result.json"
    a_paused, b_done = threading.Event(), threading.Event()
    puts = {"record": 0, "result": 0}
    pause_at = {"in its adaptation": 1, "before its record": 2, "before its wrapped-assessor rewrite": 3}

    def pause() -> None:
        if not a_paused.is_set():
            a_paused.set()
            wait(b_done, "B to finish")

    def a_record(op: str) -> None:
        if op == "put":
            puts["record"] += 1
            if puts["record"] == pause_at.get(a_pauses):
                pause()

    def a_result(op: str) -> None:
        if a_pauses == "before its result" and puts["record"] >= 2:
            pause()

    store.on("A", record_key, a_record)
    store.on("A", result_key, a_result)
    store.on("B", record_key, lambda op: wait(a_paused, "A to pause"))  # B begins (reads the record) then

    def attempt(done: threading.Event | None = None):
        def go():
            try:
                return fit_filter(store, "c1", fit_filter_config())
            finally:
                if done is not None:
                    done.set()
        return go

    out = run_both(attempt(), attempt(b_done))
    assert_one_attempts_records(labeled_cycle, "B")
    assert_lost(out, "A")


def test_a_retry_that_began_before_the_first_attempts_record_loses(labeled_cycle, adaptation):
    """B began (read the record: none) before A wrote its record, and reaches its own write after A
    finished: it must not replace A's records (before the fix it did, and nobody failed)."""
    from daic.components.fit_filter.logic import run as fit_filter

    store = Gated(labeled_cycle)
    record_key = "cycles/c1/filter.json"
    b_began, a_done = threading.Event(), threading.Event()

    def a_record(op: str) -> None:
        if op == "put":
            wait(b_began, "B to begin")

    def b_record(op: str) -> None:
        b_began.set()
        if op == "put":
            wait(a_done, "A to finish")

    def b_sample(op: str) -> None:
        b_began.set()

    store.on("A", record_key, a_record)
    store.on("B", record_key, b_record)
    store.on("B", "cycles/c1/sample.json", b_sample)

    def first():
        try:
            return fit_filter(store, "c1", fit_filter_config())
        finally:
            a_done.set()

    out = run_both(first, lambda: fit_filter(store, "c1", fit_filter_config()))
    assert_one_attempts_records(labeled_cycle, "A")
    assert_lost(out, "B")


def assert_lost(out: dict[str, object], loser: str) -> None:
    from daic.components.fit_filter.logic import FilterConflict

    failed = {k: v for k, v in out.items() if isinstance(v, BaseException)}
    assert list(failed) == [loser], out  # exactly the overtaken attempt lost, and knows
    exc = failed[loser]
    assert isinstance(exc, FilterConflict) and "'c1'" in str(exc), exc
    winner = "A" if loser == "B" else "B"
    assert out[winner]["filter_version"] == ATTEMPT_FILTER[winner]


def test_a_rerun_of_fit_filter_after_the_first_finished_replaces_its_records(labeled_cycle, adaptation):
    """Sequential reruns stay possible (also over a record written before records carried an
    attempt id, and a failed first attempt's error does not stay in the result)."""
    import daic.filters.remedy as remedy
    from daic.components.fit_filter.logic import run as fit_filter

    labeled_cycle.put_json("cycles/c1/filter.json", {"cycle": "c1", "decision": "none"})  # an older step's
    working = remedy.filter_remedy

    def broken(*args, **kwargs):
        raise RuntimeError("Ray could not start")

    remedy.filter_remedy = broken
    try:
        first = fit_filter(labeled_cycle, "c1", fit_filter_config())
    finally:
        remedy.filter_remedy = working
    assert labeled_cycle.get_json("cycles/c1/result.json")["filter_error"] == first["error"]
    threading.current_thread().name, name = "B", threading.current_thread().name
    try:
        fit_filter(labeled_cycle, "c1", fit_filter_config())
    finally:
        threading.current_thread().name = name
    assert_one_attempts_records(labeled_cycle, "B")
    assert labeled_cycle.get_json("cycles/c1/result.json")["filter_error"] is None


# -- train: two attempts of one cycle --------------------------------------------------------------

@pytest.fixture
def train_cycle(tmp_path, monkeypatch):
    """A store with champion v0001 and a labeled batch for c1; the Ray training replaced by a
    registration of an untrained version from the parent (the version it would register)."""
    from daic.components import cycle_store
    from daic.components.testing.registry import register_untrained
    from daic.components.train import registry_access

    store = open_store(f"file://{tmp_path / 'store'}")
    register_untrained(store, [None])
    store.put_arrays(cycle_store.train_labels_key("c1"), images=np.zeros((4, 28, 28), np.float32),
                     labels=np.arange(4), ids=np.array([f"i{k}" for k in range(4)]))
    trained: dict[str, str] = {}
    gates: dict[str, tuple[Callable[[], None], Callable[[], None]]] = {}  # thread: (before, after) registering

    def retrain(store, name, parent, labels_prefix, config, ray_address, cycle, unlabeled_key=""):
        me = threading.current_thread().name
        before, after = gates.get(me, (lambda: None, lambda: None))
        before()
        (version,) = register_untrained(store, [parent], name=name, champion=None)
        trained[me] = version
        after()
        return version

    monkeypatch.setattr(registry_access, "retrain", retrain)
    return store, trained, gates


@pytest.mark.parametrize("first_to_record", ["A", "B"])
def test_two_train_attempts_of_one_cycle_hand_on_the_recorded_version(train_cycle, first_to_record):
    """Both attempts begin before either has a record; A registers v0002, then B v0003; then
    ``first_to_record`` writes train.json, then the other. Before the fix train.json named the last
    writer's version while the first writer handed on its own: evaluate would judge (and write into
    result.json) a version train.json does not name. Now the later attempt adopts the recorded
    version; its own stays in the registry, unused."""
    from daic.components.train.logic import TrainConfig
    from daic.components.train.logic import run as train
    from daic.models.registry import ModelRegistry

    base, trained, gates = train_cycle
    store = Gated(base)
    key = "cycles/c1/train.json"
    began = {"A": threading.Event(), "B": threading.Event()}
    a_registered, recorded = threading.Event(), threading.Event()
    second = "B" if first_to_record == "A" else "A"

    def second_writes_after_the_first(name: str) -> Callable[[str], None]:
        def hook(op: str) -> None:
            if op == "put" and name == second:
                wait(recorded, f"{first_to_record}'s train record")
        return hook

    def begins(name: str) -> Callable[[str], None]:
        return lambda op: began[name].set()  # the champion is read after the record's ETag (fixed code)

    gates["A"] = (lambda: wait(began["B"], "B to begin"), a_registered.set)
    gates["B"] = (lambda: wait(a_registered, "A's registration"), lambda: None)
    for name in ("A", "B"):
        store.on(name, key, second_writes_after_the_first(name))
        store.on(name, "models/mnist/champion", begins(name))
    # The first writer's record is on the store before the other attempt's write goes ahead.
    real_put = base.put_bytes

    def put_bytes(k, data, *, if_none_match=False, if_match=None):
        etag = real_put(k, data, if_none_match=if_none_match, if_match=if_match)
        if k == key and threading.current_thread().name == first_to_record:
            recorded.set()
        return etag

    base.put_bytes = put_bytes
    out = run_both(lambda: train(store, "c1", TrainConfig()), lambda: train(store, "c1", TrainConfig()))
    assert not any(isinstance(v, BaseException) for v in out.values()), out
    assert trained == {"A": "v0002", "B": "v0003"}
    record = base.get_json(key)
    handed_on = {name: result.version for name, result in out.items()}
    assert handed_on == {"A": record["version"], "B": record["version"]}, (
        f"train.json names {record['version']}, the attempts handed on {handed_on}")
    assert record["version"] == trained[first_to_record]  # written once: the first record stands
    assert all(result.parent == "v0001" and result.card["version"] == record["version"] for result in out.values())
    assert ModelRegistry(base, "mnist").versions() == ["v0001", "v0002", "v0003"]  # the adopter's: unused


def test_a_rerun_of_train_after_the_first_finished_replaces_its_record(train_cycle):
    """A sequential rerun trains again and records its own version (as before)."""
    from daic.components.train.logic import TrainConfig
    from daic.components.train.logic import run as train

    store, _, _ = train_cycle
    first = train(store, "c1", TrainConfig())
    second = train(store, "c1", TrainConfig())
    assert (first.version, second.version) == ("v0002", "v0003")
    assert store.get_json("cycles/c1/train.json")["version"] == "v0003"
