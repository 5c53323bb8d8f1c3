"""Training progress while a run is under way: one line per epoch (loss, accuracy, samples/s) instead
of a silent minute.

Rank 0's per-epoch callback (:func:`daic.training.worker.epoch_reporter`) writes the history so far
to the object store (``progress_key`` in the worker's payload): the one channel that reaches the
driver from every place a worker runs (in process, local Ray worker processes, a KubeRay cluster),
whatever Ray does with the workers' stdout. During ``TorchTrainer.fit`` the driver
(:func:`daic.training.trainer.run_training`) polls that key once a second and hands each new epoch
to the listeners registered with :func:`listen` (the CLI and the demo print a line), and logs it.
A cycle's retraining writes ``cycles/<cycle>/train-progress/<model>.json``, which the demo reads
from the pipeline's process.
"""
from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

log = logging.getLogger(__name__)

Listener = Callable[[dict[str, Any]], None]
_listeners: list[Listener] = []
_lock = threading.Lock()


@contextlib.contextmanager
def listen(listener: Listener) -> Iterator[None]:
    """Call ``listener(metrics)`` for every epoch of the runs trained while the block runs
    (``metrics``: the epoch's record, with ``epochs``, the run's total, added)."""
    with _lock:
        _listeners.append(listener)
    try:
        yield
    finally:
        with _lock:
            _listeners.remove(listener)


def progress_key(model_name: str, run_name: str, notes: dict[str, str] | None) -> str:
    """Where a run's progress goes: its cycle's record when it trains for one (one key per model: a
    cycle retrains the classifier and may fit an input filter), else beside its checkpoints."""
    cycle = (notes or {}).get("cycle")
    if cycle:
        return f"cycles/{cycle}/train-progress/{model_name}.json"
    return f"checkpoints/{model_name}/{run_name}/progress.json"


def describe(metrics: dict[str, Any]) -> str:
    """``epoch 2/3: loss 0.1234, train acc 96.10%, val acc 98.20%, 12,345 samples/s, 4.5 s``; a
    field the run does not report (another network's loop, e.g. the input filter's) is left out."""
    epoch, total = metrics.get("epoch"), metrics.get("epochs")
    parts = [f"epoch {int(epoch) if epoch is not None else '?'}/{int(total) if total else '?'}:"]
    for name, label, scale, fmt in (("train_loss", "loss", 1, ".4f"), ("train_accuracy", "train acc", 100, ".2f"),
                                    ("val_accuracy", "val acc", 100, ".2f")):
        if isinstance(metrics.get(name), (int, float)):
            parts.append(f"{label} {scale * metrics[name]:{fmt}}{'%' if scale == 100 else ''},")
    if isinstance(metrics.get("samples_per_s"), (int, float)):
        parts.append(f"{metrics['samples_per_s']:,.0f} samples/s,")
    if isinstance(metrics.get("epoch_time_s"), (int, float)):
        parts.append(f"{metrics['epoch_time_s']:.1f} s")
    return " ".join(parts).rstrip(",")


def publish(metrics: dict[str, Any]) -> None:
    """Log the epoch and hand it to the listeners; never raises (progress must not fail a run)."""
    try:
        log.info("training %s", describe(metrics))
    except Exception:  # noqa: BLE001
        log.exception("training progress: could not describe %r", metrics)
    with _lock:
        listeners = list(_listeners)
    for listener in listeners:
        try:
            listener(metrics)
        except Exception:  # a listener's failure never stops training
            log.exception("training progress listener failed")


class Watcher:
    """Polls a run's progress key in a thread and publishes each new epoch once."""

    def __init__(self, store, key: str, interval_s: float = 1.0) -> None:
        self.store, self.key, self.interval_s = store, key, interval_s
        self.seen = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="train-progress", daemon=True)

    def __enter__(self) -> "Watcher":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.poll()  # the last epoch, if the run ended between two polls

    def poll(self) -> None:
        """Publish the epochs written since the last poll; never raises (best effort)."""
        try:
            if not self.store.exists(self.key):
                return
            doc = self.store.get_json(self.key)
            history = [m for m in doc.get("history", []) if isinstance(m, dict)]
        except Exception as exc:  # noqa: BLE001 - progress is best effort; training goes on
            log.debug("training progress %s unreadable: %s", self.key, exc)
            return
        for metrics in history[self.seen:]:
            publish({**metrics, "epochs": doc.get("epochs", 0)})
        self.seen = max(self.seen, len(history))

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.poll()
