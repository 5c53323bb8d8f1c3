"""Labels in rounds: ask for a batch, let the design adapt, stop at the target half-width or the budget.

Kubeflow Pipelines v2 has no dynamic loops (a ``dsl.ParallelFor`` is fanned out when the run
starts; recursion is gone), so the loop lives in this one step, which drives the rounds against
the labeling backend (docs/pipeline.md, "Rounds"):

1. sample-operational drew the first round (``round_size`` draws) and left the window's compact
   pool in ``cycles/<c>/pool.npz`` (``sample.json``'s ``rounds`` holds the plan);
2. each round hands the backend every input drawn so far (backends keep earlier answers: the web
   page's task and a Label Studio project grow; simulated and feedback look the labels up) and
   waits until the new ones are answered;
3. after each round the design's estimator runs on everything labeled so far (the same function as
   estimate-accuracy); the loop stops when the half-width is at most ``target_half_width`` (after
   at least ``min_draws`` draws), the budget is spent, the design has drawn the whole window, or the
   step's deadline has passed;
4. otherwise the design draws the next round from the pool given the labels so far (the adaptive
   designs recalibrate the oracle; the stratified one continues its nested Neyman allocation),
   about ``holdout_share`` of the new draws is held out, only the new inputs' images are fetched,
   and the sample record is rewritten (``sample.npz`` grows; the first draws keep their positions).

This is `daic.sampling.sequential.run_assessment` with a person (or a server) in the loop; the
stopping rule looks only at the half-width, whose coverage under that rule is checked by
simulation there (Chow & Robbins 1965). An input whose answer is "unsure" counts as a
misprediction for aiming the next round only (any rule computed from past labels keeps the
estimators unbiased); the estimate leaves its draws out, as estimate-accuracy does.

**Abstained inputs (issue 21, item 4) go with the first round, not as a batch of their own.**
sample-operational queues them beside the first round's draws (``SampleRecord.queued``; at most
``abstained_cap``, lowest P(correct) first, not among the first draws; daic.sampling.abstain), so the
first request holds them and every later one too (each round submits every input so far: the
backends keep earlier answers, so each is labeled once). Why the first round:

- the queue depends on nothing the rounds learn (a fixed rule on the window's abstained flag and
  P(correct)), so there is nothing to wait for; asking for it with the first round costs no extra
  round trip, where a batch of its own after the last round would add one more wait for the
  labelers once the estimate is already done -- and would be lost when the rounds stop at the
  step's deadline;
- the labelers see the inputs the model server gave up on first: the ones retraining most needs.

They stay out of what the rounds decide: the design draws each round from the whole window with
the draws' history and the draws' labels only (the queued labels do not aim it), the inclusion
probabilities are the design's, the estimate and the stopping rule use the draws only, and the
budget counts draws only. A queued input a later round happens to draw becomes a draw from then on
(:func:`carry_queue`): its label, already in hand, counts like any draw's, and it is held out if
that draw is -- the queue, as in one-round mode, is the abstained inputs *not drawn*, so a queued
input is never held out. The queue may so end shorter than it began, never longer than the cap.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from daic.components import cycle_store
from daic.components.estimate_accuracy.logic import offline_estimate
from daic.components.sample_operational.designs import inclusion_probabilities, make_design
from daic.components.sample_operational.holdout import split_round
from daic.components.sample_operational.logic import pool_key, read_pool
from daic.sampling.pool import SampledPool
from daic.sampling.fetch import fetch_rows
from daic.sampling.scan import PoolScan, id_keys
from daic.storage import ObjectStore
from daic.storage.parsed import CorruptObject, parse_value

from .request import Answers, Backend, LabelRequest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RoundsPlan:
    """``sample.json``'s ``rounds`` (written by sample-operational's ``SampleConfig.rounds_plan``)."""

    round_size: int
    budget: int
    target_half_width: float = 0.0
    level: float = 0.95
    min_draws: int = 100
    holdout_share: float = 0.3
    seed: int = 0

    @classmethod
    def from_meta(cls, store: ObjectStore, cycle: str, doc: Any) -> "RoundsPlan":
        """``doc`` (``sample.json``'s ``rounds``) checked as SampleConfig checked it when it wrote
        the plan; CorruptObject naming the key otherwise (a list was an AttributeError, a round
        size of "x" or -3 failed rounds later, or drew nothing for ever)."""
        where = f"{store.url}: object {cycle_store.key(cycle, 'sample.json')!r}'s 'rounds'"
        return cls(**parse_value(where, _RoundsMeta, doc).model_dump())


class _RoundsMeta(BaseModel):
    """The plan as :meth:`SampleConfig.rounds_plan` writes it (the same bounds as SampleConfig)."""

    model_config = ConfigDict(extra="ignore")
    round_size: StrictInt = Field(ge=4)
    budget: StrictInt = Field(ge=4)
    target_half_width: float = Field(default=0.0, ge=0.0, lt=0.5, strict=True)
    level: float = Field(default=0.95, gt=0.0, lt=1.0, strict=True)
    min_draws: StrictInt = Field(default=100, ge=0)
    holdout_share: float = Field(default=0.3, gt=0.0, lt=1.0, strict=True)
    seed: StrictInt = Field(default=0, ge=0)


def request_of(record: cycle_store.SampleRecord, ids: np.ndarray, inputs: np.ndarray, cycle: str) -> LabelRequest:
    position = {i: k for k, i in enumerate(record.pool.ids)}
    rows = np.array([position[i] for i in ids])
    return LabelRequest(cycle=cycle, ids=ids, inputs=inputs, predictions=record.pool.predictions[rows],
                        confidences=record.pool.p_correct[rows])


def pool_positions(store: ObjectStore, cycle: str, scan: PoolScan, record: cycle_store.SampleRecord) -> np.ndarray:
    """Position in the stored pool of each drawn input of the record; CorruptObject naming the pool
    when it lacks one (the pool and the sample were written together, so the pool is not the one)."""
    keys = id_keys(record.pool.ids)
    pos = np.minimum(np.searchsorted(scan.pool.ids, keys), scan.pool.size - 1)
    if not np.array_equal(scan.pool.ids[pos], keys):
        raise CorruptObject(f"{store.url}: object {pool_key(cycle)!r} does not hold every sampled input of the "
                            "cycle (was it rewritten?)")
    return pos


def carry_queue(queued: np.ndarray | None, n_fresh: int, new_draws: np.ndarray) -> np.ndarray | None:
    """The abstained queue after a round (module docstring): rows appended for the round's fresh
    inputs (not queued), and a queued row the round drew leaves the queue (it is a draw now).
    ``new_draws``: the round's draws as rows of the grown record. None stays None."""
    if queued is None:
        return None
    grown = np.concatenate([np.asarray(queued, bool), np.zeros(n_fresh, bool)])
    grown[np.asarray(new_draws, np.int64)] = False
    return grown


def draw_round(store: ObjectStore, cycle: str, record: cycle_store.SampleRecord, inputs: np.ndarray,
               labels: dict[str, int], scan: PoolScan, plan: RoundsPlan, round_no: int
               ) -> tuple[cycle_store.SampleRecord, np.ndarray] | None:
    """Draw the next round, fetch its new inputs and rewrite the sample record; None when the
    design cannot draw more (the window is exhausted)."""
    design = make_design(record.design["name"], record.design.get("params"))
    positions = pool_positions(store, cycle, scan, record)
    history = dataclasses.replace(record.sample, indices=positions[record.sample.indices])
    drawn_ids = record.pool.ids[record.sample.indices]
    truth = np.array([labels.get(i, -1) for i in drawn_ids])
    correct = truth == record.pool.predictions[record.sample.indices]  # unsure: aimed at as a failure
    n = min(plan.round_size, plan.budget - history.n_draws)
    limit = design.max_draws(scan.pool)
    if limit is not None:
        n = min(n, limit - history.n_draws)
    if n <= 0:
        return None
    rng = np.random.default_rng([plan.seed, 0x5A3B1E, round_no])
    new = design.draw(scan.pool, history, correct, n, rng)
    held = split_round(new, plan.holdout_share, rng)
    local = {int(p): k for k, p in enumerate(positions)}
    fresh = [int(p) for p in dict.fromkeys(new.indices.tolist()) if int(p) not in local]
    for p in fresh:
        local[p] = len(local)
    if fresh:
        fresh_ids, fresh_inputs = fetch_rows(store, scan, np.array(fresh, np.int64))
        inputs = np.concatenate([inputs, fresh_inputs])
    else:
        fresh_ids = np.zeros(0, str)
    fresh_arr = np.array(fresh, np.int64)
    pool = SampledPool(ids=np.concatenate([record.pool.ids, fresh_ids]),
                       p_correct=np.concatenate([record.pool.p_correct, scan.pool.p_correct[fresh_arr]]),
                       predictions=np.concatenate([record.pool.predictions, scan.pool.predictions[fresh_arr]]),
                       size=record.pool.size, oracle_accuracy=record.pool.oracle_accuracy)
    new_local = dataclasses.replace(new, indices=np.array([local[int(p)] for p in new.indices], np.int64))
    sample = record.sample.concat(new_local)
    queued = carry_queue(record.queued, len(fresh), new_local.indices)
    rows = sample.distinct if queued is None else np.union1d(sample.distinct, np.flatnonzero(queued))
    meta = {**record.meta, "n_draws": sample.n_draws, "n_labels": int(rows.size)}
    if queued is not None:
        meta["abstained_queued"] = int(queued.sum())
    updated = cycle_store.SampleRecord(pool=pool, sample=sample, holdout=np.concatenate([record.holdout, held]),
                                       design=record.design, meta=meta, queued=queued)
    inclusion = inclusion_probabilities(design, scan.pool, history.concat(new))
    cycle_store.write_sample(store, cycle, updated, inputs, inclusion)
    return updated, inputs


def run_rounds(store: ObjectStore, cycle: str, record: cycle_store.SampleRecord, backend: Backend,
               timeout_s: float, poll_s: float, min_answered_share: float,
               clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
               ) -> tuple[cycle_store.SampleRecord, np.ndarray, np.ndarray, Answers, float]:
    """Drive the rounds (module docstring); returns the final record, the sampled ids and images,
    the answers and the time spent waiting. The trace goes to ``cycles/<c>/rounds.json``."""
    from .logic import submit_until_accepted, wait_for_answers

    plan = RoundsPlan.from_meta(store, cycle, record.meta["rounds"])
    scan = read_pool(store, cycle)
    pool_positions(store, cycle, scan, record)  # a pool that is not this sample's fails now, not rounds later
    ids, inputs = cycle_store.read_sample_inputs(store, cycle)
    start = clock()
    trace: list[dict[str, Any]] = []
    answers: Answers = {}
    round_no = 0
    while True:
        left = max(poll_s, timeout_s - (clock() - start))
        request = request_of(record, ids, inputs, cycle)
        submit_until_accepted(backend, request, left, poll_s, clock=clock, sleep=sleep)
        answers, _ = wait_for_answers(backend, request, max(poll_s, timeout_s - (clock() - start)), poll_s,
                                      min_answered_share, clock=clock, sleep=sleep)
        labels = {i: a for i, a in answers.items() if a is not None}
        cycle_store.write_labels(store, cycle, ids, np.array([labels.get(str(i), cycle_store.UNLABELED) for i in ids],
                                                              dtype=np.int64), backend.name)
        try:
            est, _ = offline_estimate(record, labels, plan.level)
        except ValueError as exc:  # e.g. a stratum without two labels yet
            est = None
            log.info("round %d: no interval yet (%s)", round_no, exc)
        n_draws = record.sample.n_draws
        entry: dict[str, Any] = {"round": round_no, "n_draws": n_draws, "n_inputs": int(len(ids)),
                                 "n_queued": int(record.queued_ids.size),
                                 "n_answered": len(answers), "seconds": clock() - start}
        if est is not None:
            entry.update(accuracy=est.accuracy, lower=est.lower, upper=est.upper, half_width=est.half_width,
                         n_labels=est.n_labels, failures_found=est.n_failures_found)
        stop = None
        if n_draws >= plan.budget:
            stop = "budget"
        elif (plan.target_half_width > 0 and est is not None and n_draws >= plan.min_draws
              and est.half_width <= plan.target_half_width):
            stop = "target"
        elif clock() - start >= timeout_s:
            stop = "timeout"
        if stop is None:
            drawn = draw_round(store, cycle, record, inputs, labels, scan, plan, round_no + 1)
            if drawn is None:
                stop = "pool"
            else:
                record, inputs = drawn
                ids = record.label_ids  # the draws and the abstained queue, aligned with ``inputs``
        entry["stop"] = stop
        trace.append(entry)
        log.info("cycle %s round %d: %d draws, %d answered%s%s", cycle, round_no, n_draws, len(answers),
                 f", accuracy {est.accuracy:.3f} ± {est.half_width:.3f}" if est is not None else "",
                 f"; stop ({stop})" if stop else "")
        store.put_json(cycle_store.key(cycle, "rounds.json"), {"plan": dataclasses.asdict(plan), "rounds": trace})
        if stop is not None:
            return record, ids, inputs, answers, clock() - start
        round_no += 1
