"""Sampling designs by name, and the inclusion probabilities of what they drew.

The pipeline names its sampler with a string parameter; this maps it to the design classes of
:mod:`daic.sampling` and back, so the estimate step rebuilds exactly the design that drew.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from daic.sampling.active import ActiveModelAssisted
from daic.sampling.dual import TeachAndMeasure
from daic.sampling.failure_seeking import FailureSeeking
from daic.sampling.pool import Pool
from daic.sampling.sample import Design, Sample
from daic.sampling.srs import SRS
from daic.sampling.stratified import StratifiedNeyman

DESIGNS: dict[str, type] = {
    "srs": SRS,
    "stratified": StratifiedNeyman,
    "failure-seeking": FailureSeeking,
    "active": ActiveModelAssisted,
    "dual": TeachAndMeasure,  # teach and measure: estimation + failure-seeking draws, mixture weights
}


def make_design(name: str, params: dict[str, Any] | None = None) -> Design:
    """The design ``name`` with ``params`` overriding its defaults; errors name the bad field."""
    try:
        cls = DESIGNS[name]
    except KeyError:
        raise ValueError(f"unknown sampler {name!r}; valid: {', '.join(DESIGNS)}") from None
    params = dict(params or {})
    fields = {f.name for f in dataclasses.fields(cls)} - {"name"}
    unknown = sorted(set(params) - fields)
    if unknown:
        raise ValueError(f"sampler {name!r} has no parameter(s) {unknown}; valid: {', '.join(sorted(fields))}")
    return cls(**params)


def describe(design: Design) -> dict[str, Any]:
    """{"name", "params"}: enough to rebuild the design with :func:`make_design`."""
    params = dataclasses.asdict(design)
    params.pop("name", None)
    return {"name": design.name, "params": params}


def inclusion_probabilities(design: Design, pool: Pool, sample: Sample) -> np.ndarray:
    """Per draw, the probability that the drawn input was in a one-batch sample of this size.

    Without replacement (SRS: n/N; stratified: n_h/N_h). With replacement, from the per-draw
    selection probability q: 1 - (1 - q)^n. These are the first-order inclusion probabilities a
    labeling tool or a later analysis needs; the estimators use the design's own weights.
    """
    n = sample.n_draws
    if sample.selection_prob is not None:
        return 1.0 - (1.0 - sample.selection_prob) ** n
    if isinstance(design, StratifiedNeyman):
        strata = design.strata(pool)
        sizes = np.bincount(strata, minlength=design.n_strata)
        counts = np.bincount(sample.stratum, minlength=design.n_strata)
        return counts[sample.stratum] / sizes[sample.stratum]
    return np.full(n, n / pool.size)
