"""Held-out inputs from a scenario's drifted distribution, for measuring a model before and after.

"Better on the drifted distribution" has to be measured on drifted inputs that neither the
labelers saw nor the trainer used: the source images a scenario stream did *not* draw, corrupted
the way its drifted steps are (same corruption and severity, another noise seed). Accuracy on the
stream itself would flatter a model retrained on labels taken from it.
"""
from __future__ import annotations

import numpy as np

from daic.data.scenarios import ScenarioSpec, Stream


def drifted_holdout(spec: ScenarioSpec, stream: Stream, n: int | None = None,
                    seed: int = 1234) -> tuple[np.ndarray, np.ndarray]:
    """(images, labels): up to ``n`` source images absent from ``stream``, corrupted like its drift.

    Only single-corruption scenarios (sudden, gradual, recurring) have one drifted distribution.
    """
    from daic.data.corruptions import corrupt
    from daic.data.mnist import load_split

    if len(spec.components) != 1 or spec.name in ("stationary", "label-shift"):
        raise ValueError(f"scenario {spec.name!r} has no single corrupted distribution to hold out from")
    (corruption, severity), = spec.components
    source = load_split(spec.source, dataset=spec.dataset)
    unused = np.setdiff1d(np.arange(len(source.labels)), stream.meta["source_index"])
    if n is not None:
        unused = np.random.default_rng(seed).permutation(unused)[:n]
        unused.sort()
    if unused.size == 0:
        raise ValueError("the stream drew every source image: nothing is left to hold out")
    return corrupt(source.images[unused], corruption, severity, seed=seed), source.labels[unused].copy()
