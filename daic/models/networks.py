"""The two network families: the champion family (``SmallCNN``) and its ``ShadowNet``.

Both take float32 images (N, 28, 28) or (N, 1, 28, 28) in [0, 1], return logits from ``model(x)``
and expose ``embed_and_logits(x) -> (embedding, logits)``: the penultimate activations are what
the embedding-based pseudo-oracles measure distances in (docs/CONTRACTS.md).

The shadow is deliberately a *different* architecture (strided convolutions, 5x5 first kernel,
global average pooling, no dense hidden layer) rather than the same net with another seed: a
disagreement-based oracle learns most when the two models fail on different inputs, and models
with different inductive biases do so more often than re-seeded copies.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

NUM_CLASSES = 10
IMAGE_SIZE = 28
ARCHS: tuple[str, ...] = ("small_cnn", "shadow_net")


def _as_nchw(x: torch.Tensor) -> torch.Tensor:
    """Accept (N, 28, 28) or (N, 1, 28, 28); anything else is a caller error, named."""
    if x.dim() == 3:
        x = x.unsqueeze(1)
    if x.dim() != 4 or x.shape[1:] != (1, IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(
            f"expected images of shape (N, 28, 28) or (N, 1, 28, 28), got {tuple(x.shape)}"
        )
    return x


class SmallCNN(nn.Module):
    """Two 3x3 conv blocks (conv, batch norm, ReLU, 2x2 max-pool) and a 128-unit dense layer.

    About 0.21 M parameters and 2.4 MFLOP per forward pass (7.1 MFLOP per training sample):
    small enough to train to >= 99 % on MNIST in a few CPU minutes; the 128-d dense layer is the
    embedding.
    """

    embedding_dim = 128

    def __init__(self, dropout: float = 0.25) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),  # 14x14
            nn.Conv2d(16, 32, 3, padding=1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),  # 7x7
        )
        self.embed = nn.Linear(32 * 7 * 7, self.embedding_dim)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(self.embedding_dim, NUM_CLASSES)

    def embed_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.features(_as_nchw(x)).flatten(1)
        emb = F.relu(self.embed(h))
        return emb, self.head(self.dropout(emb))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed_and_logits(x)[1]


class ShadowNet(nn.Module):
    """All-convolutional: 5x5 stride-2, 3x3 stride-2, 3x3, then global average pooling.

    No max-pooling and no dense hidden layer, so its errors differ from SmallCNN's; the 64-d
    pooled feature vector is the embedding. 57 k parameters, 5.7 MFLOP per forward pass. Its
    group norm and global pooling make it far more sensitive than SmallCNN to global intensity
    shifts (fog, contrast): on those it disagrees with the champion loudly, which is what a
    disagreement oracle wants to see under shift.
    """

    embedding_dim = 64

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 5, stride=2, padding=2),  # 14x14
            nn.GELU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1),  # 7x7
            nn.GroupNorm(8, 64),
            nn.GELU(),
            nn.Conv2d(64, self.embedding_dim, 3, padding=1),
            nn.GELU(),
        )
        self.head = nn.Linear(self.embedding_dim, NUM_CLASSES)

    def embed_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        emb = self.features(_as_nchw(x)).mean(dim=(2, 3))
        return emb, self.head(emb)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed_and_logits(x)[1]


_REGISTRY: dict[str, type[nn.Module]] = {"small_cnn": SmallCNN, "shadow_net": ShadowNet}


def build(arch: str) -> nn.Module:
    """A freshly initialised network by name (one of ``ARCHS``)."""
    try:
        cls = _REGISTRY[arch]
    except KeyError:
        raise ValueError(f"unknown arch {arch!r}; valid: {', '.join(ARCHS)}") from None
    return cls()


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
