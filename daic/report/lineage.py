"""The model lineage panel: the registry's own tree of versions (parent → child)."""
from __future__ import annotations

from daic.storage import ObjectStore


def lineage_lines(store: ObjectStore, name: str) -> list[str]:
    from daic.models.registry import ModelRegistry

    registry = ModelRegistry(store, name)
    if not registry.versions():
        return [f"no versions of model {name!r} in {store.url}"]
    return registry.lineage_lines()
