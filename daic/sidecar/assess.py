"""``POST /assess``: P(correct) of a response the model server is about to send (issue 21, item 4).

The model server cannot load the assessor (daic.serving.abstainer says why), so it posts its
response here, on the sidecar's loopback-only ingest port, and decides with the scores it gets
back. The scores are the ones the sidecar's records will hold for the same inputs: the same
assessor, chosen the same way -- the *wrapped* model's behind the input filter when the response's
tags name one (``daic.filter``, ``daic.filter.gate``), else the version's own -- except that
nothing stands in: a stand-in's scores (another version's assessor, or the model's own behind a
filter, ~6 points optimistic there) are not what a per-input decision may rest on, so until the
right assessor is loaded the answer is :class:`NotReady` (HTTP 503) and the load has started.
Never waits on a load; the scoring itself (~0.1 ms an input) runs on a worker thread.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from daic.models.card import VERSION_RE
from daic.serving.protocol import parse_response
from daic.sidecar.assessment import assessor_widths, self_agreement_of, width_mismatch

#: The longest filter version taken from a response (registry versions are 'v' and 4+ digits).
MAX_VERSION_CHARS = 32


class NotReady(LookupError):
    """No assessor to score with yet (the message says which one is missing)."""


def filter_of_body(body: Any, strict: bool = False) -> tuple[str, str] | None:
    """(filter version, gate) when a response's ``meta.tags`` say an input filter stood before the
    model (``daic.filter``, ``daic.filter.gate`` set by daic.serving.filter), else None.

    With ``strict`` (``POST /assess``) ``daic.filter`` must be a registry version (``v`` and at
    least four digits, e.g. ``v0001``, at most :data:`MAX_VERSION_CHARS` characters) or null (no
    filter served), else a ValueError names the tag (a 400): each distinct name costs the sidecar
    a store lookup, so a made-up one is not looked up. Without it (a logged response) any non-empty
    string names the filter, as before; what made-up names cost there is bounded by the assessor
    pool (:meth:`daic.sidecar.assessment.AssessorPool.wrapped_for_scoring`)."""
    meta = body.get("meta") if isinstance(body, dict) else None
    tags = meta.get("tags") if isinstance(meta, dict) else None
    if not isinstance(tags, dict):
        return None
    version, gate = tags.get("daic.filter"), tags.get("daic.filter.gate")
    if strict and version is not None and (not isinstance(version, str) or len(version) > MAX_VERSION_CHARS
                                           or not VERSION_RE.match(version)):
        shown = repr(version)[:40] if isinstance(version, str) else type(version).__name__
        raise ValueError(f"meta.tags.daic.filter must be a filter version like 'v0001' ('v' and at least 4 "
                         f"digits, at most {MAX_VERSION_CHARS} characters) or null, got {shown}")
    if not isinstance(version, str) or not version or gate not in ("gated", "always"):
        return None
    return version, gate


def assess(body: Any, assessors, known: Callable[[str], bool]) -> tuple[np.ndarray, str]:
    """(P(correct) per input, which assessor) for the response ``body``; ValueError for a body that
    is not a daic response, :class:`NotReady` when the assessor it needs is not loaded yet.
    ``assessors``: the sidecar's :class:`daic.sidecar.assessment.AssessorPool`; ``known``: whether
    a model version is in the registry (I/O)."""
    outputs = parse_response(body)
    if not known(outputs.version):
        raise ValueError(f"model version {outputs.version!r} is not in the registry")
    behind = filter_of_body(body, strict=True)
    if behind is not None:
        assessor = assessors.wrapped_for_scoring(*behind)
        name = f"{assessors.model_name}-filter/{behind[0]}/{behind[1]}"
        if assessor is None:
            raise NotReady(f"the assessor of {outputs.version} behind filter {behind[0]} ({behind[1]}) is not "
                           "loaded yet")
    else:
        assessor, own = assessors.for_scoring(outputs.version)
        name = f"{assessors.model_name}/{outputs.version}"
        if assessor is None or not own:
            raise NotReady(f"the assessor of {outputs.version} is not loaded yet")
    expected = assessor_widths(assessor)
    mismatch = width_mismatch(outputs, expected, outputs.version, f"the reference of {name}") if expected else None
    if mismatch is not None:
        raise ValueError(mismatch[1])
    self_agreement = self_agreement_of(assessor, [outputs])
    return assessor.score(outputs.probs, outputs.embeddings, outputs.shadow_probs, self_agreement).p_correct, name
