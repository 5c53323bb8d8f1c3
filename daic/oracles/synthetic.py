"""A synthetic oracle reference with a known structure, for the kNN index's tests and the scale
benchmark (issue 22): no model to train, fixed seeds, any size."""
from __future__ import annotations

import numpy as np

from daic.oracles.reference import OracleReference


def synthetic_reference(n: int, seed: int = 0, shift: float = 0.0, d: int = 128, latent: int = 16,
                        classes: int = 10, dtype: type = np.float32) -> OracleReference:
    """``n`` rows: low-rank ReLU embeddings (class clusters in a ``latent``-d subspace of ``d``, as a
    CNN's penultimate layer has), 10 % hard inputs (wider, less confident, often wrong), a noisier
    shadow; ``shift`` widens the clusters and adds hard inputs. The embedding space (``w``,
    ``centres``) is the same for every ``seed``; ``seed`` draws the rows."""
    base = np.random.default_rng(1234)
    w = (base.standard_normal((latent, d)) / np.sqrt(latent)).astype(dtype)
    centres = base.standard_normal((classes, latent)).astype(dtype) * 2.0
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    hard = rng.random(n) < 0.1 + shift
    z = centres[labels] + rng.standard_normal((n, latent), dtype=dtype) * (1 + 1.5 * hard[:, None] + shift)
    emb = np.maximum(z @ w + 0.05 * rng.standard_normal((n, d), dtype=dtype), 0)
    logits = rng.standard_normal((n, classes)) * (1 + 2 * hard[:, None])
    logits[np.arange(n), labels] += 5 - 4 * hard
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    noisy = logits + rng.standard_normal((n, classes))
    shadow = np.exp(noisy - noisy.max(1, keepdims=True))
    shadow /= shadow.sum(1, keepdims=True)
    return OracleReference(probs=probs, embeddings=emb, labels=labels, shadow_probs=shadow)
