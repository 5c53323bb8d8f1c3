"""Labels that calibrate a new champion's online estimate from its first window.

A retrained version's assessor is fitted on its own oracle reference (clean val rows and synthetic
corruptions), which under a real shift misses by several points: after a promotion the sidecar's
estimate starts uncalibrated. The cycle that produced the version holds labelled inputs of the
drifted window that training never saw (the held-out draws, :mod:`daic.components.sample_operational.holdout`).
At promotion the deploy step runs the new version on them and stores its outputs with the labels
next to the version (``models/<name>/<version>/first_window.npz``: ``probs``, ``embeddings``,
``shadow_probs``, ``labels``, ``ids``, ``self_agreement`` and its views); the sidecar, when it fits that version's assessor, refits
the combiner with them (:meth:`daic.oracles.pipeline.OnlineAssessor.refit_with_labels`: the
reference stays a prior, the labels move every coefficient) before the first window is scored.
"""
from __future__ import annotations

import logging

import numpy as np

from daic.storage import ObjectStore

log = logging.getLogger(__name__)

FIRST_WINDOW_FILE = "first_window.npz"
MIN_LABELS = 20  # fewer carry too few errors to move the combiner (refit_with_labels' docstring)


def key(name: str, version: str) -> str:
    return f"models/{name}/{version}/{FIRST_WINDOW_FILE}"


def write(store: ObjectStore, name: str, version: str, model, shadow, images: np.ndarray, labels: np.ndarray,
          ids: np.ndarray) -> int:
    """Store ``version``'s outputs on labelled held-out inputs; returns how many were stored."""
    from daic.models.inference import predict

    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) != len(images) or len(ids) != len(images):
        raise ValueError(f"images ({len(images)}), labels ({len(labels)}) and ids ({len(ids)}) must be as many")
    from daic.oracles.self_agreement import SERVED_VIEWS, self_agreement, view_probs, views_text

    images = np.asarray(images, dtype=np.float32)
    main, side = predict(model, images), predict(shadow, images)
    # The served self-agreement too (daic.oracles.self_agreement), for an assessor that scores with it.
    sa = self_agreement(main.probs, view_probs(model, images, SERVED_VIEWS)) if len(images) else np.zeros(0)
    store.put_arrays(key(name, version), probs=main.probs, embeddings=main.embeddings, shadow_probs=side.probs,
                     labels=labels, ids=np.asarray(ids).astype(str), self_agreement=sa,
                     self_agreement_views=np.array(views_text(SERVED_VIEWS)))
    return len(labels)


def calibrate(assessor, store: ObjectStore, name: str, version: str):
    """``assessor`` refitted with the version's first-window labels when it has at least
    :data:`MIN_LABELS` of them; else ``assessor`` unchanged. A malformed file is logged and ignored
    (the reference-only assessor still works)."""
    k = key(name, version)
    if not store.exists(k):
        return assessor
    try:
        arrays = store.get_arrays(k)
        if len(arrays["labels"]) < MIN_LABELS:
            return assessor
        return assessor.refit_with_labels(arrays["probs"], arrays["embeddings"], arrays["shadow_probs"],
                                          arrays["labels"], _self_agreement(assessor, arrays))
    except (KeyError, ValueError) as exc:
        log.warning("cannot calibrate %s %s from %s (%s); using its reference-only assessor", name, version, k, exc)
        return assessor


def _self_agreement(assessor, arrays) -> np.ndarray | None:
    """The stored self-agreement when ``assessor`` scores with it; ValueError when it is missing or
    over other views than the assessor's reference (a file written before it was served):
    :func:`daic.oracles.self_agreement.for_assessor`'s rule."""
    from daic.oracles.self_agreement import for_assessor

    values = arrays["self_agreement"] if "self_agreement" in arrays else None
    views = str(arrays["self_agreement_views"]) if "self_agreement_views" in arrays else None
    return for_assessor(assessor, [(values, views)], source="the first-window file")
