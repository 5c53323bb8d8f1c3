"""``simulated``: ground truth from a benchmark scenario — for the demo and benchmarks ONLY.

No human is involved: each sampled input's label is looked up in the scenario stream that
produced the traffic (:mod:`daic.data.scenarios`, rebuilt from its spec, which fixes every input).
An input is found by its id when the traffic kept the scenario's ids, else by its image (the
nearest stream image, which must match to within ``tolerance`` per pixel), so the lookup does not
depend on how the serving path named requests. An input found in neither way is an error: the
spec does not describe the traffic.
"""
from __future__ import annotations

import json

import numpy as np

from daic.data.scenarios import ScenarioSpec, Scenario, materialise

from .request import Answers, LabelRequest


def parse_spec(text: str) -> ScenarioSpec:
    """A ScenarioSpec from JSON (``{"name": "sudden", "seed": 0, ...}``); errors name the field."""
    if not text or not text.strip():
        raise ValueError("the simulated labeler needs simulated_scenario: the JSON spec of the scenario "
                         "that produced the traffic, e.g. {\"name\": \"sudden\", \"seed\": 0}")
    try:
        fields = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"simulated_scenario is not valid JSON: {exc}") from None
    if not isinstance(fields, dict):
        raise ValueError("simulated_scenario must be a JSON object of ScenarioSpec fields")
    try:
        return ScenarioSpec(**fields)
    except TypeError as exc:
        raise ValueError(f"simulated_scenario: {exc}") from None


class SimulatedBackend:
    name = "simulated"

    def __init__(self, spec: ScenarioSpec | str, tolerance: float = 1e-3) -> None:
        self.spec = parse_spec(spec) if isinstance(spec, str) else spec
        self.tolerance = tolerance

    def submit(self, request: LabelRequest) -> None:
        """Nothing to hand over: the truth is already known."""

    def poll(self, request: LabelRequest) -> Answers:
        stream = materialise(Scenario(self.spec))
        by_id = {i: k for k, i in enumerate(stream.ids)}
        flat = stream.images.reshape(len(stream.images), -1)
        sq = (flat ** 2).sum(axis=1)
        answers: Answers = {}
        for i, image in zip(request.ids, request.inputs):
            k = by_id.get(str(i))
            if k is None:
                x = image.reshape(-1).astype(np.float32)
                k = int(np.argmin(sq - 2 * flat @ x))
                if np.abs(flat[k] - x).max() > self.tolerance:
                    raise ValueError(f"input {i!r} is not part of scenario {self.spec.name!r} "
                                     f"(seed {self.spec.seed}): check simulated_scenario")
            answers[str(i)] = int(stream.labels[k])
        return answers
