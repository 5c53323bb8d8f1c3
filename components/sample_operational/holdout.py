"""Reserve part of the sample for judging the challenger, so that part is still a valid sample.

The evaluate step compares a retrained model with the champion on labeled *operational* inputs the
challenger never saw. Those inputs must themselves form a sample of the same design, so the
design's estimator gives an unbiased operational accuracy of the challenger on them:

* a random subset of the draws of a simple random sample is a simple random sample;
* within each stratum, a random subset of a stratum's draws is a random sample of that stratum
  (the held-out part keeps >= 2 per stratum so a variance can be computed);
* independent with-replacement draws (failure-seeking, active; one batch) stay independent draws
  with the same selection probabilities when a random subset of them is kept.

An input drawn twice by a with-replacement design may land in both parts; it is then not trained
on (see ``SampleRecord.train_ids``).
"""
from __future__ import annotations

import numpy as np

from daic.sampling.sample import Sample

MIN_PER_STRATUM = 2


def split_holdout(sample: Sample, share: float, rng: np.random.Generator) -> np.ndarray:
    """(n_draws,) bool mask of held-out draws: about ``share`` of them, at least 2 (per stratum)."""
    if not isinstance(share, (int, float)) or isinstance(share, bool) or not 0.0 < share < 1.0:
        raise ValueError(f"holdout_share must be in (0, 1), got {share!r}")
    n = sample.n_draws
    if n < 2 * MIN_PER_STRATUM:
        raise ValueError(f"a sample of {n} draws is too small to hold out part of it (need >= {2 * MIN_PER_STRATUM})")
    mask = np.zeros(n, bool)
    groups = [np.arange(n)] if sample.stratum is None else [
        np.flatnonzero(sample.stratum == h) for h in np.unique(sample.stratum)
    ]
    for members in groups:
        k = min(members.size, max(MIN_PER_STRATUM, int(round(share * members.size))))
        mask[rng.choice(members, size=k, replace=False)] = True
    return mask


def split_round(sample: Sample, share: float, rng: np.random.Generator) -> np.ndarray:
    """Held-out mask for the draws of a later round (labels asked for in rounds): within each
    stratum (or among all draws) a random subset of ``share`` of them, the count rounded at random
    (floor, plus one with probability equal to the fraction), so every draw is held out with
    probability ``share`` however small the round. The first round, split with
    :func:`split_holdout`, already gave each stratum its two held-out draws."""
    if not isinstance(share, (int, float)) or isinstance(share, bool) or not 0.0 < share < 1.0:
        raise ValueError(f"holdout_share must be in (0, 1), got {share!r}")
    mask = np.zeros(sample.n_draws, bool)
    groups = [np.arange(sample.n_draws)] if sample.stratum is None else [
        np.flatnonzero(sample.stratum == h) for h in np.unique(sample.stratum)
    ]
    for members in groups:
        exact = share * members.size
        k = int(np.floor(exact)) + int(rng.random() < exact - np.floor(exact))
        if k:
            mask[rng.choice(members, size=k, replace=False)] = True
    return mask
