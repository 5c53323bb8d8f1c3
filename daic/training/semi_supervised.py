"""Semi-supervised retraining on the operational pool: what the unlabelled drifted inputs teach.

A cycle labels a few hundred inputs; the window it sampled them from holds thousands more, from the
same drifted distribution, that nobody labels. Three methods use them beside the labelled inputs,
each an option of :class:`daic.training.config.TrainConfig` (off by default, measured one by one and
together by ``benchmarks/improvement.py``):

* **pseudo-labels** (self-training, Lee 2013), filtered: the warm-start champion's predictions on
  the unlabelled inputs whose score is at least ``pseudo_label_threshold`` join the training set as
  ordinary examples (weight 1, not oversampled). The score is the pseudo-oracle's P(correct) that
  the sidecar logged with each input (``pseudo_label_score="p_correct"``) or the model's own
  max-softmax confidence (``"confidence"``), or, with ``"teacher"``, the labels and confidence a
  *teacher* wrote into the pool: the champion behind the cycle's input filter (issue 21;
  :mod:`daic.filters.teacher`). Where the filter undoes the corruption the wrapped champion is far
  more accurate than the champion alone (measured on the demo's mixture: 89-91 % against 60 %;
  97-98 % on its inputs with confidence >= 0.99), so its labels teach the challenger, on the raw
  drifted inputs, what the filter recovers: the teacher sees a restored view, the student the
  corrupted one, as Noisy Student's teacher sees clean inputs and its student noised ones (Xie et
  al. 2020) and FixMatch's teacher a weak view (Sohn et al. 2020).
* **consistency** in the spirit of FixMatch (Sohn et al. 2020): every step also draws an
  unlabelled batch; the network's prediction on a weakly augmented view (a shift of up to 2 pixels)
  is the target, kept only where its confidence reaches ``consistency_threshold``, for the same
  inputs strongly augmented (rotation, scale, shift, contrast, noise, a cut-out square); the masked
  cross-entropy is added with weight ``consistency_weight``.
* **batch-norm re-estimation** (AdaBN, Li et al. 2016): after the last epoch the BatchNorm running
  statistics are recomputed on the unlabelled pool (``bn_adapt="pool"``) or on the pool and as many
  base images (``"pool+base"``, which keeps the clean inputs the server still sees in the
  statistics); networks without BatchNorm (the ShadowNet's group norm) are left as they are.

Everything here is pure tensor code plus one loader; the loop (:mod:`daic.training.loop`) calls it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class UnlabeledPool:
    """Unlabelled operational inputs: ``images`` float32 (N, 28, 28) in [0, 1]; ``p_correct`` (N,)
    the pseudo-oracle's P(correct) logged with each, or None; ``teacher_labels`` (N,) int classes and
    ``teacher_confidence`` (N,) in [0, 1] from a teacher (both or neither), or None."""

    images: np.ndarray
    p_correct: Optional[np.ndarray] = None
    teacher_labels: Optional[np.ndarray] = None
    teacher_confidence: Optional[np.ndarray] = None


def check_unlabeled(arrays: dict[str, np.ndarray], key: str) -> UnlabeledPool:
    """Validate an unlabelled pool's arrays; errors name the key and the field."""
    if "images" not in arrays:
        raise ValueError(f"unlabeled pool {key!r} is missing the array 'images'")
    images = np.asarray(arrays["images"], dtype=np.float32)
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(f"unlabeled pool {key!r}: images must have shape (N, 28, 28), got {images.shape}")
    if len(images) == 0:
        raise ValueError(f"unlabeled pool {key!r} holds no images")
    if not np.isfinite(images).all() or images.min() < 0 or images.max() > 1:
        raise ValueError(f"unlabeled pool {key!r}: images must be finite floats in [0, 1]")
    p = arrays.get("p_correct")
    if p is not None:
        p = np.asarray(p, dtype=np.float64)
        if p.shape != (len(images),) or not np.isfinite(p).all() or p.min() < 0 or p.max() > 1:
            raise ValueError(f"unlabeled pool {key!r}: p_correct must be ({len(images)},) values in [0, 1]")
    t_labels, t_conf = arrays.get("teacher_labels"), arrays.get("teacher_confidence")
    if (t_labels is None) != (t_conf is None):
        raise ValueError(f"unlabeled pool {key!r}: teacher_labels and teacher_confidence go together")
    if t_labels is not None:
        t_labels, t_conf = np.asarray(t_labels), np.asarray(t_conf, dtype=np.float64)
        if (t_labels.shape != (len(images),) or not np.issubdtype(t_labels.dtype, np.integer)
                or t_labels.min() < 0 or t_labels.max() > 9):
            raise ValueError(f"unlabeled pool {key!r}: teacher_labels must be ({len(images)},) integers in 0..9")
        if t_conf.shape != (len(images),) or not np.isfinite(t_conf).all() or t_conf.min() < 0 or t_conf.max() > 1:
            raise ValueError(f"unlabeled pool {key!r}: teacher_confidence must be ({len(images)},) values in [0, 1]")
        t_labels = t_labels.astype(np.int64)
    return UnlabeledPool(images, p, t_labels, t_conf)


def load_unlabeled(store, key: str) -> UnlabeledPool:
    """The ``.npz`` at ``key`` (``images``, optional ``p_correct``)."""
    return check_unlabeled(store.get_arrays(key), key)


# --- pseudo-labels ---------------------------------------------------------------------------

@torch.no_grad()
def predict_probs(net: nn.Module, images: np.ndarray, device: torch.device, batch_size: int = 1024) -> np.ndarray:
    """Softmax outputs of ``net`` in eval mode (restored to its previous mode afterwards)."""
    was_training = net.training
    net.eval()
    out = []
    for start in range(0, len(images), batch_size):
        x = torch.as_tensor(images[start:start + batch_size], device=device)
        out.append(torch.softmax(net(x).float(), dim=1).cpu().numpy())
    net.train(was_training)
    return np.concatenate(out) if out else np.zeros((0, 10), np.float32)


def select_pseudo_labels(probs: np.ndarray, scores: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(indices, labels): the inputs whose score reaches ``threshold``, labelled by argmax ``probs``."""
    if probs.shape[0] != scores.shape[0]:
        raise ValueError(f"probs ({probs.shape[0]}) and scores ({scores.shape[0]}) must be as many")
    keep = np.flatnonzero(scores >= threshold)
    return keep, probs[keep].argmax(axis=1).astype(np.int64)


def pseudo_labeled(net: nn.Module, pool: UnlabeledPool, threshold: float, score: str,
                   device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """(images, labels) the champion ``net`` (or, with ``score="teacher"``, the pool's teacher)
    pseudo-labels with enough confidence (see the module)."""
    if score == "teacher":
        if pool.teacher_labels is None:
            raise ValueError("pseudo_label_score 'teacher' needs teacher_labels and teacher_confidence in the "
                             "unlabeled pool")
        keep = np.flatnonzero(pool.teacher_confidence >= threshold)
        return pool.images[keep], pool.teacher_labels[keep]
    probs = predict_probs(net, pool.images, device)
    if score == "p_correct":
        if pool.p_correct is None:
            raise ValueError("pseudo_label_score 'p_correct' needs p_correct in the unlabeled pool")
        scores = pool.p_correct
    else:
        scores = probs.max(axis=1)
    keep, labels = select_pseudo_labels(probs, scores, threshold)
    return pool.images[keep], labels


@torch.no_grad()
def agreed_pseudo_labels(net: nn.Module, images: np.ndarray, threshold: float, device: torch.device,
                         views: int = 2, seed: int = 0, batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """(indices, labels) of the inputs ``net`` labels confidently *and* consistently: the softmax
    averaged over the plain input and ``views`` weakly shifted copies (:func:`weak_augment`) reaches
    ``threshold``, and every view's argmax is the same class (agreement under augmentation, as
    the teacher's filter in self-training, Xie et al. 2020; Sohn et al. 2020)."""
    was_training = net.training
    net.eval()
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    keep, labels = [], []
    for start in range(0, len(images), batch_size):
        x = torch.as_tensor(images[start:start + batch_size], device=device)
        probs = [torch.softmax(net(x).float(), 1)]
        probs += [torch.softmax(net(weak_augment(x, gen)).float(), 1) for _ in range(views)]
        stacked = torch.stack(probs)  # (views + 1, n, classes)
        mean = stacked.mean(0)
        confidence, label = mean.max(1)
        agree = (stacked.argmax(2) == label.unsqueeze(0)).all(0)
        ok = torch.nonzero((confidence >= threshold) & agree).flatten()
        keep.append((ok + start).cpu().numpy())
        labels.append(label[ok].cpu().numpy())
    net.train(was_training)
    if not keep:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(keep).astype(np.int64), np.concatenate(labels).astype(np.int64)


# --- augmentation ----------------------------------------------------------------------------

def _affine(x: torch.Tensor, angle: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Per-image rotation (radians), scale and shift (pixels) of (N, 1, 28, 28), zero fill."""
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    size = x.shape[-1]
    theta = torch.stack([torch.stack([cos, -sin, -2 * shift[:, 0] / size], 1),
                         torch.stack([sin, cos, -2 * shift[:, 1] / size], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _uniform(n: int, low: float, high: float, gen: torch.Generator, device) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=gen, device=device)


def weak_augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A shift of up to 2 pixels each way (FixMatch's weak view for digits)."""
    x = x.unsqueeze(1) if x.dim() == 3 else x
    n, dev = x.shape[0], x.device
    zero = torch.zeros(n, device=dev)
    shift = torch.stack([_uniform(n, -2, 2, gen, dev), _uniform(n, -2, 2, gen, dev)], 1)
    return _affine(x, zero, torch.ones(n, device=dev), shift)


def strong_augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Rotation (±20°), scale (0.85-1.15), shift (±3 px), contrast/brightness jitter, Gaussian
    noise and a 10x10 cut-out (RandAugment-like distortions plus Cutout, as FixMatch's strong view)."""
    x = x.unsqueeze(1) if x.dim() == 3 else x
    n, dev = x.shape[0], x.device
    angle = _uniform(n, -math.radians(20), math.radians(20), gen, dev)
    shift = torch.stack([_uniform(n, -3, 3, gen, dev), _uniform(n, -3, 3, gen, dev)], 1)
    out = _affine(x, angle, _uniform(n, 0.85, 1.15, gen, dev), shift)
    contrast = _uniform(n, 0.5, 1.2, gen, dev).view(n, 1, 1, 1)
    brightness = _uniform(n, -0.1, 0.3, gen, dev).view(n, 1, 1, 1)
    sigma = _uniform(n, 0.0, 0.2, gen, dev).view(n, 1, 1, 1)
    out = out * contrast + brightness + sigma * torch.randn(out.shape, generator=gen, device=dev)
    size, cut = out.shape[-1], 10
    rows = torch.randint(0, size - cut + 1, (n,), generator=gen, device=dev)
    cols = torch.randint(0, size - cut + 1, (n,), generator=gen, device=dev)
    r = torch.arange(size, device=dev)
    in_rows = (r.view(1, -1) >= rows.view(-1, 1)) & (r.view(1, -1) < rows.view(-1, 1) + cut)
    in_cols = (r.view(1, -1) >= cols.view(-1, 1)) & (r.view(1, -1) < cols.view(-1, 1) + cut)
    mask = (in_rows.unsqueeze(2) & in_cols.unsqueeze(1)).unsqueeze(1)
    return out.masked_fill(mask, 0.0).clamp(0.0, 1.0)


def consistency_targets(net: nn.Module, xu: torch.Tensor, threshold: float, gen: torch.Generator,
                        autocast_dtype: Optional[torch.dtype] = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(strong views, targets, mask): the weak view's predictions (no gradient) as targets, kept
    where their confidence reaches ``threshold``, for strongly augmented copies of ``xu``. The
    caller puts the strong views through the network in the same forward pass as the labelled
    batch (as FixMatch does; one forward per step also keeps DistributedDataParallel's one
    backward per forward)."""
    with torch.no_grad(), torch.autocast(xu.device.type, dtype=autocast_dtype or torch.float32,
                                         enabled=autocast_dtype is not None):
        probs = torch.softmax(net(weak_augment(xu, gen)).float(), dim=1)
    confidence, target = probs.max(dim=1)
    return strong_augment(xu, gen), target, (confidence >= threshold).float()


def masked_consistency(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked cross-entropy averaged over the whole unlabelled batch (FixMatch's unlabelled loss)."""
    return (F.cross_entropy(logits.float(), target, reduction="none") * mask).mean()


def consistency_loss(net: nn.Module, xu: torch.Tensor, threshold: float, gen: torch.Generator,
                     autocast_dtype: Optional[torch.dtype] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(the unlabelled loss, the share of the batch kept) for ``xu`` alone."""
    strong, target, mask = consistency_targets(net, xu, threshold, gen, autocast_dtype)
    with torch.autocast(xu.device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
        logits = net(strong)
    return masked_consistency(logits, target, mask), mask.mean().detach()


# --- batch-norm statistics -------------------------------------------------------------------

_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def has_batchnorm(net: nn.Module) -> bool:
    return any(isinstance(m, _BN) for m in net.modules())


@torch.no_grad()
def adapt_batchnorm(net: nn.Module, images: np.ndarray, device: torch.device, batch_size: int = 512,
                    seed: int = 0) -> int:
    """AdaBN (Li et al. 2016): recompute every BatchNorm layer's running mean and variance as the
    plain average over ``images`` (shuffled, in batches); other layers stay in eval mode (no
    dropout). Returns the number of BatchNorm layers updated (0: nothing to adapt)."""
    layers = [m for m in net.modules() if isinstance(m, _BN)]
    if not layers or len(images) == 0:
        return 0
    was_training = net.training
    saved = [(m, m.momentum) for m in layers]
    net.eval()
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch counts equally
        m.train()
    order = np.random.default_rng(seed).permutation(len(images))
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        if len(idx) < 2:
            continue
        net(torch.as_tensor(images[idx], device=device))
    for m, momentum in saved:
        m.momentum = momentum
    net.train(was_training)
    return len(layers)


def bn_adaptation_images(pool: UnlabeledPool, base: np.ndarray, mode: str, seed: int) -> np.ndarray:
    """The images AdaBN averages over: the pool, or the pool and as many base images."""
    if mode == "pool":
        return pool.images
    if mode == "pool+base":
        take = min(len(pool.images), len(base))
        rows = np.random.default_rng(seed).choice(len(base), size=take, replace=False)
        return np.concatenate([pool.images, base[rows]])
    raise ValueError(f"bn_adapt must be 'off', 'pool' or 'pool+base', got {mode!r}")
