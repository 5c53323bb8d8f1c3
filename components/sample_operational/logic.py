"""sample-operational: choose which logged operational inputs humans should label.

Reads the deployment's operational records in a time window -- only the partitions inside it and
only the columns the designs use (:mod:`daic.sampling.scan`; on Ray Data when a Ray address is
given) -- into a compact pool (64-bit id keys, the pseudo-oracle's P(correct), the model's
predictions), draws ``budget`` inputs
with the chosen design in one batch, reserves part of the draws for evaluating a retrained model
(:mod:`.holdout`), and records everything under ``cycles/<cycle>/`` (see
:mod:`daic.components.cycle_store`). The pipeline draws one batch: adaptive designs
(failure-seeking, active) then use the oracle as it is, without re-aiming between batches; their
estimators stay unbiased (Hansen–Hurwitz / difference estimator with the recorded probabilities).
Only the drawn inputs' ids and images are fetched, and only they, with the pool's summary, go to
the later steps.

Window: ``since <= time < until`` (the operator passes both: since its previous cycle, at most
``sampling.windowHours``). An empty ``since`` is ``until`` -- or, when that is empty too, the end
of the newest hour holding records -- minus ``window_hours`` (default 24), so no run reads the
deployment's whole history unless asked to (``since=0``); an empty ``until`` alone is unbounded.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from daic.components import cycle_store
from daic.components.sample_operational.designs import describe, inclusion_probabilities, make_design
from daic.components.sample_operational.holdout import split_holdout
from daic.components.sample_operational.operational import parse_time
from daic.sampling.abstain import abstained_positions, queue_abstained
from daic.sampling.pool import Pool, SampledPool
from daic.sampling.sample import Sample
from daic.sampling.fetch import fetch_rows
from daic.sampling.parts import ScanStats
from daic.sampling.scan import MAX_PARALLEL, EmptyWindow, PoolScan, scan_pool
from daic.sidecar.records import newest_hour_end
from daic.storage import KeyNotFound, ObjectStore, open_store
from daic.storage.parsed import CorruptObject

log = logging.getLogger(__name__)

DEFAULT_WINDOW_HOURS = 24.0
#: How long after the window's end (``until``) an empty window is scanned again: the sidecar writes
#: its records in batches (every ``flush_interval_s``, 10 s by default; later when loaded) and the
#: operator starts a run the moment it triggers, with ``until`` = then, so a short window can still
#: be in the sidecar's buffer when this step reads it (seen in ``make demo`` on a loaded machine: a
#: 3.6 s window read 4.6 s after its end, its batch written a moment later).
WAIT_FOR_INPUTS_S = 60.0
POLL_S = 2.0


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
    window_hours: float = DEFAULT_WINDOW_HOURS
    max_parallel: int = MAX_PARALLEL
    ray_address: str = ""  # empty: $DAIC_SAMPLING_RAY_ADDRESS, else read here
    # Rounds (:mod:`daic.components.collect_labels.rounds`): 0 draws the whole budget at once;
    # n > 0 draws n now and leaves the pool for the collect-labels step to draw further rounds.
    round_size: int = 0
    target_half_width: float = 0.0  # > 0: the rounds stop once the interval is this narrow
    level: float = 0.95
    min_draws: int = 100  # no stop on the target before this many draws (as daic.sampling.sequential)
    # Inputs the model server abstained on (issue 21) queued for labeling beside the sample, at
    # most this many, outside the estimate (daic.sampling.abstain); 0: none. In rounds mode they go
    # with the first round (daic.components.collect_labels.rounds says why).
    abstained_cap: int = 100
    # An empty window whose end is less than this ago is read again until the sidecar's writes
    # reach it (WAIT_FOR_INPUTS_S says why); 0: no wait.
    wait_for_inputs_s: float = WAIT_FOR_INPUTS_S

    def __post_init__(self) -> None:
        if isinstance(self.wait_for_inputs_s, bool) or not isinstance(self.wait_for_inputs_s, (int, float)) \
                or not 0.0 <= self.wait_for_inputs_s <= 3600.0:
            raise ValueError(f"wait_for_inputs_s must be in [0, 3600] seconds, got {self.wait_for_inputs_s!r}")
        if isinstance(self.round_size, bool) or not isinstance(self.round_size, int) or self.round_size < 0:
            raise ValueError(f"round_size must be an integer >= 0 (0: one round), got {self.round_size!r}")
        if 0 < self.round_size < 4:
            raise ValueError(f"round_size must be 0 or >= 4 (a first round needs a held-out part), "
                             f"got {self.round_size}")
        if not isinstance(self.target_half_width, (int, float)) or not 0.0 <= self.target_half_width < 0.5:
            raise ValueError(f"target_half_width must be in [0, 0.5) (0: spend the budget), "
                             f"got {self.target_half_width!r}")
        if not isinstance(self.level, (int, float)) or not 0.0 < self.level < 1.0:
            raise ValueError(f"level must be in (0, 1), got {self.level!r}")
        if isinstance(self.abstained_cap, bool) or not isinstance(self.abstained_cap, int) or self.abstained_cap < 0:
            raise ValueError(f"abstained_cap must be an integer >= 0, got {self.abstained_cap!r}")
        if isinstance(self.min_draws, bool) or not isinstance(self.min_draws, int) or self.min_draws < 0:
            raise ValueError(f"min_draws must be an integer >= 0, got {self.min_draws!r}")
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
        if isinstance(self.window_hours, bool) or not isinstance(self.window_hours, (int, float)) \
                or not 0 < self.window_hours <= 24 * 366:
            raise ValueError(f"window_hours must be in (0, 8784], got {self.window_hours!r}")
        if isinstance(self.max_parallel, bool) or not isinstance(self.max_parallel, int) \
                or not 1 <= self.max_parallel <= 256:
            raise ValueError(f"max_parallel must be an integer in [1, 256], got {self.max_parallel!r}")

    def window(self, store: ObjectStore) -> tuple[float, float | None]:
        """(since, until) in Unix seconds (see the module docstring); an empty ``since`` costs
        one listing of the deployment's keys when ``until`` is empty too."""
        until = parse_time(self.until, "until")
        since = parse_time(self.since, "since")
        if since is None:
            end = until if until is not None else newest_hour_end(store, self.deployment)
            if end is None:
                raise ValueError(f"no operational inputs under {store.url}/operational/{self.deployment}/")
            since = end - self.window_hours * 3600.0
        if until is not None and until <= since:
            raise ValueError(f"until ({until}) must be after since ({since})")
        return since, until


    @property
    def rounds(self) -> bool:
        """Labels are asked for in rounds (the first drawn here, the rest by collect-labels)."""
        return 0 < self.round_size < self.budget

    def rounds_plan(self) -> dict[str, Any]:
        """What the collect-labels step needs to draw the later rounds (``sample.json``'s ``rounds``)."""
        return {"round_size": self.round_size, "budget": self.budget, "target_half_width": self.target_half_width,
                "level": self.level, "min_draws": self.min_draws, "holdout_share": self.holdout_share,
                "seed": self.seed}


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
    first = min(budget, config.round_size) if config.rounds else budget
    sample = design.draw(pool, Sample.empty(), np.zeros(0, bool), first, rng)
    holdout = split_holdout(sample, config.holdout_share, rng)
    return sample, holdout, describe(design), inclusion_probabilities(design, pool, sample)


def scan_window(store: ObjectStore, config: SampleConfig, since: float | None, until: float | None,
                ray_address: str | None = None, clock=time.time, sleep=time.sleep) -> PoolScan:
    """:func:`scan_pool` over ``[since, until)``, read again every :data:`POLL_S` while the window is
    empty and its end is less than ``config.wait_for_inputs_s`` ago (the sidecar may not have
    written it yet). Bounded by that wait; the scan's own ValueError when it stays empty."""
    while True:
        try:
            return scan_pool(store, config.deployment, since, until, max_parallel=config.max_parallel,
                             ray_address=ray_address)
        except EmptyWindow as exc:
            left = until + config.wait_for_inputs_s - clock() if until is not None else 0.0
            if left <= 0:
                raise
            log.info("%s; the sidecar may not have written it yet: reading again for up to %.0f s", exc, left)
            sleep(min(POLL_S, left))


def run(store: ObjectStore | str, config: SampleConfig, dataset_path: str | None = None) -> SampleResult:
    """Draw the sample, write the cycle's sample record; optionally a CSV of the draws for KFP."""
    store = open_store(store or None) if isinstance(store, str) else store
    cycle = config.cycle or cycle_store.new_cycle_id()
    since, until = config.window(store)
    ray_address = config.ray_address or os.environ.get("DAIC_SAMPLING_RAY_ADDRESS", "")
    scan = scan_window(store, config, since, until, ray_address or None)
    pool = scan.pool
    sample, holdout, design, inclusion = draw(pool, config)
    abstained = np.zeros(0, np.int64)
    if config.abstained_cap:  # rounds mode too: the queue goes with the first round
        abstained = abstained_positions(store, scan, since, until, max_parallel=config.max_parallel)
    queued = queue_abstained(abstained, sample.indices, pool.p_correct, config.abstained_cap)
    rows = np.union1d(sample.indices, queued)  # every input to label, in pool order
    ids, inputs = fetch_rows(store, scan, rows, max_parallel=config.max_parallel)
    sampled = SampledPool(ids=ids, p_correct=pool.p_correct[rows], predictions=pool.predictions[rows],
                          size=pool.size, oracle_accuracy=pool.oracle_accuracy)
    record = cycle_store.SampleRecord(
        pool=sampled, sample=dataclasses.replace(sample, indices=np.searchsorted(rows, sample.indices)),
        holdout=holdout, queued=np.isin(rows, queued) if queued.size else None,
        design=design,
        meta={
            "deployment": config.deployment,
            "since": since, "until": until,
            "budget": config.budget, "n_draws": sample.n_draws,
            "n_labels": int(rows.size), "holdout_share": config.holdout_share,
            "abstained_in_window": int(abstained.size), "abstained_queued": int(queued.size),
            "seed": config.seed, "created": time.time(),
            **scan.summary(),
            **({"rounds": config.rounds_plan()} if config.rounds else {}),
        },
    )
    if config.rounds:
        write_pool(store, cycle, scan)
    cycle_store.write_sample(store, cycle, record, inputs, inclusion)
    if dataset_path:
        write_draws_csv(dataset_path, record.pool, record.sample, holdout, inclusion)
    log.info("cycle %s: %d draws (%d inputs to label, %d of them abstained and queued) from %d logged inputs with %s; "
             "read %d parts in %.1f s", cycle, sample.n_draws, rows.size, queued.size, pool.size, json.dumps(design), len(scan.parts),
             scan.stats.seconds)
    return SampleResult(cycle=cycle, pool_size=pool.size, n_draws=sample.n_draws,
                        n_labels=int(rows.size), n_holdout=int(holdout.sum()),
                        oracle_accuracy=pool.oracle_accuracy)


def write_draws_csv(path: str, pool: Pool | SampledPool, sample: Sample, holdout: np.ndarray,
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


def pool_key(cycle: str) -> str:
    return cycle_store.key(cycle, "pool.npz")


def write_pool(store: ObjectStore, cycle: str, scan: PoolScan) -> None:
    """The window's compact pool (id keys, P(correct), predictions, and where each input lives) for
    the later rounds: about 28 B an input, written only when labels are asked for in rounds."""
    store.put_arrays(pool_key(cycle), keys=scan.pool.ids, p_correct=scan.pool.p_correct,
                     predictions=scan.pool.predictions, part_of=scan.part_of, parts=np.array(scan.parts, dtype=str))


def read_pool(store: ObjectStore, cycle: str) -> PoolScan:
    """The pool :func:`write_pool` stored, as a `PoolScan` that `fetch_rows` can read inputs from.
    CorruptObject naming the key when it is not that pool (an array missing, of another dtype or
    length, a class or part index out of range): a later round would otherwise fail with a
    KeyError or IndexError far from the object, or draw from a wrong pool."""
    k = pool_key(cycle)
    try:
        arrays = store.get_arrays(k)
    except KeyNotFound:
        raise KeyNotFound(f"cycle {cycle!r} has no stored pool in {store.url}: its sample was not drawn in "
                          "rounds (round_size > 0)") from None
    # cycle_store's row checks (one row per input, dtype, finite), as for the sample it sits beside
    cycle_store._rows(store, k, arrays, ints=("keys", "predictions", "part_of"), floats=("p_correct",))
    cycle_store._rows(store, k, arrays, ids=("parts",))
    parts, part_of, predictions = arrays["parts"], arrays["part_of"], arrays["predictions"]
    if parts.dtype.kind != "U" or len(set(parts.tolist())) != len(parts) or (part_of.size and not 0 <= part_of.min() <= part_of.max() < len(parts)):
        raise CorruptObject(f"{store.url}: object {k!r}: 'parts' must be {len(parts)} distinct part keys "
                            f"(strings) that 'part_of' indexes, got {parts.dtype} and indices "
                            f"{part_of.min() if part_of.size else '-'}..{part_of.max() if part_of.size else '-'}")
    keys = arrays["keys"]
    if not np.all(keys[1:] > keys[:-1]):  # fetch_rows and the rounds find inputs by binary search
        raise CorruptObject(f"{store.url}: object {k!r}: 'keys' are not sorted and unique")
    if predictions.size and predictions.min() < 0:
        raise CorruptObject(f"{store.url}: object {k!r}: 'predictions' holds a negative class")
    try:
        pool = Pool(ids=arrays["keys"], p_correct=arrays["p_correct"], predictions=predictions)
    except ValueError as exc:  # the pool's own checks (keys unique, P(correct) in [0, 1])
        raise CorruptObject(f"{store.url}: object {k!r} is not a valid pool: {exc}") from None
    return PoolScan(pool=pool, part_of=part_of, parts=tuple(parts.tolist()), stats=ScanStats())
