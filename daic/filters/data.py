"""The filter's training data: clean images, their corrupted copies, and the operational pool.

Corrupted copies are drawn once per run (deterministic in the seed): each image gets one of the
configured corruption families at a severity 1..5, or stays clean (``clean_share``). Corrupting
per (corruption, severity) group keeps it a few vectorised passes (daic.data.corruptions).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from daic.data.corruptions import SEVERITIES, corrupt
from daic.data.fit_shifts import FIT_SHIFTS, fit_shift
from daic.filters.config import FilterConfig


@dataclass(frozen=True)
class FilterData:
    clean: np.ndarray  # (N, 28, 28) float32 targets
    corrupted: np.ndarray  # (N, 28, 28) float32 inputs
    labels: np.ndarray  # (N,) training labels (of the base split: no new labels)
    pool: np.ndarray  # (M, 28, 28) unlabeled operational inputs (M may be 0)


def corrupt_mixture(images: np.ndarray, corruptions: tuple[str, ...], clean_share: float,
                    seed: int) -> np.ndarray:
    """Each image corrupted by one random (corruption, severity), or kept (``clean_share``)."""
    rng = np.random.default_rng([seed, 2021])
    n = len(images)
    out = np.array(images, dtype=np.float32, copy=True)
    if not corruptions or n == 0:
        return out
    which = rng.integers(0, len(corruptions), size=n)
    severity = rng.integers(1, len(SEVERITIES) + 1, size=n)
    corrupted = rng.random(n) >= clean_share
    for ci, name in enumerate(corruptions):
        for s in SEVERITIES:
            idx = np.flatnonzero(corrupted & (which == ci) & (severity == s))
            if len(idx):
                shift = fit_shift if name in FIT_SHIFTS else corrupt  # a random family, or a named corruption
                out[idx] = shift(out[idx], name, int(s), seed=seed * 131 + ci * 7 + s)
    return out


def load_pool(store, key: Optional[str]) -> np.ndarray:
    if key is None:
        return np.zeros((0, 28, 28), np.float32)
    arrays = store.get_arrays(key)
    if "images" not in arrays:
        raise ValueError(f"{key}: the operational pool needs an 'images' array, has {sorted(arrays)}")
    images = np.asarray(arrays["images"], dtype=np.float32)
    if images.ndim == 2 and images.shape[1] == 784:
        images = images.reshape(-1, 28, 28)
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(f"{key}: images must be (N, 28, 28), got {images.shape}")
    if images.size and (not np.isfinite(images).all() or images.min() < 0 or images.max() > 1):
        raise ValueError(f"{key}: images must be finite and in [0, 1]")
    return images


def assemble(config: FilterConfig, store) -> FilterData:
    from daic.data.mnist import load_split

    train = load_split("train", dataset=config.dataset)
    n = len(train) if config.base_limit is None else min(config.base_limit, len(train))
    clean = np.asarray(train.images[:n], dtype=np.float32)
    corrupted = corrupt_mixture(clean, config.corruptions, config.clean_share, config.seed)
    return FilterData(clean=clean, corrupted=corrupted, labels=np.asarray(train.labels[:n], dtype=np.int64),
                      pool=load_pool(store, config.pool_key))
