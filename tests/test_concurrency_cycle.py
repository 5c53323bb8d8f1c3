"""Two writers of one cycle's records, or of one model's champion, at once, against a real store
(a local directory and, for the champion, the real S3 server SeaweedFS).

The interleavings are forced, not hoped for: a :class:`Gated` store runs a hook before each store
operation of a named thread, and the hooks wait on events the other thread sets (bounded waits;
a wait that runs out fails the test instead of hanging it).

- ``result.json`` is merged by several steps (estimate, fit-filter, evaluate): two merges of
  different fields that both read before either writes must keep both (no lost update).
- Two evaluate attempts of one cycle (a KFP retry while the first attempt still writes): the
  evaluation record and the result the operator reads must come from the same attempt; the
  attempt that lost fails cleanly.
- Two deploy steps of two cycles promoting different challengers at once: exactly one moves the
  champion pointer, the other fails with ``ChampionConflict``; the pointer and its history stay
  whole.
"""
from __future__ import annotations

import threading
import uuid
from collections.abc import Callable

import numpy as np
import pytest

from daic.components.testing.forwarding_store import ForwardingStore
from daic.storage import ObjectStore, open_store

WAIT = 30.0  # seconds: a bound on every wait, never a synchronisation


def wait(event: threading.Event, what: str) -> None:
    if not event.wait(WAIT):
        raise AssertionError(f"timed out waiting for {what}")


class Gated(ForwardingStore):
    """``inner`` with hooks: ``on(thread, key, fn)`` runs ``fn(op)`` before every operation of the
    thread named ``thread`` on ``key`` (ops: put, get, exists, delete)."""

    def __init__(self, inner: ObjectStore):
        super().__init__(inner)
        self.hooks: list[tuple[str, str, Callable[[str], None]]] = []
        self.log: list[tuple[str, str, str]] = []
        self._lock = threading.Lock()

    def on(self, thread: str, key: str, fn: Callable[[str], None]) -> None:
        self.hooks.append((thread, key, fn))

    def _before(self, op: str, key: str) -> None:
        me = threading.current_thread().name
        with self._lock:
            self.log.append((me, op, key))
        for thread, k, fn in list(self.hooks):
            if thread == me and k == key:
                fn(op)

    def put_bytes(self, key, data, *, if_none_match=False, if_match=None):
        self._before("put", key)
        return self.inner.put_bytes(key, data, if_none_match=if_none_match, if_match=if_match)

    def get_bytes(self, key):
        self._before("get", key)
        return self.inner.get_bytes(key)

    def get_with_etag(self, key):
        self._before("get", key)
        return self.inner.get_with_etag(key)

    def exists(self, key):
        self._before("exists", key)
        return self.inner.exists(key)

    def delete(self, key):
        self._before("delete", key)
        return self.inner.delete(key)


def run_both(a: Callable[[], object], b: Callable[[], object]) -> dict[str, object]:
    """Run ``a`` in thread "A" and ``b`` in thread "B"; each one's return value or exception."""
    out: dict[str, object] = {}

    def body(name, fn):
        try:
            out[name] = fn()
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            out[name] = exc

    threads = [threading.Thread(target=body, args=(n, f), name=n) for n, f in (("A", a), ("B", b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT * 4)
        assert not t.is_alive(), f"thread {t.name} is stuck"
    return out


@pytest.fixture(params=["file", "s3"])
def store(request, tmp_path):
    if request.param == "file":
        return open_store(f"file://{tmp_path / 'store'}")
    request.getfixturevalue("s3_env")
    return open_store(f"s3://daic-test/{uuid.uuid4().hex}", create_bucket=True)


# -- result.json: two merges at once ---------------------------------------------------------------

def test_two_result_merges_that_read_before_either_writes_keep_both(store):
    """fit-filter merging its filter_* fields while (a stale attempt of) estimate merges its own:
    both read the record, then both write. Before the fix the second write dropped the first's fields."""
    from daic.components.estimate_accuracy.logic import write_result

    write_result(store, "c1", {"drop_confirmed": True})
    gated = Gated(store)
    read = {"A": threading.Event(), "B": threading.Event()}

    def both_read_first(name: str, other: str) -> Callable[[str], None]:
        def hook(op: str) -> None:
            if op == "put":
                wait(read[other], f"{other} to read result.json")
            else:
                read[name].set()
        return hook

    key = "cycles/c1/result.json"
    gated.on("A", key, both_read_first("A", "B"))
    gated.on("B", key, both_read_first("B", "A"))
    out = run_both(lambda: write_result(gated, "c1", {"filter_decision": "deploy", "filter_version": "v0002"}),
                   lambda: write_result(gated, "c1", {"offline_accuracy": 0.81, "labels_used": 90}))
    assert not any(isinstance(v, BaseException) for v in out.values()), out
    assert store.get_json(key) == {"drop_confirmed": True, "filter_decision": "deploy", "filter_version": "v0002",
                                   "offline_accuracy": 0.81, "labels_used": 90}


# -- evaluate: two attempts of one cycle -----------------------------------------------------------

SPEC = dict(name="sudden", seed=3, batch_size=50, n_steps=8, drift_start=4, corruption="translate", severity=3)


@pytest.fixture(scope="module")
def predictor():
    from daic.data.mnist import load_split

    train = load_split("train")
    x, y = train.images[:2000].reshape(2000, -1), train.labels[:2000]
    centroids = np.stack([x[y == c].mean(axis=0) for c in range(10)])

    def predict(images):
        flat = images.reshape(len(images), -1)
        logits = -0.5 * ((flat[:, None, :] - centroids[None]) ** 2).sum(axis=-1)
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        return {"probs": probs / probs.sum(axis=1, keepdims=True)}

    return predict


@pytest.fixture
def judged_cycle(tmp_path, predictor):
    """A file store with cycle c1 sampled, labeled and estimated, and versions v0001 (champion),
    v0002 and v0003 (v0003 stands for a champion that another cycle promoted meanwhile)."""
    import json

    from daic.components.collect_labels.logic import CollectConfig
    from daic.components.collect_labels.logic import run as collect
    from daic.components.estimate_accuracy.logic import EstimateConfig
    from daic.components.estimate_accuracy.logic import run as estimate
    from daic.components.sample_operational.logic import SampleConfig
    from daic.components.sample_operational.logic import run as sample
    from daic.components.testing.operational import write_operational
    from daic.components.testing.registry import register_untrained
    from daic.data.scenarios import build_scenario

    store = open_store(f"file://{tmp_path / 'store'}")
    write_operational(store, "mnist", build_scenario(**SPEC), predictor)
    sample(store, SampleConfig(sampler="srs", budget=120, cycle="c1", seed=6))
    collect(store, "c1", CollectConfig(backend="simulated", simulated_scenario=json.dumps(SPEC)))
    register_untrained(store, [None, "v0001", "v0001"])
    estimate(store, "c1", EstimateConfig(reference_accuracy=0.95))
    return store


@pytest.mark.parametrize("b_starts", ["together", "after A's record"])
def test_two_evaluate_attempts_of_one_cycle_never_mix_their_records(judged_cycle, b_starts):
    """Attempt A judges v0002 against v0001, attempt B (a retry) against v0003. A writes its
    evaluation record, B writes its record and its result, then A writes its result: before the
    fix evaluation.json was B's and result.json A's, a mix deploy and the operator would both
    trust. Now the attempt that was overtaken fails cleanly and both records are the other's.

    ``together``: B started before A's record was written (B must not overwrite it);
    ``after A's record``: B is a later rerun (it replaces A's record, and A's result must not land)."""
    from daic.components.evaluate.logic import EvaluateConfig
    from daic.components.evaluate.logic import run as evaluate

    store = Gated(judged_cycle)
    evaluation, result = "cycles/c1/evaluation.json", "cycles/c1/result.json"
    b_started, a_recorded, b_done = threading.Event(), threading.Event(), threading.Event()
    a_wrote = {"record": False}

    def a_evaluation(op: str) -> None:
        if op == "put":
            if b_starts == "together":
                wait(b_started, "B to start")
            a_wrote["record"] = True

    def a_result(op: str) -> None:
        if a_wrote["record"]:
            a_recorded.set()
            wait(b_done, "B to finish")

    def b_sample(op: str) -> None:
        b_started.set()

    def b_evaluation(op: str) -> None:
        if b_starts == "after A's record" or op == "put":
            wait(a_recorded, "A's evaluation record")

    store.on("A", evaluation, a_evaluation)
    store.on("A", result, a_result)
    store.on("B", "cycles/c1/sample.json", b_sample)
    store.on("B", evaluation, b_evaluation)

    def attempt(champion: str, done: threading.Event | None = None):
        def go():
            try:
                return evaluate(store, "c1", "v0002", EvaluateConfig(champion_version=champion, clean_limit=50,
                                                                     clean_tolerance=0.9))
            finally:
                if done is not None:
                    done.set()
        return go

    out = run_both(attempt("v0001"), attempt("v0003", b_done))
    evaluation_doc, result_doc = judged_cycle.get_json(evaluation), judged_cycle.get_json(result)
    assert evaluation_doc["champion_version"] == result_doc["champion_version"], (
        f"evaluation.json judged against {evaluation_doc['champion_version']}, result.json says "
        f"{result_doc['champion_version']}: the records of two attempts are mixed")
    assert result_doc["promote"] == evaluation_doc["decision"]["promote"]
    failed = {k: v for k, v in out.items() if isinstance(v, BaseException)}
    assert len(failed) == 1, out  # exactly one attempt lost, and it knows
    (loser, exc), = failed.items()
    from daic.components.evaluate.logic import EvaluationConflict

    assert isinstance(exc, EvaluationConflict) and "c1" in str(exc), exc
    winner = "B" if loser == "A" else "A"
    assert evaluation_doc["champion_version"] == {"A": "v0001", "B": "v0003"}[winner]
    assert loser == ("B" if b_starts == "together" else "A")


def test_a_rerun_of_evaluate_after_the_first_finished_replaces_its_records(judged_cycle):
    """Sequential reruns stay possible: the second evaluation replaces the first, records agree."""
    from daic.components.evaluate.logic import EvaluateConfig
    from daic.components.evaluate.logic import run as evaluate

    evaluate(judged_cycle, "c1", "v0002", EvaluateConfig(champion_version="v0001", clean_limit=50))
    evaluate(judged_cycle, "c1", "v0002", EvaluateConfig(champion_version="v0003", clean_limit=50))
    assert judged_cycle.get_json("cycles/c1/evaluation.json")["champion_version"] == "v0003"
    assert judged_cycle.get_json("cycles/c1/result.json")["champion_version"] == "v0003"


# -- deploy: two cycles promote two challengers at once --------------------------------------------

@pytest.fixture
def registry_store(store):
    from daic.components.testing.registry import register_untrained

    register_untrained(store, [None, "v0001", "v0001"])  # v0001 champion; v0002, v0003 challengers
    for cycle, challenger in (("c2", "v0002"), ("c3", "v0003")):
        store.put_json(f"cycles/{cycle}/evaluation.json", {
            "cycle": cycle, "champion_version": "v0001", "challenger_version": challenger,
            "decision": {"promote": True, "reason": "better"}})
    return store


def test_two_deploys_of_two_cycles_at_once_promote_exactly_one(registry_store):
    """Both read the pointer (v0001) before either writes it: one promotion lands, the other gets
    ChampionConflict and writes nothing (no deploy record, no history record)."""
    from daic.components.deploy.logic import DeployConfig
    from daic.components.deploy.logic import run as deploy
    from daic.models.registry import ChampionConflict, ModelRegistry

    store = Gated(registry_store)
    read = {"A": threading.Event(), "B": threading.Event()}

    def both_read_first(name: str, other: str) -> Callable[[str], None]:
        def hook(op: str) -> None:
            if op == "put":
                wait(read[other], f"{other} to read the champion pointer")
            elif op == "get":
                read[name].set()
        return hook

    store.on("A", "models/mnist/champion", both_read_first("A", "B"))
    store.on("B", "models/mnist/champion", both_read_first("B", "A"))
    out = run_both(lambda: deploy(store, "c2", "v0002", DeployConfig()),
                   lambda: deploy(store, "c3", "v0003", DeployConfig()))
    failed = {k: v for k, v in out.items() if isinstance(v, BaseException)}
    assert len(failed) == 1, out
    (loser, exc), = failed.items()
    assert isinstance(exc, ChampionConflict), exc
    winner, win_cycle, win_version = ("B", "c3", "v0003") if loser == "A" else ("A", "c2", "v0002")
    registry = ModelRegistry(registry_store, "mnist")
    pointer = registry.champion_pointer()
    assert (pointer.version, pointer.previous, pointer.generation) == (win_version, "v0001", 2)
    assert [(p.version, p.generation) for p in registry.champion_history()] == [("v0001", 1), (win_version, 2)]
    lose_cycle = "c2" if win_cycle == "c3" else "c3"
    assert registry_store.exists(f"cycles/{win_cycle}/deploy.json")
    assert not registry_store.exists(f"cycles/{lose_cycle}/deploy.json")


def test_a_deploy_retried_after_it_promoted_does_not_promote_again(registry_store):
    """A KFP retry of a deploy that already moved the pointer (its pod lost before it reported):
    no second promotion; without an evaluation record the retry used to promote v0002 over v0002."""
    from daic.components.deploy.logic import DeployConfig
    from daic.components.deploy.logic import run as deploy
    from daic.models.registry import ChampionConflict, ModelRegistry

    registry_store.delete("cycles/c2/evaluation.json")
    deploy(registry_store, "c2", "v0002", DeployConfig())
    try:
        deploy(registry_store, "c2", "v0002", DeployConfig())
    except ChampionConflict:
        pass  # a clean refusal is fine too
    registry = ModelRegistry(registry_store, "mnist")
    assert [(p.version, p.previous, p.generation) for p in registry.champion_history()] == [
        ("v0001", None, 1), ("v0002", "v0001", 2)]
