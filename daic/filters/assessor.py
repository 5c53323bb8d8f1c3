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

Cost (fit-filter and evaluate each pay one build): the references are 15,000 inputs through the
filter, whose alignment search scored 8 candidates per input; :func:`searched_filter` scores the
rotations only where one can still win, and the references are built in batches of
:data:`REFERENCE_BATCH`. Both keep every output bit for bit (benchmarks/wrapped_assessor.py and
tests/test_wrapped_assessor_cost.py compare with the old build); what is left is the fit itself.
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


def searched_filter(net, images: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """``apply_filter(net, images)``, the alignment search scoring the rotations only of the inputs
    where one can win (the cost of building the references; measured in benchmarks/wrapped_assessor.py).

    :meth:`FilterNet._choose` keeps the candidate of lowest classifier entropy, the rotations
    handicapped by ``align_margin`` nats. An entropy is >= 0 (``log_softmax`` <= 0; float rounding
    keeps ``H + margin >= margin``), and ``argmin`` keeps the first of equal values, the plain
    candidates; so once a plain candidate (the restoration; with ``recentre_search`` also its
    un-shifted form) has entropy <= the margin, no rotation can win, and that input's choice is
    made on the plain candidates alone. Most inputs are such (97 % of clean, 86-90 % of the
    corrupted val rows); the rest run the whole search as before. The stages before the search
    are :func:`~daic.filters.apply.apply_filter`'s, in batches of :func:`_spans`; a net without a
    search (or without its classifier) is just applied."""
    import torch

    from daic.filters.apply import apply_filter
    from daic.models.networks import _as_nchw

    images = np.asarray(images, dtype=np.float32)
    if not getattr(net, "searches", False) or getattr(net, "_aligner", None) is None or len(images) == 0:
        return apply_filter(net, images, batch_size)
    net.eval()
    out, open_rows, open_staged, open_unshifted = [], [], [], []
    with torch.inference_mode():
        for a, b in _spans(len(images), batch_size):
            x = _as_nchw(torch.from_numpy(np.require(images[a:b], requirements=["C", "W"])))
            staged, unshifted = net._stages(x)
            plain = staged.unsqueeze(1) if unshifted is None else torch.stack([unshifted, staged], dim=1)
            n, k = plain.shape[:2]
            logp = net._log_probs(plain.flatten(0, 1)).view(n, k, -1)
            entropy = -(logp.exp() * logp).sum(dim=2)
            out.append(plain[torch.arange(n), entropy.argmin(dim=1)].squeeze(1).numpy())
            # NaN entropies compare False: such an input runs the whole search, as before
            search = ~(entropy.min(dim=1).values <= net.align_margin)
            if bool(search.any()):
                open_rows.append(a + np.flatnonzero(search.numpy()))
                open_staged.append(staged[search])
                open_unshifted.append(None if unshifted is None else unshifted[search])
        filtered = np.concatenate(out)
        if open_rows:  # the whole search, on the open inputs of all batches together (batches of 16 or more)
            rows, staged = np.concatenate(open_rows), torch.cat(open_staged)
            unshifted = None if open_unshifted[0] is None else torch.cat(open_unshifted)
            for a, b in _spans(len(rows), batch_size):
                aligned = net.align(staged[a:b], None if unshifted is None else unshifted[a:b])
                filtered[rows[a:b]] = aligned.squeeze(1).numpy()
    return filtered


#: inputs per batch when the references are built. On this CPU a batch of 128 runs the filter's
#: U-Net 2.3x and the classifier 1.5-2x faster than 1,024 (its activations stay in cache), with
#: the same outputs bit for bit (benchmarks/wrapped_assessor.py compares the references of both
#: ways; see :func:`_spans` for the one exception).
REFERENCE_BATCH = 128


def _spans(n: int, size: int) -> list[tuple[int, int]]:
    """Batches ``[a, b)`` of ``size`` rows over ``n``, a short tail joined to the batch before it.

    oneDNN runs a batch of fewer than 16 images with other convolution kernels than a larger one
    (measured: the U-Net's and the classifier's outputs then differ in the last bit), so no batch
    here is smaller than ``min(n, size)``: the outputs are those of any batch of 16 or more."""
    starts = list(range(0, n, size))
    if len(starts) > 1 and n - starts[-1] < size:
        starts.pop()
    return list(zip(starts, starts[1:] + [n]))


def wrapped_references(model, shadow, net, gate: str, threshold: float, *, val_limit: Optional[int] = None,
                       shift_per_condition: int = 100, seed: int = 77, search_all: bool = False,
                       batch_size: int = REFERENCE_BATCH, timings: Optional[dict] = None):
    """(OracleReference, ShiftedReference) of ``model`` (and ``shadow``) behind ``net`` in ``gate`` mode,
    on the rows and corruptions :func:`daic.models.reference.build_references` uses.

    ``search_all``: the filter as served scores every alignment candidate of every input (the way
    before :func:`searched_filter`; with ``batch_size=1024`` the old cost, which the benchmark and
    the test compare with). ``timings``: a dict the seconds of each part are added to (filter;
    gate, with its uncertainty part's classifier pass; outputs, the classifier's and the shadow's,
    and the classifier's self-agreement view; corrupt, the synthetic corruptions).

    The shifted reference carries the classifier's self-agreement over the served views
    (daic.oracles.self_agreement.SERVED_VIEWS) on the inputs as the filter passes them on, so the
    wrapped assessor scores with the signal the model server behind the filter sends."""
    from daic.data.corruptions import CORRUPTIONS
    from daic.data.fit_shifts import DEFAULT_FIT_SHIFTS
    from daic.data.mnist import load_split
    from daic.filters.apply import apply_filter, uncertain_mask
    from daic.filters.gate import select
    from daic.models.inference import predict
    from daic.models.reference import linear_head, shifted_inputs
    from daic.oracles.pipeline import ShiftedReference
    from daic.oracles.reference import OracleReference
    from daic.oracles.self_agreement import SERVED_VIEWS, self_agreement, view_probs, views_text

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    val = load_split("val")
    images, labels = np.asarray(val.images, np.float32), np.asarray(val.labels)
    if val_limit is not None:
        images, labels = images[:val_limit], labels[:val_limit]
    restore = apply_filter if search_all else searched_filter
    seconds = timings if timings is not None else {}

    def timed(part: str, started: float) -> None:
        seconds[part] = seconds.get(part, 0.0) + time.perf_counter() - started

    def batched(fn, x: np.ndarray) -> list:
        """``[fn(x, batch_size)]``, or the new way ``fn`` on each batch of :func:`_spans`."""
        spans = [] if search_all else _spans(len(x), batch_size)
        return [fn(x[a:b], b - a) for a, b in spans] if spans else [fn(x, batch_size)]

    def outputs(x: np.ndarray, y: np.ndarray) -> tuple[OracleReference, np.ndarray]:
        x = np.asarray(x, np.float32)
        t = time.perf_counter()
        # "off" serves the raw input; searched_filter batches by _spans itself
        filtered = x if gate == "off" else restore(net, x, batch_size)
        timed("filter", t)
        t = time.perf_counter()
        uncertain = None  # daic.filters.apply.gate, in our batches
        if gate == "gated":
            parts = batched(lambda z, b: uncertain_mask(net, z, b), x)
            uncertain = None if any(p is None for p in parts) else np.concatenate(parts)
        inputs = select(x, filtered, gate, threshold, uncertain)[0]
        timed("gate", t)
        t = time.perf_counter()
        # daic.models.reference.oracle_reference, in our batches
        main = batched(lambda z, b: predict(model, z, batch_size=b), inputs)
        side = batched(lambda z, b: predict(shadow, z, batch_size=b), inputs)
        # the classifier's self-agreement on what it is served (the filtered input), as the model
        # server behind the filter computes it (daic.oracles.self_agreement, SERVED_VIEWS)
        views = batched(lambda z, b: view_probs(model, z, SERVED_VIEWS, batch_size=b), inputs)
        timed("outputs", t)
        probs = np.concatenate([o.probs for o in main])
        return (OracleReference(probs=probs, embeddings=np.concatenate([o.embeddings for o in main]),
                                labels=np.asarray(y, dtype=np.int64),
                                shadow_probs=np.concatenate([o.probs for o in side])),
                self_agreement(probs, np.concatenate(views)))

    clean, clean_sa = outputs(images, labels)
    if shift_per_condition == 0:
        return clean, None
    t = time.perf_counter()
    s_images, s_labels, conditions = shifted_inputs(images, labels, per_condition=shift_per_condition,
                                                    corruptions=tuple(CORRUPTIONS), seed=seed,
                                                    fit_shifts=DEFAULT_FIT_SHIFTS)
    timed("corrupt", t)
    shifted_ref, shifted_sa = outputs(s_images, s_labels)
    shifted = ShiftedReference(shifted_ref, np.array(conditions), shifted_sa, clean_sa,
                               self_agreement_views=views_text(SERVED_VIEWS))
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
