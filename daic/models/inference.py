"""Batched inference on numpy images: softmax probabilities, embeddings, accuracy.

Shared by the trainer (validation metrics), the registry (oracle references) and the benchmarks,
so every figure is computed the same way.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class Outputs:
    """probs float32 (N, 10), embeddings float32 (N, D)."""

    probs: np.ndarray
    embeddings: np.ndarray

    @property
    def predictions(self) -> np.ndarray:
        return self.probs.argmax(axis=1)


def predict(
    model: nn.Module, images: np.ndarray, *, batch_size: int = 1024, device: torch.device | str = "cpu"
) -> Outputs:
    """Eval-mode outputs for float32 images (N, 28, 28) in [0, 1]; the model's mode is restored."""
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 3:
        raise ValueError(f"images must have shape (N, 28, 28), got {images.shape}")
    was_training = model.training
    model.eval()
    probs, embs = [], []
    try:
        with torch.inference_mode():
            for start in range(0, len(images), batch_size):
                # np.require copies read-only slices (load_split's cached arrays): torch wants writable memory.
                x = torch.from_numpy(np.require(images[start:start + batch_size], requirements=["C", "W"])).to(device)
                emb, logits = model.embed_and_logits(x)
                probs.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
                embs.append(emb.float().cpu().numpy())
    finally:
        model.train(was_training)
    if not probs:
        dim = getattr(model, "embedding_dim", 0)
        return Outputs(np.zeros((0, 10), np.float32), np.zeros((0, dim), np.float32))
    return Outputs(np.concatenate(probs), np.concatenate(embs))


def accuracy(model: nn.Module, images: np.ndarray, labels: np.ndarray, **kwargs) -> float:
    labels = np.asarray(labels)
    if len(labels) != len(images):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    if len(labels) == 0:
        raise ValueError("accuracy of an empty set is undefined")
    return float((predict(model, images, **kwargs).predictions == labels).mean())
