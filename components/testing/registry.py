"""Registry versions for tests that need versions to exist but not to be any good.

The networks are freshly initialised (seeded) and the oracle references tiny, so a version costs
about a second; what is real is the registry itself (cards, lineage, the champion pointer).
"""
from __future__ import annotations

from daic.storage import ObjectStore


def register_untrained(store: ObjectStore, parents: list[str | None], name: str = "mnist",
                       champion: str | None = "v0001") -> list[str]:
    """Register one version per entry of ``parents`` (in order, v0001 first); promote ``champion``."""
    import torch

    from daic.models.card import DataLineage
    from daic.models.networks import build
    from daic.models.reference import ReferenceConfig
    from daic.models.registry import ModelRegistry

    registry = ModelRegistry(store, name)
    small = ReferenceConfig(val_limit=16, shift_per_condition=0)
    versions = []
    for seed, parent in enumerate(parents, start=1):
        torch.manual_seed(seed)
        card = registry.register(model=build("small_cnn"), shadow=build("shadow_net"), parent=parent,
                                 data=DataLineage(dataset="mnist", base_count=100), reference_config=small,
                                 metrics={"test_accuracy": 0.5})
        versions.append(card.version)
    if champion:
        registry.promote(champion)
    return versions
