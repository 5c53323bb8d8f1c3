"""A store whose *contents* are wrong, read by the model and filter registries.

Each test takes real objects written by ``ModelRegistry.register`` / ``promote`` (cards, the
champion pointer, its history, the weights and the oracle references, a filter's card and
weights), replaces one with a seeded corrupted variant (tests/corrupt_variants.py), and calls the
reader. A reader must either return something valid (a variant that is still a valid object, e.g.
an optional field dropped) or raise ``StorageError`` whose message names the object's key: never
a KeyError/TypeError/IndexError from inside, and never a NaN figure or a dangling version. Through
the CLI, the same corruption is one line naming the key and exit status 1. After the object is
put back whole, the same registry object reads it again.
"""
from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from corrupt_variants import check_planted, json_variants, npz_variants
from daic.cli import main
from daic.filters.network import FilterNet
from daic.filters.registry import FILTER_FILE, FilterRegistry
from daic.models.card import DataLineage, LabeledBatchRef
from daic.models.networks import build
from daic.models.reference import ReferenceConfig
from daic.models.registry import CARD_FILE, MODEL_FILE, REFERENCE_FILE, SHIFTED_FILE, ModelRegistry
from daic.models.weights import state_dict_to_bytes
from daic.storage import StorageError, open_store

SMALL_REFERENCE = ReferenceConfig(val_limit=32, shift_per_condition=2, corruptions=("fog",))
SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("registry")
    store = open_store(f"file://{root}")
    registry = ModelRegistry(store, "mnist")
    for seed, parent in ((1, None), (2, "v0001")):
        torch.manual_seed(seed)
        refs = [LabeledBatchRef(key="labels/c1/batch-0.npz", count=40, sha256="0" * 64)] if parent else []
        registry.register(model=build("small_cnn"), shadow=build("shadow_net"), parent=parent,
                          data=DataLineage(dataset="mnist", base_count=100, labeled_batches=refs),
                          metrics={"test_accuracy": 0.9, "val_accuracy": 0.9}, reference_config=SMALL_REFERENCE)
    registry.promote("v0001")
    registry.promote("v0002")
    filters = FilterRegistry(store, "mnist")
    filters.register_filter(net=FilterNet(), data=DataLineage(dataset="mnist", base_count=10), wraps_version="v0002")
    return root


@pytest.fixture
def store(store_dir):
    return open_store(f"file://{store_dir}")



@pytest.mark.parametrize("seed", SEEDS)
def test_card_variants(store, seed):
    registry = ModelRegistry(store, "mnist")
    key = f"models/mnist/v0001/{CARD_FILE}"
    check_planted(store, key, json_variants(store.get_bytes(key), seed),
           lambda: (registry.cards(), registry.lineage_lines(), registry.ancestry("v0002")))


@pytest.mark.parametrize("seed", SEEDS)
def test_champion_pointer_and_history_variants(store, seed):
    registry = ModelRegistry(store, "mnist")
    pointer = "models/mnist/champion"
    check_planted(store, pointer, json_variants(store.get_bytes(pointer), seed),
           lambda: (registry.resolve("champion"), registry.lineage_lines()))
    history = "models/mnist/champion-history/000001.json"
    check_planted(store, history, json_variants(store.get_bytes(history), seed), registry.champion_history)


def test_nan_metric_is_refused_not_read(store):
    registry = ModelRegistry(store, "mnist")
    key = f"models/mnist/v0002/{CARD_FILE}"
    original = store.get_bytes(key)
    doc = json.loads(original)
    doc["metrics"]["test_accuracy"] = float("nan")
    store.put_bytes(key, json.dumps(doc).encode())  # json.dumps writes NaN; json.loads reads it back
    try:
        with pytest.raises(StorageError, match=r"v0002/card\.json.*metrics\.test_accuracy.*finite"):
            registry.card("v0002")
        out = CliRunner().invoke(main, ["models", "list", "--store", store.url])
        assert out.exit_code == 1 and "v0002/card.json" in out.output and "Traceback" not in out.output
    finally:
        store.put_bytes(key, original)
    assert registry.card("v0002").metrics["test_accuracy"] == 0.9


def test_card_of_another_version_is_refused(store):
    """A card copied from v0001 into v0002 would make v0002 its own ancestor's twin."""
    registry = ModelRegistry(store, "mnist")
    key = f"models/mnist/v0002/{CARD_FILE}"
    original = store.get_bytes(key)
    store.put_bytes(key, store.get_bytes(f"models/mnist/v0001/{CARD_FILE}"))
    try:
        with pytest.raises(StorageError, match=r"v0002/card\.json.*card of mnist/v0001"):
            registry.card("v0002")
    finally:
        store.put_bytes(key, original)


def test_pointer_to_missing_version_is_one_error(store):
    registry = ModelRegistry(store, "mnist")
    key = "models/mnist/champion"
    original = store.get_bytes(key)
    doc = json.loads(original)
    store.put_bytes(key, json.dumps({**doc, "version": "v0099"}).encode())
    try:
        with pytest.raises(StorageError, match=r"models/mnist/champion.*'v0099', which does not exist"):
            registry.champion()
        out = CliRunner().invoke(main, ["models", "show", "mnist", "champion", "--store", store.url])
        assert out.exit_code == 1 and "models/mnist/champion" in out.output and "v0099" in out.output
        out = CliRunner().invoke(main, ["models", "show", "mnist", "--store", store.url, "champion"])
        assert "Traceback" not in out.output
    finally:
        store.put_bytes(key, original)
    assert registry.champion() == "v0002"


@pytest.mark.parametrize("seed", SEEDS)
def test_reference_variants(store, seed):
    registry = ModelRegistry(store, "mnist")
    for name in (REFERENCE_FILE, SHIFTED_FILE):
        key = f"models/mnist/v0001/{name}"
        check_planted(store, key, npz_variants(store.get_bytes(key), seed),
               lambda: registry.load_oracle_reference("v0001"))


def _weight_variants(raw: bytes, arch: str, seed: int):
    torch.manual_seed(seed)
    state = build(arch).state_dict()
    names = sorted(k for k, v in state.items() if v.numel() and v.is_floating_point())
    name = names[seed % len(names)]
    yield "empty", b""
    yield "truncated", raw[: len(raw) // 2]
    yield "json", b'{"weights": []}'
    yield f"{name} dropped", state_dict_to_bytes({k: v for k, v in state.items() if k != name})
    yield f"{name} transposed", state_dict_to_bytes({**state, name: state[name].reshape(-1)})
    nan = {k: v.clone() for k, v in state.items()}
    nan[name].reshape(-1)[0] = float("nan")
    yield f"{name} with a NaN", state_dict_to_bytes(nan)
    yield "the shadow's weights", state_dict_to_bytes(build("shadow_net" if arch == "small_cnn" else "small_cnn"))


@pytest.mark.parametrize("seed", SEEDS)
def test_weights_variants(store, seed):
    registry = ModelRegistry(store, "mnist")
    key = f"models/mnist/v0001/{MODEL_FILE}"
    check_planted(store, key, _weight_variants(store.get_bytes(key), "small_cnn", seed),
           lambda: registry.load_networks("v0001"))
    original = store.get_bytes(key)
    store.put_bytes(key, original[: len(original) // 3])
    try:
        out = CliRunner().invoke(main, ["models", "evaluate", "mnist", "--version", "v0001", "--store", store.url, "--limit", "8"])
    finally:
        store.put_bytes(key, original)
    assert out.exit_code == 1 and key in out.output and "Traceback" not in out.output, out.output


@pytest.mark.parametrize("seed", SEEDS)
def test_filter_card_and_weights_variants(store, seed):
    filters = FilterRegistry(store, "mnist")
    card = f"models/mnist-filter/v0001/{CARD_FILE}"
    check_planted(store, card, json_variants(store.get_bytes(card), seed),
           lambda: (filters.wraps("v0001"), filters.load_filter("v0001")))
    weights = f"models/mnist-filter/v0001/{FILTER_FILE}"
    torch.manual_seed(seed)
    state = FilterNet().state_dict()
    names = sorted(k for k, v in state.items() if v.numel() and v.is_floating_point())
    name = names[seed % len(names)]
    nan = {k: v.clone() for k, v in state.items()}
    nan[name].reshape(-1)[0] = float("nan")
    variants = [("truncated", store.get_bytes(weights)[:100]), ("json", b"{}"),
                (f"{name} dropped", state_dict_to_bytes({k: v for k, v in state.items() if k != name})),
                (f"{name} reshaped", state_dict_to_bytes({**state, name: state[name].reshape(-1)[:1]})),
                (f"{name} with a NaN", state_dict_to_bytes(nan)),
                ("a classifier's weights", state_dict_to_bytes(build("small_cnn")))]
    check_planted(store, weights, variants, lambda: filters.load_filter("v0001", classifier=build("small_cnn")))
