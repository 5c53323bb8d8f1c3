"""Everything serving reads from the model registry, behind three small functions.

The model server needs a version's champion and shadow networks; the sidecar needs the champion
pointer and a version's oracle reference. Both go through here, so the registry's layout is
known in one place (``daic.models.registry``). torch is imported only by
:func:`load_served_model`, so the sidecar can use the other two without it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from daic.storage import KeyNotFound, ObjectStore


def _registry():
    from daic.models import registry

    return registry


def resolve_version(store: ObjectStore, name: str, *, missing_ok: bool = False) -> str | None:
    """The champion version of ``name``; None (missing_ok) or KeyNotFound when there is none."""
    try:
        return _registry().champion(store, name)
    except KeyNotFound:
        if missing_ok:
            return None
        raise


def load_oracle_reference(store: ObjectStore, name: str, version: str):
    """(OracleReference, ShiftedReference or None) of one version."""
    return _registry().load_oracle_reference(store, name, version)


@dataclass(frozen=True)
class ServedModel:
    """A loaded version: champion and shadow networks in eval mode."""

    name: str
    version: str
    model: Any
    shadow: Any

    def predict(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(probs (N, 10), embeddings (N, D), shadow_probs (N, 10)) for float32 (N, 28, 28)."""
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(images)
            embeddings, logits = self.model.embed_and_logits(x)
            shadow_logits = self.shadow(x)
            probs = torch.softmax(logits.float(), dim=1)
            shadow_probs = torch.softmax(shadow_logits.float(), dim=1)
        return probs.numpy(), embeddings.float().numpy(), shadow_probs.numpy()


def load_served_model(store: ObjectStore, name: str, version: str) -> ServedModel:
    """Load one version's networks for inference."""
    model, shadow = _registry().load_networks(store, name, version)
    model.eval()
    shadow.eval()
    return ServedModel(name=name, version=version, model=model, shadow=shadow)
