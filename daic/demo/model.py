"""The demo's first model: trained once on Ray, reused by later runs with the same settings."""
from __future__ import annotations

from typing import Callable

from daic.models.registry import ModelRegistry
from daic.storage import ObjectStore


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
