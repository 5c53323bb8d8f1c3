"""What a pseudo-oracle sees of a batch of operational inputs: the model's outputs, not labels.

The sidecar receives, per input, the model's softmax output and penultimate embedding and the
shadow model's softmax output; an :class:`OracleBatch` holds those arrays with their shapes
checked once, so every oracle can index them without re-validating.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from daic.oracles.reference import OracleReference, _check_probs


@dataclass(frozen=True)
class OracleBatch:
    """probs (N, C); embeddings (N, D) or None; shadow_probs (N, C) or None; self_agreement
    (N,) in [0, 1] or None: the mean probability the model's transformed views give its
    prediction (:mod:`daic.oracles.self_agreement`).

    Oracles that need a missing array raise a ValueError naming it.
    """

    probs: np.ndarray
    embeddings: np.ndarray | None = None
    shadow_probs: np.ndarray | None = None
    self_agreement: np.ndarray | None = None

    def __post_init__(self) -> None:
        probs = np.asarray(self.probs, dtype=np.float64)
        _check_probs("probs", probs, None, None)
        n, c = probs.shape
        object.__setattr__(self, "probs", probs)
        if self.embeddings is not None:
            emb = np.asarray(self.embeddings, dtype=np.float64)
            if emb.ndim != 2 or emb.shape[0] != n:
                raise ValueError(f"embeddings must have shape ({n}, D), got {emb.shape}")
            if not np.all(np.isfinite(emb)):
                raise ValueError("embeddings contain NaN or infinite values")
            object.__setattr__(self, "embeddings", emb)
        if self.shadow_probs is not None:
            shadow = np.asarray(self.shadow_probs, dtype=np.float64)
            _check_probs("shadow_probs", shadow, n, c)
            object.__setattr__(self, "shadow_probs", shadow)
        if self.self_agreement is not None:
            sa = np.asarray(self.self_agreement, dtype=np.float64)
            if sa.shape != (n,):
                raise ValueError(f"self_agreement must have shape ({n},), got {sa.shape}")
            if not np.all(np.isfinite(sa)) or np.any((sa < 0) | (sa > 1)):
                raise ValueError("self_agreement must lie in [0, 1]")
            object.__setattr__(self, "self_agreement", sa)

    def __len__(self) -> int:
        return int(self.probs.shape[0])

    @property
    def predictions(self) -> np.ndarray:
        return self.probs.argmax(axis=1)

    def require_embeddings(self, who: str) -> np.ndarray:
        if self.embeddings is None:
            raise ValueError(f"{who} needs embeddings, but the batch has none")
        return self.embeddings

    def require_shadow(self, who: str) -> np.ndarray:
        if self.shadow_probs is None:
            raise ValueError(f"{who} needs shadow_probs, but the batch has none")
        return self.shadow_probs

    def require_self_agreement(self, who: str) -> np.ndarray:
        if self.self_agreement is None:
            raise ValueError(f"{who} needs self_agreement (the model's agreement with itself under test-time "
                             "transforms, daic.oracles.self_agreement), but the batch has none")
        return self.self_agreement

    @classmethod
    def of(cls, reference: OracleReference) -> "OracleBatch":
        """The reference's outputs as a batch (labels dropped)."""
        return cls(reference.probs, reference.embeddings, reference.shadow_probs)

    def subset(self, index: np.ndarray) -> "OracleBatch":
        return OracleBatch(
            self.probs[index],
            None if self.embeddings is None else self.embeddings[index],
            None if self.shadow_probs is None else self.shadow_probs[index],
            None if self.self_agreement is None else self.self_agreement[index],
        )
