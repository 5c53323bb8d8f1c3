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

    def outputs(self, images: np.ndarray, views=None) -> dict:
        """Everything a response carries for float32 (N, 28, 28) ``images``, as keyword arguments of
        :func:`daic.serving.protocol.build_response`: ``probs``, ``embeddings``, ``shadow_probs`` and
        the champion's ``self_agreement`` over ``views`` with their text ``self_agreement_views``
        (daic.oracles.self_agreement; ``views`` None: the served ones, SERVED_VIEWS; (): none, both
        None). The self-agreement costs one more forward pass of the champion per view and input;
        a version registered with it needs it for every input it scores (issue 17)."""
        from daic.oracles.self_agreement import SERVED_VIEWS, self_agreement, view_probs, views_text

        probs, embeddings, shadow_probs = self.predict(images)
        views = SERVED_VIEWS if views is None else tuple(views)
        sa = self_agreement(probs, view_probs(self.model, images, views)) if views else None
        return {"probs": probs, "embeddings": embeddings, "shadow_probs": shadow_probs, "self_agreement": sa,
                "self_agreement_views": views_text(views) if views else None}


def load_served_model(store: ObjectStore, name: str, version: str) -> ServedModel:
    """Load one version's networks for inference."""
    model, shadow = _registry().load_networks(store, name, version)
    model.eval()
    shadow.eval()
    return ServedModel(name=name, version=version, model=model, shadow=shadow)
