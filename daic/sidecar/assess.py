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

from daic.serving.protocol import parse_response


class NotReady(LookupError):
    """No assessor to score with yet (the message says which one is missing)."""


def filter_of_body(body: Any) -> tuple[str, str] | None:
    """(filter version, gate) when a response's ``meta.tags`` say an input filter stood before the
    model (``daic.filter``, ``daic.filter.gate`` set by daic.serving.filter), else None."""
    meta = body.get("meta") if isinstance(body, dict) else None
    tags = meta.get("tags") if isinstance(meta, dict) else None
    if not isinstance(tags, dict):
        return None
    version, gate = tags.get("daic.filter"), tags.get("daic.filter.gate")
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
    behind = filter_of_body(body)
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
    return assessor.score(outputs.probs, outputs.embeddings, outputs.shadow_probs).p_correct, name
