"""Write operational records for a scenario stream, as the sidecar logs them, for tests and demos.

Each scenario step becomes one batch written with the sidecar's own writer
(:func:`daic.sidecar.records.write_batch`); the input ids are the scenario's ids. ``p_correct`` is
the max-softmax confidence (an uncalibrated pseudo-oracle, which the sampling designs must cope
with) unless the predictor gives one. Without a shadow model the predictor's own probabilities
stand in for ``shadow_probs`` and the probabilities for ``embeddings``; ``drift`` is zero. The
truth (labels, corruption) is *not* written: that is what labeling pays for; the returned stream
carries it for the test to check against.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from daic.data.scenarios import Scenario, Stream, materialise
from daic.sidecar.records import OperationalRecords, write_batch
from daic.storage import ObjectStore

Predictor = Callable[[np.ndarray], dict[str, np.ndarray]]
"""images (N, 28, 28) -> {"probs": (N, 10), optional "embeddings", "shadow_probs", "p_correct", "abstained"}."""


def write_operational(store: ObjectStore, deployment: str, scenario: Scenario, predict: Predictor,
                      model_version: str = "v0001", t0: float = 1_700_000_000.0,
                      step_seconds: float = 60.0, steps: range | None = None) -> Stream:
    """Log ``steps`` of ``scenario`` (default all) as the sidecar would; returns the stream's truth."""
    steps = range(len(scenario)) if steps is None else steps
    for step in steps:
        batch = scenario.batch(step)
        out = predict(batch.images)
        probs = np.asarray(out["probs"], dtype=np.float64)
        n = len(batch)
        records = OperationalRecords(
            ids=batch.ids,
            request_ids=batch.ids,
            times=t0 + step * step_seconds + np.arange(n) * (step_seconds / n),
            inputs=batch.images,
            predictions=probs.argmax(axis=1),
            probs=probs,
            embeddings=out.get("embeddings", probs),
            shadow_probs=out.get("shadow_probs", probs),
            p_correct=out.get("p_correct", probs.max(axis=1)),
            drift=np.zeros(n),
            model_version=np.full(n, model_version),
            abstained=out.get("abstained"),  # the model server's abstain flag (issue 21), if the predictor gives one
        )
        write_batch(store, deployment, records, seq=step)
    return materialise(scenario)


def torch_predictor(model) -> Predictor:
    """A :data:`Predictor` from a daic network (``embed_and_logits``), run in eval mode on CPU."""
    import torch

    def predict(images: np.ndarray) -> dict[str, np.ndarray]:
        model.eval()
        with torch.no_grad():
            emb, logits = model.embed_and_logits(torch.as_tensor(images, dtype=torch.float32))
            probs = torch.softmax(logits, dim=1)
        return {"probs": probs.numpy(), "embeddings": emb.numpy()}

    return predict
