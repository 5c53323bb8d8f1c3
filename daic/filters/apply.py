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


def uncertain_mask(net: torch.nn.Module, images: np.ndarray, batch_size: int = 1024) -> np.ndarray | None:
    """The gate's uncertainty part (:meth:`FilterNet.uncertain`) on numpy images; None when off."""
    uncertain = getattr(net, "uncertain", None)
    if uncertain is None or len(images) == 0:
        return None
    out = []
    with torch.inference_mode():
        for a in range(0, len(images), batch_size):
            x = torch.from_numpy(np.require(np.asarray(images[a:a + batch_size], np.float32), requirements=["C", "W"]))
            part = uncertain(x)
            if part is None:
                return None
            out.append(part.numpy())
    return np.concatenate(out)


def gate(net: torch.nn.Module, images: np.ndarray, filtered: np.ndarray, mode: str,
         threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """:func:`daic.filters.gate.select` with the net's uncertainty part in ``gated`` mode."""
    return select(images, filtered, mode, threshold, uncertain_mask(net, images) if mode == "gated" else None)


def predictions_by_mode(classifier, net, images: np.ndarray, threshold: float,
                        modes: tuple[str, ...] = ("gated", "always")) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{mode: (predicted classes, filtered mask)}`` with the filter run once for all modes (it
    is the costly part when it searches alignments)."""
    from daic.models.inference import predict

    images = np.asarray(images, dtype=np.float32)
    filtered = apply_filter(net, images) if any(m != "off" for m in modes) else images
    out = {}
    for mode in modes:
        inputs, mask = gate(net, images, filtered, mode, threshold)
        out[mode] = (predict(classifier, inputs).predictions, mask)
    return out


def wrapped_predictions(classifier, net, images: np.ndarray, mode: str, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(predicted classes, filtered mask) of ``classifier`` behind ``net`` in gate ``mode``."""
    from daic.models.inference import predict

    images = np.asarray(images, dtype=np.float32)
    filtered = apply_filter(net, images) if mode != "off" else images
    inputs, mask = gate(net, images, filtered, mode, threshold)
    return predict(classifier, inputs).predictions, mask
