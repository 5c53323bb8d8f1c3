"""Run a filter on numpy images, and measure a classifier behind it (gated or always-on)."""
from __future__ import annotations

import numpy as np
import torch

from daic.filters.gate import select


def apply_filter(net: torch.nn.Module, images: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    images = np.asarray(images, dtype=np.float32)
    if len(images) == 0:
        return images.copy()
    net.eval()
    out = []
    with torch.inference_mode():
        for a in range(0, len(images), batch_size):
            x = torch.from_numpy(np.require(images[a:a + batch_size], requirements=["C", "W"]))
            out.append(net(x).numpy())
    return np.concatenate(out)


def predictions_by_mode(classifier, net, images: np.ndarray, threshold: float,
                        modes: tuple[str, ...] = ("gated", "always")) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{mode: (predicted classes, filtered mask)}`` with the filter run once for all modes (it
    is the costly part when it searches alignments)."""
    from daic.models.inference import predict

    images = np.asarray(images, dtype=np.float32)
    filtered = apply_filter(net, images) if any(m != "off" for m in modes) else images
    out = {}
    for mode in modes:
        inputs, mask = select(images, filtered, mode, threshold)
        out[mode] = (predict(classifier, inputs).predictions, mask)
    return out


def wrapped_predictions(classifier, net, images: np.ndarray, mode: str, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(predicted classes, filtered mask) of ``classifier`` behind ``net`` in gate ``mode``."""
    from daic.models.inference import predict

    images = np.asarray(images, dtype=np.float32)
    filtered = apply_filter(net, images) if mode != "off" else images
    inputs, mask = select(images, filtered, mode, threshold)
    return predict(classifier, inputs).predictions, mask
