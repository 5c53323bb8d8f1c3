"""collect-labels: hand the cycle's sample to a labeling backend and wait for the labels.

Backends (:data:`BACKENDS`): ``web`` (the labeling page), ``label-studio`` (a Label Studio server),
``feedback`` (ground truth that arrived through the sidecar's feedback endpoint) and ``simulated``
(truth from a benchmark scenario: for the demo and benchmarks only). Each is submitted to once and
polled until every sampled input is answered or ``timeout_s`` passes; an answer of "unsure" counts
as answered but gives no label. At the deadline the step fails unless at least
``min_answered_share`` of the inputs are answered (labels missing not at random bias an estimate,
so the default asks for all of them).

Results: ``cycles/<c>/labels.npz`` (every sampled input, -1 where unlabeled), the trainer's batch
``labels/<c>/batch-0.npz`` (labeled training inputs) and ``cycles/<c>/holdout.npz`` (labeled
held-out inputs), see :mod:`daic.components.cycle_store`.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from daic.components import cycle_store
from daic.storage import ObjectStore, open_store

from .request import Answers, Backend, BackendUnavailable, LabelRequest

log = logging.getLogger(__name__)

BACKENDS: dict[str, str] = {
    "web": "the labeling web page (daic label serve); people label in a browser",
    "label-studio": "a Label Studio server (LABEL_STUDIO_URL, LABEL_STUDIO_API_KEY)",
    "feedback": "ground truth received through the sidecar's feedback endpoint",
    "simulated": "truth from the scenario that produced the traffic: demo and benchmarks only",
}


WEIGHTINGS: dict[str, str] = {
    "uniform": "every labeled input weighs the same (the trainer's operational_weight)",
    "inclusion": "inverse inclusion probability (self-normalised, clipped to [0.1, 10]): the labeled inputs "
                 "stand for the window's traffic, not for the design's over-sampled regions",
    "mispredicted": "inputs the model got wrong weigh 2x those it got right (normalised to mean 1): "
                    "emphasis on what the labels teach",
}


@dataclass(frozen=True)
class CollectConfig:
    backend: str = "web"
    timeout_s: float = 3600.0
    poll_s: float = 5.0
    min_answered_share: float = 1.0
    deployment: str = "mnist"
    simulated_scenario: str = ""
    label_studio_url: str = ""
    show_model_answer: bool = False  # blind labeling unless the cycle asks (anchoring biases the estimate)
    train_weighting: str = "uniform"  # how the trainer weighs each labeled input (:data:`WEIGHTINGS`)

    def __post_init__(self) -> None:
        if self.train_weighting not in WEIGHTINGS:
            raise ValueError(f"unknown train_weighting {self.train_weighting!r}; valid: {', '.join(WEIGHTINGS)}")
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown labeler {self.backend!r}; valid: {', '.join(BACKENDS)}")
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s!r}")
        if not 0 < self.poll_s <= self.timeout_s:
            raise ValueError(f"poll_s must be in (0, timeout_s], got {self.poll_s!r}")
        if not 0.0 < self.min_answered_share <= 1.0:
            raise ValueError(f"min_answered_share must be in (0, 1], got {self.min_answered_share!r}")


@dataclass(frozen=True)
class CollectResult:
    n_requested: int
    n_labeled: int
    n_unsure: int
    n_train: int
    n_holdout: int
    waited_s: float


def make_backend(store: ObjectStore, config: CollectConfig) -> Backend:
    if config.backend == "web":
        from .web import WebBackend

        return WebBackend(store, show_model_answer=config.show_model_answer)
    if config.backend == "label-studio":
        from .label_studio import LabelStudioBackend

        return LabelStudioBackend(store, url=config.label_studio_url, show_model_answer=config.show_model_answer)
    if config.backend == "feedback":
        from .feedback import FeedbackBackend

        return FeedbackBackend(store, config.deployment)
    from .simulated import SimulatedBackend

    return SimulatedBackend(config.simulated_scenario)


def wait_for_answers(backend: Backend, request: LabelRequest, timeout_s: float, poll_s: float,
                     min_answered_share: float = 1.0,
                     clock: Callable[[], float] = time.monotonic,
                     sleep: Callable[[float], None] = time.sleep) -> tuple[Answers, float]:
    """Poll until all inputs are answered; at the deadline accept ``min_answered_share`` or raise."""
    wanted = {str(i) for i in request.ids}
    start = clock()
    answers: Answers = {}
    while True:
        try:
            answers = {i: a for i, a in backend.poll(request).items() if i in wanted}
        except BackendUnavailable as exc:  # keep the answers of the last good poll; try again later
            log.warning("labels: %s unavailable (%s); trying again in %gs", backend.name, exc, poll_s)
        waited = clock() - start
        if len(answers) == len(wanted):
            return answers, waited
        if waited >= timeout_s:
            if len(answers) >= min_answered_share * len(wanted):
                log.warning("labeling timed out with %d of %d answered; going on", len(answers), len(wanted))
                return answers, waited
            raise TimeoutError(
                f"labeling ({backend.name}) for cycle {request.cycle!r} timed out after {timeout_s:g}s "
                f"with {len(answers)} of {len(wanted)} inputs answered "
                f"(min_answered_share={min_answered_share:g})"
            )
        log.info("labels: %d/%d answered; next look in %gs", len(answers), len(wanted), poll_s)
        sleep(min(poll_s, max(0.0, timeout_s - waited)))


def submit_until_accepted(backend: Backend, request: LabelRequest, timeout_s: float, poll_s: float,
                          clock: Callable[[], float] = time.monotonic,
                          sleep: Callable[[float], None] = time.sleep) -> None:
    """Submit; while the backend is unavailable (after its own retries), try again every ``poll_s``
    until ``timeout_s``: an outage at the start of the step costs time, not the step."""
    start = clock()
    while True:
        try:
            backend.submit(request)
            return
        except BackendUnavailable as exc:
            if clock() - start >= timeout_s:
                raise TimeoutError(f"labeling ({backend.name}) for cycle {request.cycle!r}: the backend stayed "
                                   f"unavailable for {timeout_s:g}s: {exc}") from exc
            log.warning("labels: %s unavailable while submitting (%s); trying again in %gs", backend.name, exc, poll_s)
            sleep(min(poll_s, max(0.0, timeout_s - (clock() - start))))


def run(store: ObjectStore | str, cycle: str, config: CollectConfig,
        backend: Backend | None = None, clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep) -> CollectResult:
    store = open_store(store or None) if isinstance(store, str) else store
    record = cycle_store.read_sample(store, cycle)
    backend = backend or make_backend(store, config)
    if record.meta.get("rounds") is not None:  # labels in rounds: this step drives them (.rounds)
        from .rounds import run_rounds

        record, ids, inputs, answers, waited = run_rounds(
            store, cycle, record, backend, config.timeout_s, config.poll_s, config.min_answered_share,
            clock=clock, sleep=sleep)
    else:
        ids, inputs = cycle_store.read_sample_inputs(store, cycle)
        position = {i: k for k, i in enumerate(record.pool.ids)}
        rows = np.array([position[i] for i in ids])
        request = LabelRequest(cycle=cycle, ids=ids, inputs=inputs,
                               predictions=record.pool.predictions[rows],
                               confidences=record.pool.p_correct[rows])
        start = clock()
        submit_until_accepted(backend, request, config.timeout_s, config.poll_s, clock=clock, sleep=sleep)
        answers, waited = wait_for_answers(backend, request,
                                           max(config.poll_s, config.timeout_s - (clock() - start)),
                                           config.poll_s, config.min_answered_share, clock=clock, sleep=sleep)
    labels = np.array([cycle_store.UNLABELED if answers.get(i) is None else answers[i] for i in ids],
                      dtype=np.int64)
    if np.any((labels != cycle_store.UNLABELED) & ((labels < 0) | (labels > 9))):
        raise ValueError(f"labeler {backend.name} returned labels outside 0..9")
    cycle_store.write_labels(store, cycle, ids, labels, backend.name)
    labeled = labels != cycle_store.UNLABELED
    train_mask = labeled & np.isin(ids, record.train_ids)
    weights = train_weights(store, cycle, record, ids, labels, config.train_weighting)
    n_train = _write_part(store, cycle_store.train_labels_key(cycle), ids, inputs, labels, train_mask,
                          weights=weights[train_mask] if train_mask.any() else None)
    n_holdout = _write_part(store, cycle_store.key(cycle, "holdout.npz"), ids, inputs, labels,
                            labeled & np.isin(ids, record.holdout_ids))
    n_unsure = sum(1 for i in ids if i in answers and answers[i] is None)
    log.info("cycle %s: %d labels (%d unsure) via %s; %d for training, %d held out",
             cycle, int(labeled.sum()), n_unsure, backend.name, n_train, n_holdout)
    return CollectResult(n_requested=len(ids), n_labeled=int(labeled.sum()), n_unsure=n_unsure,
                         n_train=n_train, n_holdout=n_holdout, waited_s=waited)


def _write_part(store: ObjectStore, key: str, ids: np.ndarray, inputs: np.ndarray, labels: np.ndarray,
                mask: np.ndarray, weights: np.ndarray | None = None) -> int:
    if mask.any():
        extra = {} if weights is None else {"weights": np.asarray(weights, np.float32)}
        store.put_arrays(key, images=inputs[mask].astype(np.float32), labels=labels[mask], ids=ids[mask], **extra)
    return int(mask.sum())


def train_weights(store: ObjectStore, cycle: str, record: cycle_store.SampleRecord, ids: np.ndarray,
                  labels: np.ndarray, weighting: str) -> np.ndarray:
    """Per sampled input (aligned with ``ids``), its weight in training under ``weighting``
    (:data:`WEIGHTINGS`); normalised to mean 1 over the labeled inputs, so the trainer's
    ``operational_weight`` keeps its meaning. Handed on as ``weights`` in ``labels/<c>/batch-0.npz``.

    ``inclusion``: the Horvitz–Thompson weight 1 / pi_i (Horvitz & Thompson 1952), pi_i the
    first-order inclusion probability the sampling step stored per draw (the smallest of an
    input's draws: its largest weight), self-normalised (Hajek) and clipped to [0.1, 10] so a
    rare heavy input cannot dominate a few hundred labels: importance weighting of the training
    loss toward the operational distribution (Shimodaira 2000). ``mispredicted``: 2 where the
    label differs from the model's prediction, 1 elsewhere (the failure-seeking share of a design
    already over-samples these; this emphasis is for designs that do not).
    """
    n = len(ids)
    labeled = labels != cycle_store.UNLABELED
    w = np.ones(n, np.float64)
    if weighting == "inclusion":
        arrays = store.get_arrays(cycle_store.key(cycle, "sample.npz"))
        if "inclusion_prob" not in arrays:
            raise ValueError(f"cycle {cycle!r}: the sample record has no inclusion probabilities "
                             "(drawn before they were recorded); use train_weighting='uniform'")
        pi = np.asarray(arrays["inclusion_prob"], np.float64)
        drawn = record.pool.ids[record.sample.indices]
        smallest: dict[str, float] = {}
        for i, p in zip(drawn, pi):
            smallest[i] = min(p, smallest.get(i, np.inf))
        w = np.array([1.0 / max(smallest[str(i)], 1e-12) if str(i) in smallest else np.nan for i in ids])
        # An input queued as abstained (issue 21) was not drawn: no inclusion probability; it
        # weighs what a draw weighs on average.
        drawn_mask = ~np.isnan(w)
        w[~drawn_mask] = w[drawn_mask & labeled].mean() if (drawn_mask & labeled).any() else 1.0
    elif weighting == "mispredicted":
        position = {i: k for k, i in enumerate(record.pool.ids)}
        predicted = record.pool.predictions[[position[str(i)] for i in ids]]
        w = np.where(labeled & (labels != predicted), 2.0, 1.0)
    if labeled.any():
        w = w / w[labeled].mean()
        if weighting == "inclusion":
            w = np.clip(w, 0.1, 10.0)
            w = w / w[labeled].mean()
    return w
