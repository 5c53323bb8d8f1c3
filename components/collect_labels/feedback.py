"""``feedback``: ground truth that already arrived through Seldon's feedback API.

The sidecar stores every feedback message it receives as ``operational/<deployment>/feedback-*.npz``
(per input: ``ids`` = ``<request id>:<row>`` like the operational records, ``labels``, ``times``;
see ``daic.sidecar.service``). This backend submits nothing; polling reads those objects and
answers the sampled ids that have a label (a later message for the same input wins). It suits
deployments whose ground truth arrives by itself, late (a form later checked by a clerk).
"""
from __future__ import annotations

import numpy as np

from daic.storage import ObjectStore

from .request import Answers, LabelRequest


def read_feedback(store: ObjectStore, deployment: str) -> dict[str, int]:
    """id -> label from every feedback object of the deployment, in time order (latest wins)."""
    prefix = f"operational/{deployment}/"
    labels: dict[str, int] = {}
    for key in store.list(prefix):
        name = key[len(prefix):]
        if "/" in name or not name.startswith("feedback-") or not name.endswith(".npz"):
            continue
        arrays = store.get_arrays(key)
        if "ids" not in arrays or "labels" not in arrays:
            raise ValueError(f"feedback object {key!r} lacks ids or labels")
        order = np.argsort(arrays["times"], kind="stable") if "times" in arrays else np.arange(len(arrays["ids"]))
        for k in order:
            labels[str(arrays["ids"][k])] = int(arrays["labels"][k])
    return labels


class FeedbackBackend:
    name = "feedback"

    def __init__(self, store: ObjectStore, deployment: str) -> None:
        if not deployment or "/" in deployment:
            raise ValueError(f"the feedback backend needs the deployment name, got {deployment!r}")
        self.store = store
        self.deployment = deployment

    def submit(self, request: LabelRequest) -> None:
        """Nothing to hand over: feedback arrives on its own."""

    def poll(self, request: LabelRequest) -> Answers:
        known = read_feedback(self.store, self.deployment)
        return {str(i): known[str(i)] for i in request.ids if str(i) in known}
