"""Build a version's oracle references: what the pseudo-oracles calibrate on.

* ``oracle_reference.npz`` (docs/CONTRACTS.md): the model's softmax and embeddings, the shadow's
  softmax and the labels on the val split.
* ``shifted_reference.npz``: the same outputs on synthetic corruptions of the val split's
  *calibration* rows (``daic.oracles.pipeline.split_reference``; never the rows the distance
  oracles index, never test), every corruption at every severity, with a ``conditions`` array
  ``"<corruption>/<severity>"``. The online assessor learns from it what errors look like under
  shift, which a 99 %-accurate model barely shows on clean val.

Computed once when a version is registered, so the sidecar never needs images or training data.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
from torch import nn

from daic.data.fit_shifts import DEFAULT_FIT_SHIFTS
from daic.models.inference import predict
from daic.oracles.pipeline import ShiftedReference, split_reference
from daic.oracles.reference import OracleReference
from daic.oracles.self_agreement import SERVED_VIEWS


@dataclass(frozen=True)
class ReferenceConfig:
    """``val_limit``: use the first N val images (None = all 5,000). ``shift_per_condition``: val
    calibration rows per (corruption, severity); 0 skips the shifted reference."""

    dataset: str = "mnist"
    val_limit: Optional[int] = None
    shift_per_condition: int = 100
    corruptions: Optional[tuple[str, ...]] = None  # None = every corruption in daic.data
    # Random shift families that only fit the assessor (daic.data.fit_shifts): shifts between and
    # beyond the named corruptions, rows "<family>/<severity>" beside theirs (issue 17).
    fit_shifts: tuple[str, ...] = DEFAULT_FIT_SHIFTS
    seed: int = 77
    # The model's agreement with itself under test-time transforms on both references
    # (daic.oracles.self_agreement); the assessor then uses it and needs it for every input, which
    # the model server sends (the ``daic.self_agreement`` tag, over the same views).
    self_agreement: bool = True
    # The views it is computed over: the served ones (SERVED_VIEWS, the per-image intensity
    # stretch and the median view, issue 17's ninth round) by default; None: the four shift/rotate VIEWS.
    self_agreement_views: Optional[tuple[tuple[str, float], ...]] = SERVED_VIEWS
    # Store the model's linear head with the shifted reference, so the assessor can recompute
    # logits from embeddings (the energy signal, daic.oracles.combiner.ENERGY_FEATURE).
    energy_head: bool = True

    def __post_init__(self) -> None:
        if self.val_limit is not None and self.val_limit < 4:
            raise ValueError(f"val_limit must be >= 4 (an oracle reference needs both halves), got {self.val_limit}")
        if self.shift_per_condition < 0:
            raise ValueError(f"shift_per_condition must be >= 0, got {self.shift_per_condition}")
        from daic.data.fit_shifts import FIT_SHIFTS

        unknown = sorted(set(self.fit_shifts) - set(FIT_SHIFTS))
        if unknown:
            raise ValueError(f"unknown fit_shifts {unknown}; valid: {', '.join(FIT_SHIFTS)}")


def oracle_reference(model: nn.Module, shadow: nn.Module, images: np.ndarray, labels: np.ndarray) -> OracleReference:
    main = predict(model, images)
    side = predict(shadow, images)
    return OracleReference(probs=main.probs, embeddings=main.embeddings,
                           labels=np.asarray(labels, dtype=np.int64), shadow_probs=side.probs)


def shifted_reference(
    model: nn.Module, shadow: nn.Module, images: np.ndarray, labels: np.ndarray, *,
    per_condition: int, corruptions: tuple[str, ...], seed: int, fit_shifts: tuple[str, ...] = (),
) -> ShiftedReference:
    """Outputs on every (corruption, severity) applied to a seeded draw of calibration rows."""
    shifted_images, shifted_labels, conditions = shifted_inputs(
        images, labels, per_condition=per_condition, corruptions=corruptions, seed=seed, fit_shifts=fit_shifts)
    ref = oracle_reference(model, shadow, shifted_images, shifted_labels)
    return ShiftedReference(ref, np.array(conditions))


def shifted_inputs(images: np.ndarray, labels: np.ndarray, *, per_condition: int, corruptions: tuple[str, ...],
                   seed: int, fit_shifts: tuple[str, ...] = ()) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(images, labels, conditions) of the shifted reference: every (corruption, severity), then
    every fit-only family (daic.data.fit_shifts) at every severity, applied to a seeded draw of
    calibration rows."""
    from daic.data.corruptions import SEVERITIES, corrupt
    from daic.data.fit_shifts import fit_shift

    _bank, calibration = split_reference(len(images))
    take = min(per_condition, len(calibration))
    batches, batch_labels, conditions = [], [], []
    for ci, name in enumerate(corruptions):
        for severity in SEVERITIES:
            rng = np.random.default_rng([seed, ci, severity])
            rows = rng.choice(calibration, size=take, replace=False)
            batches.append(corrupt(np.asarray(images[rows]), name, severity, seed=int(rng.integers(2**31))))
            batch_labels.append(np.asarray(labels[rows]))
            conditions += [f"{name}/{severity}"] * take
    for fi, name in enumerate(fit_shifts):
        for severity in SEVERITIES:
            rng = np.random.default_rng([seed, 1000 + fi, severity])
            rows = rng.choice(calibration, size=take, replace=False)
            batches.append(fit_shift(np.asarray(images[rows]), name, severity, seed=int(rng.integers(2**31))))
            batch_labels.append(np.asarray(labels[rows]))
            conditions += [f"{name}/{severity}"] * take
    return np.concatenate(batches), np.concatenate(batch_labels), conditions


def linear_head(model: nn.Module, embedding_dim: int):
    """(weight (C, D), bias (C,)) of the model's ``head`` when it is one linear layer on the
    ``embedding_dim``-wide embedding that inference returns (logits = emb @ W.T + b), else None."""
    head = getattr(model, "head", None)
    if not isinstance(head, nn.Linear) or head.bias is None or head.in_features != embedding_dim:
        return None
    return (head.weight.detach().cpu().double().numpy(), head.bias.detach().cpu().double().numpy())


def build_references(
    model: nn.Module, shadow: nn.Module, config: ReferenceConfig = ReferenceConfig()
) -> tuple[OracleReference, Optional[ShiftedReference]]:
    """Both references on the val split of ``config.dataset``."""
    from daic.data.corruptions import CORRUPTIONS
    from daic.data.mnist import load_split

    val = load_split("val", dataset=config.dataset)
    images, labels = val.images, val.labels
    if config.val_limit is not None:
        images, labels = images[: config.val_limit], labels[: config.val_limit]
    clean = oracle_reference(model, shadow, images, labels)
    if config.shift_per_condition == 0:
        return clean, None
    names = config.corruptions if config.corruptions is not None else CORRUPTIONS
    unknown = sorted(set(names) - set(CORRUPTIONS))
    if unknown:
        raise ValueError(f"unknown corruptions {unknown}; valid: {', '.join(CORRUPTIONS)}")
    head = linear_head(model, clean.embeddings.shape[1]) if config.energy_head else None
    if not config.self_agreement:
        shifted = shifted_reference(model, shadow, images, labels, per_condition=config.shift_per_condition,
                                    corruptions=tuple(names), seed=config.seed, fit_shifts=config.fit_shifts)
        return clean, shifted if head is None else shifted.with_head(*head)
    from daic.oracles.self_agreement import VIEWS, self_agreement, view_probs, views_text

    views = config.self_agreement_views or VIEWS

    s_images, s_labels, conditions = shifted_inputs(images, labels, per_condition=config.shift_per_condition,
                                                    corruptions=tuple(names), seed=config.seed,
                                                    fit_shifts=config.fit_shifts)
    ref = oracle_reference(model, shadow, s_images, s_labels)
    return clean, ShiftedReference(ref, np.array(conditions),
                                   self_agreement(ref.probs, view_probs(model, s_images, views)),
                                   self_agreement(clean.probs, view_probs(model, images, views)),
                                   *(head if head is not None else (None, None)), views_text(views))
