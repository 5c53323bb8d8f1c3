"""What a labeling backend is asked for, and the protocol every backend follows."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class LabelRequest:
    """The distinct sampled inputs of one cycle, with what the model said about each."""

    cycle: str
    ids: np.ndarray  # (N,) str
    inputs: np.ndarray  # (N, 28, 28) float32 in [0, 1]
    predictions: np.ndarray  # (N,) int64
    confidences: np.ndarray  # (N,) float, the oracle's P(correct)

    def __post_init__(self) -> None:
        n = len(self.ids)
        if n == 0:
            raise ValueError("a label request needs at least one input")
        for name in ("inputs", "predictions", "confidences"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"label request: {name} has {len(getattr(self, name))} rows, ids has {n}")


class BackendUnavailable(RuntimeError):
    """The labeling backend could not be reached (after its own retries): the waiting loop treats a poll
    that raises this as "no news" and goes on until its deadline, instead of failing the step."""


Answers = dict[str, "int | None"]
"""id -> class label, or None where the labeler looked and could not tell ("unsure")."""


class Backend(Protocol):
    """A labeling backend: ``submit`` once (idempotent), then ``poll`` until every id is answered.

    ``poll`` returns the answers so far; ids without an answer yet are absent.
    """

    name: str

    def submit(self, request: LabelRequest) -> None: ...

    def poll(self, request: LabelRequest) -> Answers: ...
