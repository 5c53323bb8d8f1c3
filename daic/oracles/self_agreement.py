"""Self-agreement under mild test-time transforms: does the prediction survive a nudge?

An input the network classifies correctly usually keeps its class when it is shifted by a
pixel, turned a few degrees or given a little noise; an input near a decision boundary, or
off the data the network learnt, often flips. Agreement of a model with itself over
transformed copies is a label-free error signal that needs neither a reference of the shift nor
a second network (test-time augmentation as a confidence / failure signal: Ayhan & Berens,
2018, "Test-time data augmentation for estimation of heteroscedastic aleatoric uncertainty";
as a correctness predictor under shift, e.g. Deng, Gould & Zheng, 2022, "What does rotation
prediction tell us about classifier accuracy under varying testing environments?"; for
prediction-consistency under transforms as an accuracy estimate, cf. the "agreement on the
line" literature, Baek et al., 2022).

The views are fixed and deterministic (no random draw at serving time), so the signal of an
input is a function of the input alone and reference rows, benchmark rows and operational
inputs are scored the same way:

* shifts of one pixel right and one pixel down (zero padding: MNIST's background is black);
* rotations of +10 and -10 degrees about the centre (bilinear);

* a per-image min-max stretch of the intensities (``stretch``, issue 17's seventh round), which
  undoes an affine intensity change (lower contrast, an unclipped brightness offset);
* a 3x3 median filter, then the stretch (``median``, issue 17's ninth round), which removes
  marks thinner than a stroke (impulse noise, one-pixel lines and dots) and keeps the strokes.

``view_probs(model, images)`` returns the model's softmax on each view, ``(N, K, C)``;
:func:`self_agreement` reduces it, with the model's own prediction on the untransformed input,
to the per-input mean probability the views give that prediction (1: every view is sure of
the same class).

Served (:data:`SERVED_VIEWS`, the ``stretch`` and ``median`` views, averaged: together they
lowered the online estimate's error on held-out corruption types on two model pairs more than
either alone, docs/benchmarks/online.md): the model server
computes it for every input with the champion it serves and sends it in the ``daic.self_agreement``
tag, the views in ``daic.self_agreement.views`` (daic.serving.protocol); the registry computes it
on both references with the same views (daic.models.reference), and the sidecar scores with it
only when the views match the ones its assessor was fitted with.
"""
from __future__ import annotations

import math

import numpy as np

VIEWS: tuple[tuple[str, float], ...] = (
    ("shift_x", 1.0),
    ("shift_y", 1.0),
    ("rotate", 10.0),
    ("rotate", -10.0),
)


# Devillard's 19 compare-exchange steps that leave the median of 9 values in position 4 (after
# Paeth, "Median finding on a 3x3 grid", Graphics Gems, 1990): 16 times cheaper on the model
# server than sorting every window, and exact.
_MEDIAN9 = ((1, 2), (4, 5), (7, 8), (0, 1), (3, 4), (6, 7), (1, 2), (4, 5), (7, 8), (0, 3), (5, 8), (4, 7),
            (3, 6), (1, 4), (2, 5), (4, 7), (4, 2), (6, 4), (4, 2))


def _median3(x):
    """3x3 median of a (N, 1, H, W) tensor, borders replicated."""
    from torch.nn import functional as F
    import torch

    h, w = x.shape[-2:]
    padded = F.pad(x, (1, 1, 1, 1), mode="replicate")
    v = [padded[..., i:i + h, j:j + w] for i in range(3) for j in range(3)]
    for i, j in _MEDIAN9:
        v[i], v[j] = torch.minimum(v[i], v[j]), torch.maximum(v[i], v[j])
    return v[4]


def _median(x, k: int):
    """k x k median (k odd) of a (N, 1, H, W) tensor, borders replicated."""
    from torch.nn import functional as F

    pad = k // 2
    windows = F.pad(x, (pad, pad, pad, pad), mode="replicate").unfold(2, k, 1).unfold(3, k, 1)
    return windows.reshape(*x.shape, k * k).kthvalue(k * k // 2 + 1, dim=-1).values


def _apply(x, kind: str, amount: float):
    """One view of a (N, 1, H, W) float tensor."""
    import torch
    from torch.nn import functional as F

    if kind == "shift_x":
        s = int(amount)
        out = torch.zeros_like(x)
        if s >= 0:
            out[..., :, s:] = x[..., :, : x.shape[-1] - s]
        else:
            out[..., :, :s] = x[..., :, -s:]
        return out
    if kind == "shift_y":
        s = int(amount)
        out = torch.zeros_like(x)
        if s >= 0:
            out[..., s:, :] = x[..., : x.shape[-2] - s, :]
        else:
            out[..., :s, :] = x[..., -s:, :]
        return out
    if kind == "rotate":
        a = math.radians(amount)
        theta = torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]],
                             dtype=x.dtype).expand(x.shape[0], 2, 3)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if kind == "stretch":
        # Per-image min-max stretch of the intensities (amount: ignored). An affine change of
        # intensity (lower contrast, a brightness offset that is not clipped) is undone, so the
        # view asks whether the prediction survives once the input's intensity scale is restored.
        lo = x.amin(dim=(-2, -1), keepdim=True)
        span = x.amax(dim=(-2, -1), keepdim=True) - lo
        return torch.where(span > 1e-3, (x - lo) / span.clamp_min(1e-3), x)
    if kind == "tophat":
        # White top-hat, then the min-max stretch: subtract the morphological opening (erosion then
        # dilation with a square of ``amount`` pixels, wider than a stroke), which keeps a smooth
        # background (haze, an uneven brightness) and removes the strokes, so the difference keeps
        # the strokes on a black background whatever lies under them.
        k = max(3, int(amount) | 1)  # odd, >= 3
        pad = k // 2
        eroded = -F.max_pool2d(F.pad(-x, (pad, pad, pad, pad), value=-1.0), k, stride=1)
        opened = F.max_pool2d(F.pad(eroded, (pad, pad, pad, pad), value=0.0), k, stride=1)
        return _apply(x - opened, "stretch", 0.0)
    if kind == "median":
        # Median filter of ``amount`` pixels (odd, >= 3), then the min-max stretch: removes what
        # is thinner than half the window (impulse noise, one-pixel lines and dots, fine texture)
        # and keeps the strokes, which are wider; the view asks whether the prediction was made
        # on the strokes or on the thin marks over them (Huang et al. 1979's running median).
        k = max(3, int(amount) | 1)
        return _apply(_median3(x) if k == 3 else _median(x, k), "stretch", 0.0)
    if kind == "noise":
        g = torch.Generator().manual_seed(17)
        noise = torch.randn(x.shape[-2:], generator=g, dtype=x.dtype) * amount
        return (x + noise).clamp(0.0, 1.0)
    raise ValueError(f"unknown view {kind!r}; valid: {', '.join(KINDS)}")


KINDS = ("shift_x", "shift_y", "rotate", "stretch", "tophat", "median", "noise")

#: The views the model server computes and the registry builds references with (see the module
#: docstring): two more forward passes of the champion per input. Held-out-type error in
#: benchmarks/online_estimation.py on two model pairs: stretch alone 3.33 / 3.24, median alone
#: 3.16 / 3.19, both 2.94 / 3.08 (docs/benchmarks/online.md, ninth round).
SERVED_VIEWS: tuple[tuple[str, float], ...] = (("stretch", 0.0), ("median", 3.0))


def views_text(views) -> str:
    """``(("stretch", 0.0), ("rotate", 10.0))`` -> ``"stretch:0,rotate:10"``, the inverse of
    :func:`parse_views` (the form the ``daic.self_agreement.views`` tag and references carry)."""
    return ",".join(f"{kind}:{float(amount):g}" for kind, amount in views)


def parse_views(text: str) -> tuple[tuple[str, float], ...]:
    """``"stretch:0,rotate:10"`` -> (("stretch", 0.0), ("rotate", 10.0)); ValueError naming the bad view."""
    views = []
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"views must be a non-empty text like 'stretch:0,rotate:10', got {text!r}")
    for item in text.split(","):
        kind, sep, amount = item.strip().partition(":")
        if kind not in KINDS:
            raise ValueError(f"unknown view {kind!r} in {text!r}; valid kinds: {', '.join(KINDS)}")
        try:
            value = float(amount) if sep else 0.0
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise ValueError(f"view {item.strip()!r}: the amount after ':' must be a finite number")
        views.append((kind, value))
    return tuple(views)


def view_probs(model, images: np.ndarray, views=None, batch_size: int = 1024) -> np.ndarray:
    """The model's softmax on every view of every image: float32 (N, K, C).

    ``images``: float32 (N, 28, 28) (or (N, 1, 28, 28)) in [0, 1]; ``views``: :data:`VIEWS` when None. The model is used in eval mode
    (its mode is restored) through ``model(x)`` (logits)."""
    import torch

    x_all = np.asarray(images, dtype=np.float32)
    if x_all.ndim == 3:
        x_all = x_all[:, None]
    if x_all.ndim != 4:
        raise ValueError(f"images must have shape (N, H, W) or (N, 1, H, W), got {np.shape(images)}")
    views = VIEWS if views is None else views
    if not views:
        raise ValueError("view_probs needs at least one view")
    was_training = model.training
    model.eval()
    out = []
    try:
        with torch.inference_mode():
            for start in range(0, len(x_all), batch_size):
                x = torch.from_numpy(np.require(x_all[start:start + batch_size], requirements=["C", "W"]))
                batch = torch.cat([_apply(x, kind, amount) for kind, amount in views])
                p = torch.softmax(model(batch).float(), dim=1).numpy()
                out.append(p.reshape(len(views), len(x), -1).transpose(1, 0, 2))
    finally:
        model.train(was_training)
    if not out:
        return np.zeros((0, len(views), 0), np.float32)
    return np.concatenate(out).astype(np.float32)


def self_agreement(probs: np.ndarray, views: np.ndarray) -> np.ndarray:
    """Mean probability the views give the model's prediction on the untransformed input, (N,).

    ``probs`` (N, C): the model's softmax on the inputs; ``views`` (N, K, C) from :func:`view_probs`."""
    probs = np.asarray(probs)
    views = np.asarray(views)
    if views.ndim != 3 or probs.ndim != 2 or views.shape[0] != probs.shape[0] or views.shape[2] != probs.shape[1]:
        raise ValueError(f"views must have shape ({probs.shape[0]}, K, {probs.shape[1] if probs.ndim == 2 else 'C'}), "
                         f"got {views.shape}")
    pred = probs.argmax(axis=1)
    return views[np.arange(len(pred)), :, pred].mean(axis=1).astype(np.float64)


def for_assessor(assessor, parts, source: str) -> np.ndarray | None:
    """The self-agreement of ``parts`` (``(values, views text)`` pairs, in order), joined, when
    ``assessor`` scores with it (``uses_self_agreement``); None when it does not.

    The one rule every scorer follows (the sidecar on responses, the first-window labels at
    calibration): ValueError when the assessor scores with it and a part carries none, or names
    other views than the assessor's reference was built with (None included: a reference that did
    not record its views is not trusted). A self-agreement over other views is another signal,
    which the assessor would misread. ``source`` names what carries a part in the message."""
    if not getattr(assessor, "uses_self_agreement", False):
        return None
    need = getattr(assessor, "self_agreement_views", None)
    values = []
    for part, views in parts:
        if part is None:
            raise ValueError(f"the assessor scores with the model's self-agreement (views {need!r}) but {source} "
                             "carries none")
        if need is None or views != need:
            raise ValueError(f"{source}'s self-agreement is over views {views!r}, the assessor's reference over "
                             f"{need!r}")
        values.append(np.asarray(part, dtype=np.float64))
    return np.concatenate(values) if values else np.zeros(0)
