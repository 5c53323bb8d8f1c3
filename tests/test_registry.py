"""The model registry: versions, cards, oracle references, the champion pointer, lineage.

Networks are freshly initialised (untrained): the registry does not care how good they are, and
skipping training keeps these tests to seconds.
"""
from __future__ import annotations

import multiprocessing as mp
import re
import threading
import uuid

import numpy as np
import pytest
import torch

from daic.data.fit_shifts import DEFAULT_FIT_SHIFTS
from daic.models.card import DataLineage, LabeledBatchRef, ModelCard
from daic.models.inference import predict
from daic.models.networks import build
from daic.models.reference import ReferenceConfig
from daic.models.registry import (
    ChampionConflict,
    ModelRegistry,
    VersionNotFound,
    champion,
    list_models,
    load_card,
    load_networks,
    load_oracle_reference,
    set_champion,
)
from daic.oracles.pipeline import split_reference
from daic.storage import KeyNotFound, open_store
from daic.storage.file_store import FileStore

SMALL_REFERENCE = ReferenceConfig(val_limit=64, shift_per_condition=3, corruptions=("fog", "rotate"))


def _register(registry: ModelRegistry, seed: int, parent: str | None = None, labeled: int = 0) -> ModelCard:
    torch.manual_seed(seed)
    batches = [LabeledBatchRef(key=f"labels/c{seed}/batch-0.npz", count=labeled, sha256="ab" * 32)] if labeled else []
    data = DataLineage(dataset="mnist", base_count=55_000, labels_prefix=f"labels/c{seed}/" if labeled else None,
                       labeled_batches=batches)
    return registry.register(model=build("small_cnn"), shadow=build("shadow_net"), data=data, parent=parent,
                             metrics={"test_accuracy": 0.5 + seed / 100}, reference_config=SMALL_REFERENCE)


@pytest.fixture
def store(tmp_path):
    return open_store(f"file://{tmp_path / 'store'}")


def test_versions_are_sortable_and_cards_record_lineage(store):
    reg = ModelRegistry(store, "mnist")
    assert reg.versions() == [] and list_models(store) == []
    first = _register(reg, 1)
    second = _register(reg, 2, parent=first.version, labeled=300)
    assert (first.version, second.version) == ("v0001", "v0002")
    assert reg.versions() == ["v0001", "v0002"] and list_models(store) == ["mnist"]
    card = reg.card("v0002")
    assert card.parent == "v0001"
    assert card.data.labels_prefix == "labels/c2/" and card.data.operational_count == 300
    assert card.code_version.startswith("0.1.0")
    assert card.created.tzinfo is not None
    assert card.metrics["test_accuracy"] == pytest.approx(0.52)
    # The same card through the module-level function the pipeline uses, as JSON.
    assert load_card(store, "mnist", "v0002")["parent"] == "v0001"
    with pytest.raises(VersionNotFound, match="no version 'v0009'.*v0001, v0002"):
        reg.card("v0009")
    with pytest.raises(ValueError, match="invalid version"):
        reg.card("latest-ish")
    with pytest.raises(VersionNotFound):
        _register(reg, 3, parent="v0042")  # a parent must exist


def test_weights_and_oracle_reference_round_trip(store):
    reg = ModelRegistry(store, "mnist")
    torch.manual_seed(7)
    model, shadow = build("small_cnn").eval(), build("shadow_net").eval()
    card = reg.register(model=model, shadow=shadow, data=DataLineage(dataset="mnist", base_count=10),
                        reference_config=SMALL_REFERENCE)
    loaded_model, loaded_shadow = load_networks(store, "mnist", card.version)
    x = np.random.default_rng(0).random((6, 28, 28), dtype=np.float32)
    assert np.allclose(predict(loaded_model, x).probs, predict(model, x).probs, atol=1e-6)
    assert np.allclose(predict(loaded_shadow, x).probs, predict(shadow, x).probs, atol=1e-6)

    clean, shifted = load_oracle_reference(store, "mnist", card.version)
    from daic.data.mnist import load_split

    val = load_split("val")
    assert len(clean) == 64 and np.array_equal(clean.labels, val.labels[:64])
    assert clean.embeddings.shape == (64, 128)
    assert np.allclose(clean.probs, predict(model, val.images[:64]).probs, atol=1e-5)
    assert np.allclose(clean.shadow_probs, predict(shadow, val.images[:64]).probs, atol=1e-5)
    assert card.metrics["reference_val_accuracy"] == pytest.approx(clean.accuracy)
    # Shifted reference: 2 corruptions and the fit-only families (daic.data.fit_shifts) x 5 severities
    # x 3 calibration rows, labelled by condition.
    kinds = ("fog", "rotate") + DEFAULT_FIT_SHIFTS
    assert len(shifted.reference) == len(kinds) * 5 * 3
    assert sorted(set(shifted.conditions)) == sorted(f"{c}/{s}" for c in kinds for s in range(1, 6))
    _bank, calibration = split_reference(64)
    assert set(shifted.reference.labels) <= set(val.labels[calibration])


def test_champion_pointer_compare_and_set(store):
    reg = ModelRegistry(store, "mnist")
    for seed in (1, 2, 3):
        _register(reg, seed)
    with pytest.raises(KeyNotFound, match="no champion"):
        champion(store, "mnist")
    with pytest.raises(ChampionConflict, match="expected champion 'v0001' but it is None"):
        reg.promote("v0002", expected_current="v0001")
    assert reg.champion_pointer() is None  # nothing written on conflict
    first = reg.promote("v0001", expected_current=None)
    assert (first.version, first.previous, first.generation) == ("v0001", None, 1)
    set_champion(store, "mnist", "v0002", expected_current="v0001")
    with pytest.raises(ChampionConflict, match="expected champion 'v0001' but it is 'v0002'"):
        reg.promote("v0003", expected_current="v0001")  # a stale decision is refused
    assert champion(store, "mnist") == "v0002"
    reg.promote("v0003")  # without expected_current: unconditional
    history = reg.champion_history()
    assert [(p.version, p.previous, p.generation) for p in history] == [
        ("v0001", None, 1), ("v0002", "v0001", 2), ("v0003", "v0002", 3)]
    with pytest.raises(VersionNotFound):
        reg.promote("v0077")


def _promote_worker(url: str, version: str, barrier, results) -> None:
    registry = ModelRegistry(open_store(url), "mnist")
    barrier.wait()
    try:
        registry.promote(version, expected_current="v0001")
        results.put((version, "won"))
    except ChampionConflict:
        results.put((version, "conflict"))


def test_concurrent_promotions_from_processes_have_exactly_one_winner(store):
    reg = ModelRegistry(store, "mnist")
    for seed in range(1, 6):
        _register(reg, seed)
    reg.promote("v0001")
    ctx = mp.get_context("fork")  # the child only touches the store: no torch state to worry about
    barrier, results = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_promote_worker, args=(store.url, f"v000{i}", barrier, results)) for i in (2, 3, 4, 5)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    outcomes = dict(results.get(timeout=5) for _ in procs)
    winners = [v for v, o in outcomes.items() if o == "won"]
    assert len(winners) == 1, outcomes
    pointer = reg.champion_pointer()
    assert pointer.version == winners[0] and pointer.previous == "v0001" and pointer.generation == 2


def _duel_worker(url: str, me: int, rounds: int, barrier, results) -> None:
    registry = ModelRegistry(open_store(url), "mnist")
    for round_ in range(rounds):
        barrier.wait()
        current = registry.champion()
        barrier.wait()  # both decided against the same champion before either writes
        others = [v for v in ("v0001", "v0002", "v0003") if v != current]
        try:
            registry.promote(others[me], expected_current=current)
            results.put((round_, me, "won"))
        except ChampionConflict:
            results.put((round_, me, "conflict"))
        except Exception as exc:  # noqa: BLE001 - reported to the parent, which fails the test
            results.put((round_, me, f"error: {exc!r}"))


@pytest.mark.parametrize("backend", ["file", "s3"])
def test_two_processes_promoting_40_times_one_wins_each_time(backend, tmp_path, request):
    """Two processes promote against the same champion, 40 rounds, against a real SeaweedFS (or a
    directory): in every round exactly one wins and the other is told of the conflict, and the
    history holds one record per generation, each following the one before."""
    if backend == "s3":
        request.getfixturevalue("s3_env")
        url = f"s3://daic-test/duel-{uuid.uuid4().hex}"
        store = open_store(url, create_bucket=True)
    else:
        url = f"file://{tmp_path / 'store'}"
        store = open_store(url)
    reg = ModelRegistry(store, "mnist")
    for seed in (1, 2, 3):
        _register(reg, seed)
    reg.promote("v0001", expected_current=None)
    rounds = 40
    ctx = mp.get_context("fork")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_duel_worker, args=(url, me, rounds, barrier, results)) for me in (0, 1)]
    for p in procs:
        p.start()
    got = [results.get(timeout=120) for _ in range(2 * rounds)]
    for p in procs:
        p.join(30)
    by_round: dict[int, list[str]] = {}
    for round_, _me, outcome in got:
        by_round.setdefault(round_, []).append(outcome)
    bad = {r: o for r, o in by_round.items() if sorted(o) != ["conflict", "won"]}
    assert not bad, f"rounds without exactly one winner: {bad}"
    history = reg.champion_history()
    assert [p.generation for p in history] == list(range(1, rounds + 2))
    assert all(h.previous == prev.version for prev, h in zip(history, history[1:]))
    pointer = reg.champion_pointer()
    assert (pointer.generation, pointer.version, pointer.token) == (rounds + 1, history[-1].version, history[-1].token)


def test_readers_never_see_a_partial_pointer_while_it_flips(store):
    reg = ModelRegistry(store, "mnist")
    for seed in (1, 2):
        _register(reg, seed)
    reg.promote("v0001")
    stop, seen, errors = threading.Event(), set(), []

    def read() -> None:
        reader = ModelRegistry(open_store(store.url), "mnist")
        while not stop.is_set():
            try:
                seen.add(reader.champion())
            except Exception as exc:  # any parse error or missing pointer is a failure
                errors.append(exc)

    thread = threading.Thread(target=read)
    thread.start()
    for i in range(60):
        reg.promote("v0002" if i % 2 == 0 else "v0001")
    stop.set()
    thread.join()
    assert errors == []
    assert seen <= {"v0001", "v0002"} and seen


class _RacingStore(FileStore):
    """A real file store where another promoter's pointer lands between our read and our write
    (the interleaving a lost update needs), to check that our write is refused and theirs kept."""

    def put_bytes(self, key, data, **condition):
        if key.endswith("/champion") and b"v0002" in data:
            import json

            other = json.loads(data)
            other.update(version="v0003", token="someone-else")
            super().put_bytes(key, json.dumps(other).encode())
        return super().put_bytes(key, data, **condition)


def test_a_promotion_losing_a_race_writes_nothing(tmp_path):
    racing = _RacingStore(tmp_path / "store")
    reg = ModelRegistry(racing, "mnist")
    for seed in (1, 2, 3):
        _register(reg, seed)
    reg.promote("v0001")
    with pytest.raises(ChampionConflict, match="changed concurrently.*'v0003'.*'v0002' was not written"):
        reg.promote("v0002")  # unconditional, and still it must not overwrite a concurrent promotion
    pointer = reg.champion_pointer()
    assert (pointer.version, pointer.token) == ("v0003", "someone-else")
    assert [h.version for h in reg.champion_history()] == ["v0001"]  # no record of the lost promotion


def test_a_missing_history_record_is_filled_by_the_next_promotion(store):
    """A promoter that died after writing the pointer and before its history record: the next
    promotion writes the missing record (the real one, from the pointer), and keeps the others."""
    reg = ModelRegistry(store, "mnist")
    for seed in (1, 2, 3):
        _register(reg, seed)
    reg.promote("v0001")
    before = store.get_bytes("models/mnist/champion-history/000001.json")
    second = reg.promote("v0002")
    store.delete("models/mnist/champion-history/000002.json")  # as if the promoter died here
    reg.promote("v0003", expected_current="v0002")
    history = reg.champion_history()
    assert [(h.version, h.previous, h.generation) for h in history] == [
        ("v0001", None, 1), ("v0002", "v0001", 2), ("v0003", "v0002", 3)]
    assert history[1].token == second.token
    assert store.get_bytes("models/mnist/champion-history/000001.json") == before


def test_lineage_tree_and_ancestry(store):
    reg = ModelRegistry(store, "mnist")
    _register(reg, 1)
    _register(reg, 2, parent="v0001", labeled=100)
    _register(reg, 3, parent="v0002", labeled=200)
    _register(reg, 4, parent="v0001", labeled=50)
    _register(reg, 5)  # a second root (trained from scratch again)
    reg.promote("v0003")
    assert reg.ancestry("v0003") == ["v0003", "v0002", "v0001"]
    lines = reg.lineage_lines()
    assert [re.match(r"^(.*?v\d{4})", line).group(1) for line in lines] == [
        "v0001", "├── v0002", "│   └── v0003", "└── v0004", "v0005"]
    assert "[champion]" in lines[2] and "+200 labeled" in lines[2] and "base only" in lines[0]
    assert sum("[champion]" in line for line in lines) == 1


def test_registry_on_s3(s3_env):
    store = open_store("s3://daic/registry-test", create_bucket=True)
    reg = ModelRegistry(store, "mnist")
    first = _register(reg, 1)
    _register(reg, 2, parent=first.version)
    reg.promote("v0002", expected_current=None)
    assert reg.versions() == ["v0001", "v0002"]
    assert champion(store, "mnist") == "v0002"
    assert reg.ancestry("v0002") == ["v0002", "v0001"]
    clean, _ = load_oracle_reference(store, "mnist", "v0002")
    assert len(clean) == 64


def test_bad_names_are_rejected(store):
    with pytest.raises(ValueError, match="invalid model name 'MNIST/x'"):
        ModelRegistry(store, "MNIST/x")
    with pytest.raises(VersionNotFound):
        ModelRegistry(store, "mnist").resolve("latest")
    with pytest.raises(KeyNotFound):
        ModelRegistry(store, "mnist").resolve("champion")
