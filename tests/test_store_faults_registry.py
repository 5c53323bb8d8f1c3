"""Faults at the object-store boundary of the model registry (daic.models.registry) and the filter
registry (daic.filters.registry): a registration interrupted at any of its writes leaves no version
that reads as valid; a promotion reports what happened to the champion pointer; after the store
returns, registering and promoting work again with the same registry object.

The faults come from an in-process wrapper around a file store that raises the error the S3
backend raises for an unreachable endpoint (StorageError naming the store), before a write or
after it was applied (an answer lost on the way back). Stopping a real server exactly between two
chosen writes of one registration is not practical; the S3 backend's own translation of refused
connections and timeouts into StorageError is tested against a real SeaweedFS in test_storage.py.
"""
from __future__ import annotations

import pytest
import torch

from daic.components.testing.forwarding_store import ForwardingStore
from daic.filters.network import FilterNet
from daic.filters.registry import FILTER_FILE, FilterRegistry
from daic.models.card import DataLineage
from daic.models.networks import build
from daic.models.reference import ReferenceConfig
from daic.models.registry import (
    CARD_FILE,
    CLAIM_FILE,
    MODEL_FILE,
    REFERENCE_FILE,
    SHADOW_FILE,
    SHIFTED_FILE,
    ModelRegistry,
    VersionNotFound,
)
from daic.storage import ObjectStore, StorageError, open_store

SMALL_REFERENCE = ReferenceConfig(val_limit=32, shift_per_condition=2, corruptions=("fog",))
DATA = DataLineage(dataset="mnist", base_count=55_000)


class FaultyStore(ForwardingStore):
    """Raises StorageError (as S3Store does for an unreachable endpoint) on writes whose key ends
    with ``fail_suffix``: before writing, or after (``applied=True``: the write landed, its answer
    was lost)."""

    def __init__(self, inner: ObjectStore) -> None:
        super().__init__(inner)
        self.fail_suffix: str | None = None
        self.applied = False

    def put_bytes(self, key, data, *, if_none_match=False, if_match=None):
        failing = self.fail_suffix is not None and key.endswith(self.fail_suffix)
        if failing and not self.applied:
            raise StorageError(f"{self.url} (endpoint 127.0.0.1:1): endpoint unreachable while trying to write {key!r}")
        etag = self.inner.put_bytes(key, data, if_none_match=if_none_match, if_match=if_match)
        if failing:
            raise StorageError(f"{self.url} (endpoint 127.0.0.1:1): timed out while trying to write {key!r}")
        return etag


@pytest.fixture
def store(tmp_path):
    return FaultyStore(open_store(f"file://{tmp_path / 'store'}"))


def register(reg: ModelRegistry, seed: int):
    torch.manual_seed(seed)
    return reg.register(model=build("small_cnn"), shadow=build("shadow_net"), data=DATA,
                        reference_config=SMALL_REFERENCE)


def assert_only_complete_versions(reg: ModelRegistry, complete: list[str], half: str) -> None:
    assert reg.versions() == complete
    assert reg.resolve("latest") == complete[-1]
    with pytest.raises(VersionNotFound, match=half):
        reg.card(half)
    with pytest.raises(VersionNotFound):
        reg.load_networks(half)


def test_a_registration_interrupted_at_any_write_leaves_no_valid_looking_version(store):
    reg = ModelRegistry(store, "mnist")
    complete = [register(reg, 0).version]
    reg.promote(complete[0])
    for seed, file in enumerate((CLAIM_FILE, MODEL_FILE, SHADOW_FILE, REFERENCE_FILE, SHIFTED_FILE, CARD_FILE), 1):
        store.fail_suffix = f"/{file}"
        with pytest.raises(StorageError, match=f"{store.url}.*unreachable"):
            register(reg, seed)
        store.fail_suffix = None
        half = f"v{len(complete) + seed:04d}" if file != CLAIM_FILE else "v9999"
        assert_only_complete_versions(reg, complete, half)
        assert reg.champion() == complete[0]
    # the store is back: the same registry object registers again, past every claimed number
    card = register(reg, 99)
    assert card.version == "v0007" and reg.versions() == [*complete, "v0007"]
    model, _ = reg.load_networks("v0007")
    assert isinstance(model, torch.nn.Module)


def test_a_filter_registration_interrupted_leaves_no_valid_looking_filter(store):
    classifier = register(ModelRegistry(store, "mnist"), 0).version
    filters = FilterRegistry(store, "mnist")
    torch.manual_seed(0)
    for file in (CLAIM_FILE, FILTER_FILE, CARD_FILE):
        store.fail_suffix = f"/{file}"
        with pytest.raises(StorageError, match=f"{store.url}.*unreachable"):
            filters.register_filter(net=FilterNet(), data=DATA, wraps_version=classifier)
        store.fail_suffix = None
        assert filters.versions() == []
    card = filters.register_filter(net=FilterNet(), data=DATA, wraps_version=classifier)
    assert filters.versions() == [card.version] == ["v0003"]  # v0001, v0002 were claimed, never completed
    assert isinstance(filters.load_filter(card.version), FilterNet)


def test_a_promotion_whose_pointer_landed_reports_success_when_its_history_record_fails(store):
    """The pointer is the promotion's commit point; its history record is written after it, and a
    missing one is filled by the next promotion (registry docstring). So a store that fails on the
    history record must not make the caller believe the promotion failed."""
    reg = ModelRegistry(store, "mnist")
    v1, v2 = register(reg, 0).version, register(reg, 1).version
    reg.promote(v1)
    store.fail_suffix = "champion-history/000002.json"  # the new pointer's record
    pointer = reg.promote(v2, expected_current=v1)
    store.fail_suffix = None
    assert (pointer.version, pointer.previous, reg.champion()) == (v2, v1, v2)
    reg.promote(v1, expected_current=v2)  # the store is back: the missing record is filled in
    assert [p.version for p in reg.champion_history()] == [v1, v2, v1]


@pytest.mark.parametrize("applied", [False, True], ids=["refused", "applied-answer-lost"])
def test_a_promotion_failing_at_the_pointer_is_an_error_naming_the_store(store, applied):
    """Before the pointer lands: an error, the champion unchanged. Landed but the answer lost: an
    error too (the caller cannot know), and the champion pointer is whole and readable; either
    way, once the store is back, the next promotion decides against what is really there."""
    reg = ModelRegistry(store, "mnist")
    v1, v2 = register(reg, 0).version, register(reg, 1).version
    reg.promote(v1)
    store.fail_suffix, store.applied = "/champion", applied
    with pytest.raises(StorageError, match=store.url):
        reg.promote(v2, expected_current=v1)
    store.fail_suffix = None
    now = reg.champion()
    assert now == (v2 if applied else v1)
    pointer = reg.promote(v1 if applied else v2, expected_current=now)
    assert reg.champion() == pointer.version and pointer.previous == now
    assert [p.version for p in reg.champion_history()] == ([v1, v2, v1] if applied else [v1, v2])
