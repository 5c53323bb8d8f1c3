"""The sidecar's assessor for the *wrapped* model: the classifier behind a filter (issue 21).

Why the classifier's own assessor is wrong behind a filter: it is fitted on the classifier's
outputs on raw validation images (and synthetic corruptions of them), so it learns what
confidence, distance and shadow disagreement mean for *unfiltered* inputs. Behind the filter the
classifier sees restored inputs, and the alignment search keeps, per input, the candidate the
classifier is *most certain* about (lowest entropy): its confidence is selected upwards, the
restored inputs sit near the clean embedding bank, and the assessor reads both as "correct".
Measured on the mixture, the online estimate ran ~6 points above the truth while the filter served.

The fix keeps the same oracles and only changes what they are calibrated on: the references are
rebuilt from the *same* validation rows and the *same* synthetic corruptions as the classifier's
(:func:`daic.models.reference.build_references`' defaults), each passed through the filter in the
served gate mode (:func:`daic.filters.gate.select`) before the classifier and its shadow see it.
The assessor is fitted on them (:func:`daic.models.assessor_store.fit`) and stored beside the
filter version, ``models/<classifier>-filter/<filter version>/<gate>/assessor.pkl``; the sidecar
scores a response whose ``meta.tags`` name a filter (``daic.filter``, ``daic.filter.gate``) with
it (:mod:`daic.sidecar.assessment`), and with the classifier's own until it exists.
"""
from __future__ import annotations

import logging
import time
from typing import Optional

import numpy as np

from daic.storage import ObjectStore

log = logging.getLogger(__name__)


def assessor_version(filter_version: str, gate: str) -> str:
    """The ``version`` under the filter model that :mod:`daic.models.assessor_store` keys the wrapped assessor by."""
    return f"{filter_version}/{gate}"


def wrapped_references(model, shadow, net, gate: str, threshold: float, *, val_limit: Optional[int] = None,
                       shift_per_condition: int = 100, seed: int = 77):
    """(OracleReference, ShiftedReference) of ``model`` (and ``shadow``) behind ``net`` in ``gate`` mode,
    on the rows and corruptions :func:`daic.models.reference.build_references` uses."""
    from daic.data.corruptions import CORRUPTIONS
    from daic.data.mnist import load_split
    from daic.filters.apply import apply_filter, gate as gated
    from daic.models.reference import linear_head, oracle_reference, shifted_inputs
    from daic.oracles.pipeline import ShiftedReference

    val = load_split("val")
    images, labels = np.asarray(val.images, np.float32), np.asarray(val.labels)
    if val_limit is not None:
        images, labels = images[:val_limit], labels[:val_limit]

    def behind(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float32)
        return gated(net, x, apply_filter(net, x), gate, threshold)[0]

    clean = oracle_reference(model, shadow, behind(images), labels)
    if shift_per_condition == 0:
        return clean, None
    s_images, s_labels, conditions = shifted_inputs(images, labels, per_condition=shift_per_condition,
                                                    corruptions=tuple(CORRUPTIONS), seed=seed)
    shifted = ShiftedReference(oracle_reference(model, shadow, behind(s_images), s_labels), np.array(conditions))
    head = linear_head(model, clean.embeddings.shape[1])
    return clean, shifted if head is None else shifted.with_head(*head)


def fit_wrapped_assessor(store: ObjectStore, classifier: str, filter_version: str, gate: str, *,
                         val_limit: Optional[int] = None, shift_per_condition: int = 100) -> dict:
    """Fit and store the assessor of the classifier version ``filter_version`` wraps, behind it in
    ``gate`` mode; returns what was done (key, seconds)."""
    from daic.filters.registry import FilterRegistry, filter_model_name
    from daic.models import assessor_store
    from daic.models.registry import ModelRegistry

    started = time.perf_counter()
    registry = FilterRegistry(store, classifier)
    wraps = registry.wraps(filter_version)
    model, shadow = ModelRegistry(store, classifier).load_networks(wraps)
    net = registry.load_filter(filter_version, classifier=model)
    threshold = float(registry.card(filter_version).metrics.get("gate_threshold", 0.0))
    reference, shifted = wrapped_references(model, shadow, net, gate, threshold, val_limit=val_limit,
                                            shift_per_condition=shift_per_condition)
    assessor_store.fit_references_and_store(store, filter_model_name(classifier),
                                            assessor_version(filter_version, gate), reference, shifted)
    seconds = time.perf_counter() - started
    log.info("wrapped assessor of %s behind filter %s (%s) fitted in %.1f s", wraps, filter_version, gate, seconds)
    return {"key": assessor_store.key(filter_model_name(classifier), assessor_version(filter_version, gate)),
            "wraps": wraps, "seconds": seconds}


def load_wrapped_assessor(store: ObjectStore, classifier: str, filter_version: str, gate: str):
    """The stored wrapped assessor, or None when there is none (or it cannot be used by this code)."""
    from daic.filters.registry import filter_model_name
    from daic.models import assessor_store

    return assessor_store.load(store, filter_model_name(classifier), assessor_version(filter_version, gate))
