"""sample-operational: choose which logged operational inputs humans should label.

Reads the deployment's operational records in a time window, builds the pool the sampling designs
work on (ids, the pseudo-oracle's P(correct), the model's predictions), draws ``budget`` inputs
with the chosen design in one batch, reserves part of the draws for evaluating a retrained model
(:mod:`.holdout`), and records everything under ``cycles/<cycle>/`` (see
:mod:`daic.components.cycle_store`). The pipeline draws one batch: adaptive designs
(failure-seeking, active) then use the oracle as it is, without re-aiming between batches; their
estimators stay unbiased (Hansen–Hurwitz / difference estimator with the recorded probabilities).
"""
from __future__ import annotations

import csv
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from daic.components import cycle_store
from daic.components.sample_operational.designs import describe, inclusion_probabilities, make_design
from daic.components.sample_operational.holdout import split_holdout
from daic.components.sample_operational.operational import parse_time, read_window
from daic.sampling.pool import Pool
from daic.sampling.sample import Sample
from daic.storage import ObjectStore, open_store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SampleConfig:
    """Parameters of the sampling step; defaults here are the pipeline's defaults."""

    deployment: str = "mnist"
    sampler: str = "stratified"
    sampler_params: dict[str, Any] = field(default_factory=dict)
    budget: int = 200
    holdout_share: float = 0.3
    seed: int = 0
    since: str = ""
    until: str = ""
    cycle: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.budget, bool) or not isinstance(self.budget, int) or self.budget < 4:
            raise ValueError(f"budget must be an integer >= 4, got {self.budget!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        if not isinstance(self.holdout_share, (int, float)) or not 0.0 < self.holdout_share < 1.0:
            raise ValueError(f"holdout_share must be in (0, 1), got {self.holdout_share!r}")
        if self.cycle:
            cycle_store.check_cycle(self.cycle)
        make_design(self.sampler, self.sampler_params)  # validates name and parameters
        parse_time(self.since, "since")
        parse_time(self.until, "until")


@dataclass(frozen=True)
class SampleResult:
    cycle: str
    pool_size: int
    n_draws: int
    n_labels: int
    n_holdout: int
    oracle_accuracy: float


def draw(pool: Pool, config: SampleConfig) -> tuple[Sample, np.ndarray, dict[str, Any], np.ndarray]:
    """The draws, the held-out mask, the design's description and per-draw inclusion probabilities.

    Designs without replacement cannot draw more inputs than the window holds; the budget is then
    the pool size (and the record says so).
    """
    design = make_design(config.sampler, config.sampler_params)
    budget = config.budget
    limit = design.max_draws(pool)
    if limit is not None and budget > limit:
        log.warning("budget %d exceeds the %d inputs in the window; drawing all of them", budget, limit)
        budget = limit
    rng = np.random.default_rng([config.seed, 0x5A3B1E])
    sample = design.draw(pool, Sample.empty(), np.zeros(0, bool), budget, rng)
    holdout = split_holdout(sample, config.holdout_share, rng)
    return sample, holdout, describe(design), inclusion_probabilities(design, pool, sample)


def run(store: ObjectStore | str, config: SampleConfig, dataset_path: str | None = None) -> SampleResult:
    """Draw the sample, write the cycle's sample record; optionally a CSV of the draws for KFP."""
    store = open_store(store or None) if isinstance(store, str) else store
    cycle = config.cycle or cycle_store.new_cycle_id()
    since, until = parse_time(config.since, "since"), parse_time(config.until, "until")
    window = read_window(store, config.deployment, since, until)
    pool = Pool(ids=window.ids, p_correct=window.p_correct, predictions=window.predictions)
    sample, holdout, design, inclusion = draw(pool, config)
    record = cycle_store.SampleRecord(
        pool=pool, sample=sample, holdout=holdout, design=design,
        meta={
            "deployment": config.deployment,
            "since": since, "until": until,
            "budget": config.budget, "n_draws": sample.n_draws,
            "n_labels": int(sample.distinct.size), "holdout_share": config.holdout_share,
            "seed": config.seed, "pool_size": pool.size,
            "oracle_accuracy": pool.oracle_accuracy,
            "created": time.time(),
        },
    )
    position = {i: k for k, i in enumerate(window.ids)}
    inputs = window.inputs[[position[i] for i in record.sampled_ids]]
    cycle_store.write_sample(store, cycle, record, inputs)
    if dataset_path:
        write_draws_csv(dataset_path, pool, sample, holdout, inclusion)
    log.info("cycle %s: %d draws (%d inputs to label) from %d logged inputs with %s",
             cycle, sample.n_draws, sample.distinct.size, pool.size, json.dumps(design))
    return SampleResult(cycle=cycle, pool_size=pool.size, n_draws=sample.n_draws,
                        n_labels=int(sample.distinct.size), n_holdout=int(holdout.sum()),
                        oracle_accuracy=pool.oracle_accuracy)


def write_draws_csv(path: str, pool: Pool, sample: Sample, holdout: np.ndarray,
                    inclusion: np.ndarray) -> None:
    """One row per draw: what the Kubeflow UI previews for the sample artifact."""
    with open(path, "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["draw", "id", "batch", "stratum", "selection_prob", "inclusion_prob",
                      "holdout", "prediction", "p_correct"])
        for d, i in enumerate(sample.indices):
            out.writerow([
                d, pool.ids[i], int(sample.batch[d]),
                "" if sample.stratum is None else int(sample.stratum[d]),
                "" if sample.selection_prob is None else f"{sample.selection_prob[d]:.6g}",
                f"{inclusion[d]:.6g}", int(holdout[d]), int(pool.predictions[i]),
                f"{pool.p_correct[i]:.6g}",
            ])
