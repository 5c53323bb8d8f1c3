"""The demo's first model: trained once on Ray, reused by later runs with the same settings."""
from __future__ import annotations

from typing import Callable

from daic.models.registry import ModelRegistry
from daic.storage import ObjectStore


def ensure_generic_filter(store: ObjectStore, name: str, champion: str, epochs: int, base_limit: int,
                          echo: Callable[[str], None]) -> str:
    """The champion's generic input filter (issue 21: trained on clean images under generic
    corruption families, no labels beyond the training set's, before any drift), trained once and
    reused; the cycle adapts it to its operational pool. Any filter left in service by an earlier
    run is taken out, so each run shows the filter going in."""
    from daic.filters.registry import FilterRegistry, FilterService, read_service, write_service

    if read_service(store, name).version is not None:
        write_service(store, name, FilterService(version=None, reason="daic demo: a new run starts without a filter"))
    registry = FilterRegistry(store, name)
    for card in reversed(registry.cards()):
        tc = card.train_config
        if (card.parent is None and "cycle" not in card.data.notes and tc.get("classifier_version") == champion
                and tc.get("epochs") == epochs and tc.get("base_limit") == base_limit and not tc.get("pool_key")):
            echo(f"reusing generic input filter {card.name} {card.version} (wraps {name} {champion})")
            return card.version
    from daic.filters.config import FilterConfig
    from daic.filters.workflow import train_filter

    echo(f"training the generic input filter ({epochs} epoch on {base_limit} images, Ray Train)...")
    outcome = train_filter(store, FilterConfig(classifier=name, classifier_version=champion, epochs=epochs,
                                               base_limit=base_limit),
                           notes={"purpose": "daic demo generic filter"})
    echo(f"registered {outcome.card.name} {outcome.version} (training {outcome.run.fit_wall_s:.1f}s)")
    return outcome.version


def ensure_initial_model(store: ObjectStore, name: str, epochs: int, echo: Callable[[str], None]) -> str:
    """Make an initial model (no parent) trained with ``epochs`` the champion; train it if none exists.

    Re-running the demo starts from the same first model instead of the last run's retrained one,
    so each run shows a full cycle; the registry keeps every version and the champion history.
    """
    registry = ModelRegistry(store, name)
    for card in registry.cards():
        tc = card.train_config
        if (card.parent is None and tc.get("epochs") == epochs and tc.get("base_limit") is None
                and tc.get("dataset", "mnist") == "mnist" and not tc.get("labels_prefix")):
            pointer = registry.champion_pointer()
            current = pointer.version if pointer else None
            if current != card.version:
                registry.promote(card.version, expected_current=current)
            echo(f"reusing initial model {name} {card.version} "
                 f"(test accuracy {100 * card.metrics.get('test_accuracy', float('nan')):.2f}%) as champion")
            return card.version

    from daic.training.config import TrainConfig
    from daic.training.workflow import train_and_register

    echo(f"training the first model ({epochs} epochs, Ray Train, 2 CPU workers)...")
    pointer = registry.champion_pointer()
    outcome = train_and_register(store, name, TrainConfig(epochs=epochs), promote="never",
                                 notes={"purpose": "daic demo initial model"})
    registry.promote(outcome.version, expected_current=pointer.version if pointer else None)
    acc = outcome.card.metrics.get("test_accuracy", float("nan"))
    echo(f"registered {name} {outcome.version}: test accuracy {100 * acc:.2f}% "
         f"(Ray start {outcome.run.ray_start_s:.1f}s, training {outcome.run.fit_wall_s:.1f}s)")
    return outcome.version
