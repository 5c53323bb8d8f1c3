"""Operational scenarios: streams of input batches over time, with known ground truth.

The DAIC cycle is exercised on traffic whose shift is known: which input was corrupted, how, and
how the class mix moved. The online estimator, the samplers, the operator and the demo all consume
these streams, and their benchmarks compare against the truth recorded in each batch's ``meta``.

Kinds of drift follow the usual taxonomy of concept drift (Gama et al., "A survey on concept drift
adaptation", ACM Computing Surveys 2014): sudden, gradual and recurring covariate shift, prior
(label) shift, plus a stationary baseline and a mixture of several corruptions at once.

Inputs are drawn from the *test* split by default, so nothing used to fit or calibrate a model
(train, val) leaks into operation. Draws go through a shuffled pass over the source and reshuffle
when it is used up, so an input repeats only after the whole source has been seen (a long stream
of 100 x 200 inputs necessarily repeats MNIST's 10,000 test images; ``meta["source_index"]`` says
which). Everything is planned from the seed when a :class:`Scenario` is built, and each step's
corruption noise has its own seed, so ``scenario.batch(step)`` is the same however it is reached.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Iterator, Mapping, NamedTuple

import numpy as np

from daic.data.corruptions import CORRUPTIONS, IDENTITY, SEVERITIES, corrupt
from daic.data.mnist import DATASETS, SPLITS, LabeledImages, load_split

N_CLASSES = 10
CLEAN = -1  # component index of an uncorrupted input in a scenario's plan

DEFAULT_MIXTURE: tuple[tuple[str, int], ...] = (
    ("translate", 2), ("contrast", 3), ("gaussian_noise", 4), ("rotate", 3),
)
# After a label shift most traffic is a few classes (e.g. a form where some digits dominate).
DEFAULT_SHIFTED_PROPORTIONS: tuple[float, ...] = (
    0.25, 0.25, 0.2, 0.1, 0.05, 0.05, 0.04, 0.03, 0.02, 0.01,
)

SCENARIOS: Mapping[str, str] = {
    "stationary": "clean inputs throughout (the no-drift baseline)",
    "sudden": "clean, then from drift_start a share of inputs corrupted (corruption, severity)",
    "gradual": "share of corrupted inputs rising linearly from drift_start to drift_end",
    "recurring": "from drift_start, drift periods of `period` steps alternating with clean ones",
    "label-shift": "clean inputs; from drift_start classes follow class_proportions",
    "mixture": "from drift_start, corrupted inputs spread evenly over several (corruption, severity)",
}
"""Named scenarios and what each does; :func:`build_scenario` builds them."""


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


@dataclass(frozen=True)
class ScenarioSpec:
    """Everything that defines a scenario; defaults live here and only here.

    ``share`` is the share of corrupted inputs once drift is in full effect (a batch holds
    ``round(share * batch_size)`` corrupted inputs, so the truth is exact per batch).
    ``drift_end`` (gradual only) is the step at which ``share`` is reached; default the last step.
    ``class_proportions`` (label-shift only) is the class mix from ``drift_start`` on.
    ``drift_start`` defaults to a third of the way in (``n_steps // 3``), so a short stream built
    by overriding ``n_steps`` alone is still valid.
    """

    name: str = "stationary"
    batch_size: int = 100
    n_steps: int = 60
    corruption: str = "translate"
    severity: int = 3
    drift_start: int | None = None
    drift_end: int | None = None
    share: float = 1.0
    period: int = 10
    mixture: tuple[tuple[str, int], ...] = DEFAULT_MIXTURE
    class_proportions: tuple[float, ...] = DEFAULT_SHIFTED_PROPORTIONS
    seed: int = 0
    source: str = "test"
    dataset: str = "mnist"

    def __post_init__(self) -> None:
        # Accept lists (YAML, JSON) and store tuples so specs stay hashable and immutable.
        object.__setattr__(self, "mixture", tuple(tuple(c) for c in self.mixture))
        object.__setattr__(self, "class_proportions",
                           tuple(float(p) for p in self.class_proportions))
        self._validate()

    def _validate(self) -> None:
        if self.name not in SCENARIOS:
            raise ValueError(f"unknown scenario {self.name!r}; valid: {', '.join(SCENARIOS)}")
        for fname in ("batch_size", "n_steps", "period"):
            value = getattr(self, fname)
            if not _is_int(value) or value < 1:
                raise ValueError(f"{fname} must be an integer >= 1, got {value!r}")
        if not _is_int(self.seed) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        if self.corruption not in CORRUPTIONS:
            raise ValueError(
                f"corruption must be one of {', '.join(CORRUPTIONS)}; got {self.corruption!r}"
            )
        if not _is_int(self.severity) or self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, got {self.severity!r}")
        if self.drift_start is None:
            object.__setattr__(self, "drift_start", self.n_steps // 3)
        if not _is_int(self.drift_start) or not 0 <= self.drift_start < self.n_steps:
            raise ValueError(
                f"drift_start must be an integer in [0, n_steps={self.n_steps}), "
                f"got {self.drift_start!r}"
            )
        if self.drift_end is not None and (
            not _is_int(self.drift_end) or not self.drift_start <= self.drift_end < self.n_steps
        ):
            raise ValueError(
                f"drift_end must be None or an integer in [drift_start={self.drift_start}, "
                f"n_steps={self.n_steps}), got {self.drift_end!r}"
            )
        if not isinstance(self.share, (int, float)) or not 0.0 < float(self.share) <= 1.0:
            raise ValueError(f"share must be in (0, 1], got {self.share!r}")
        if not self.mixture:
            raise ValueError("mixture must list at least one (corruption, severity) pair")
        for component in self.mixture:
            if len(component) != 2:
                raise ValueError(f"mixture entries must be (corruption, severity), got {component!r}")
            cname, sev = component
            if cname not in CORRUPTIONS:
                raise ValueError(
                    f"mixture corruption {cname!r} unknown; valid: {', '.join(CORRUPTIONS)}"
                )
            if not _is_int(sev) or sev not in SEVERITIES:
                raise ValueError(f"mixture severity for {cname!r} must be one of {SEVERITIES}, "
                                 f"got {sev!r}")
        props = np.asarray(self.class_proportions)
        if props.shape != (N_CLASSES,) or not np.all(np.isfinite(props)) or np.any(props < 0) \
                or abs(props.sum() - 1.0) > 1e-6:
            raise ValueError(
                f"class_proportions must be {N_CLASSES} non-negative numbers summing to 1, "
                f"got {self.class_proportions!r}"
            )
        if self.source not in SPLITS:
            raise ValueError(f"source must be one of {', '.join(SPLITS)}, got {self.source!r}")
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {', '.join(DATASETS)}, got {self.dataset!r}")

    @property
    def components(self) -> tuple[tuple[str, int], ...]:
        """The (corruption, severity) pairs corrupted inputs are spread over."""
        if self.name == "mixture":
            return self.mixture
        return ((self.corruption, self.severity),)

    def share_at(self, step: int) -> float:
        """Share of inputs the spec asks to be corrupted at ``step`` (before rounding)."""
        if self.name in ("stationary", "label-shift") or step < self.drift_start:
            return 0.0
        if self.name == "gradual":
            end = self.n_steps - 1 if self.drift_end is None else self.drift_end
            ramp = (step - self.drift_start + 1) / (end - self.drift_start + 1)
            return float(self.share) * min(1.0, ramp)
        if self.name == "recurring":
            drifting = ((step - self.drift_start) // self.period) % 2 == 0
            return float(self.share) if drifting else 0.0
        return float(self.share)  # sudden, mixture

    def proportions_at(self, step: int) -> np.ndarray | None:
        """Class proportions imposed at ``step``, or None where the source's own mix applies."""
        if self.name == "label-shift" and step >= self.drift_start:
            props = np.asarray(self.class_proportions, dtype=np.float64)
            return props / props.sum()
        return None


@dataclass(frozen=True)
class OperationalBatch:
    """One step of operational traffic.

    ``meta`` holds per-input truth arrays: ``corruption`` (str, "identity" when clean),
    ``severity`` (int, 0 when clean), ``corrupted`` (bool), ``source_index`` (row in the source
    split) and ``step``.
    """

    step: int
    images: np.ndarray
    labels: np.ndarray
    ids: np.ndarray
    meta: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def corrupted_share(self) -> float:
        return float(np.mean(self.meta["corrupted"])) if len(self) else 0.0


class Stream(NamedTuple):
    """A whole scenario as arrays (see :func:`materialise`)."""

    images: np.ndarray
    labels: np.ndarray
    ids: np.ndarray
    meta: dict[str, np.ndarray]


class _CyclingPool:
    """Draws indices without replacement from a shuffled pool, reshuffling when it runs out."""

    def __init__(self, indices: np.ndarray, rng: np.random.Generator) -> None:
        self._indices = np.asarray(indices)
        self._rng = rng
        self._order = rng.permutation(self._indices)
        self._pos = 0

    def draw(self, k: int) -> np.ndarray:
        out = []
        while k > 0:
            if self._pos == len(self._order):
                self._order = self._rng.permutation(self._indices)
                self._pos = 0
            take = min(k, len(self._order) - self._pos)
            out.append(self._order[self._pos:self._pos + take])
            self._pos += take
            k -= take
        return np.concatenate(out) if out else np.empty(0, dtype=self._indices.dtype)


class Scenario:
    """A planned stream: ``for batch in scenario`` or ``scenario.batch(step)``.

    ``data`` replaces the source split (e.g. a small subset in tests, or another dataset).
    """

    def __init__(self, spec: ScenarioSpec, data: LabeledImages | None = None) -> None:
        self.spec = spec
        self.data = data if data is not None else load_split(spec.source, spec.dataset)
        if len(self.data) == 0:
            raise ValueError("source data is empty")
        self._plan_indices, self._plan_components = self._plan()

    @property
    def name(self) -> str:
        return self.spec.name

    def __len__(self) -> int:
        return self.spec.n_steps

    def _plan(self) -> tuple[np.ndarray, np.ndarray]:
        spec = self.spec
        rng = np.random.default_rng([spec.seed, 0x5CE7A210])
        labels = np.asarray(self.data.labels)
        everything = _CyclingPool(np.arange(len(labels)), rng)
        by_class = {c: _CyclingPool(np.flatnonzero(labels == c), rng)
                    for c in range(N_CLASSES) if np.any(labels == c)}
        n_comp = len(spec.components)
        indices = np.empty((spec.n_steps, spec.batch_size), dtype=np.int64)
        components = np.full((spec.n_steps, spec.batch_size), CLEAN, dtype=np.int64)
        for step in range(spec.n_steps):
            props = spec.proportions_at(step)
            if props is None:
                indices[step] = everything.draw(spec.batch_size)
            else:
                missing = [c for c in np.flatnonzero(props > 0) if c not in by_class]
                if missing:
                    raise ValueError(f"class_proportions ask for classes {missing} absent from "
                                     f"the source data")
                counts = rng.multinomial(spec.batch_size, props)
                drawn = np.concatenate([by_class[c].draw(k) for c, k in enumerate(counts) if k])
                indices[step] = rng.permutation(drawn)
            n_corrupt = int(round(spec.share_at(step) * spec.batch_size))
            if n_corrupt:
                where = rng.choice(spec.batch_size, size=n_corrupt, replace=False)
                # Even spread over components, in random order: exact truth per component.
                components[step, where] = rng.permutation(np.arange(n_corrupt) % n_comp)
        return indices, components

    def planned_share(self) -> np.ndarray:
        """(n_steps,) share of corrupted inputs per step, exactly as the batches will hold it."""
        return np.mean(self._plan_components != CLEAN, axis=1)

    def batch(self, step: int) -> OperationalBatch:
        """The batch at ``step`` (0-based), corrupted as planned."""
        if not _is_int(step) or not 0 <= step < self.spec.n_steps:
            raise ValueError(f"step must be an integer in [0, {self.spec.n_steps}), got {step!r}")
        spec = self.spec
        idx = self._plan_indices[step]
        comp = self._plan_components[step]
        images = np.array(self.data.images[idx], dtype=np.float32)
        names = np.full(spec.batch_size, IDENTITY, dtype=object)
        severities = np.zeros(spec.batch_size, dtype=np.int64)
        for c, (cname, sev) in enumerate(spec.components):
            sel = comp == c
            if not np.any(sel):
                continue
            noise_seed = int(np.random.SeedSequence([spec.seed, step, c]).generate_state(1)[0])
            images[sel] = corrupt(images[sel], cname, sev, seed=noise_seed)
            names[sel] = cname
            severities[sel] = sev
        ids = np.array([f"{spec.name}-{spec.seed}-{step}-{i}" for i in range(spec.batch_size)])
        meta = {
            "corruption": names.astype(str),
            "severity": severities,
            "corrupted": comp != CLEAN,
            "source_index": idx.copy(),
            "step": np.full(spec.batch_size, step, dtype=np.int64),
        }
        labels = np.asarray(self.data.labels[idx], dtype=np.int64)
        return OperationalBatch(step=step, images=images, labels=labels, ids=ids, meta=meta)

    def __iter__(self) -> Iterator[OperationalBatch]:
        for step in range(self.spec.n_steps):
            yield self.batch(step)

    def summary(self) -> dict[str, object]:
        """One row for tables: name, steps, batch size, what drifts and the share over time."""
        spec = self.spec
        if spec.name == "stationary":
            what = "-"
        elif spec.name == "label-shift":
            top = np.argsort(spec.class_proportions)[::-1][:3]
            what = "classes " + ", ".join(f"{c}:{spec.class_proportions[c]:.2f}" for c in top)
        else:
            what = ", ".join(f"{c}@{s}" for c, s in spec.components)
        share = self.planned_share()
        return {
            "name": spec.name,
            "steps": spec.n_steps,
            "batch": spec.batch_size,
            "drift": what,
            "drift_start": None if spec.name == "stationary" else spec.drift_start,
            "mean_share": float(share.mean()),
            "share_over_time": sparkline(share),
        }


_SPARK = "·▁▂▃▄▅▆▇█"  # "·" = none


def sparkline(values: np.ndarray, width: int = 30) -> str:
    """Values in [0, 1] as a line of block characters, averaged into at most ``width`` cells."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return ""
    cells = np.array_split(values, min(width, values.size))
    levels = [int(round(float(np.mean(c)) * (len(_SPARK) - 1))) for c in cells]
    return "".join(_SPARK[max(0, min(len(_SPARK) - 1, lv))] for lv in levels)


def make_spec(name: str, seed: int = 0, **overrides) -> ScenarioSpec:
    """A validated :class:`ScenarioSpec` for a named scenario with some fields overridden."""
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}; valid: {', '.join(SCENARIOS)}")
    valid = {f.name for f in dataclasses.fields(ScenarioSpec)} - {"name"}
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise ValueError(f"unknown scenario field(s) {unknown}; valid: {', '.join(sorted(valid))}")
    return ScenarioSpec(name=name, seed=seed, **overrides)


def build_scenario(name: str, seed: int = 0, *, data: LabeledImages | None = None,
                   **overrides) -> Scenario:
    """Build the named scenario (see :data:`SCENARIOS`), e.g.
    ``build_scenario("sudden", seed=1, corruption="contrast", severity=4, drift_start=10)``."""
    return Scenario(make_spec(name, seed, **overrides), data=data)


def materialise(scenario: Scenario) -> Stream:
    """The whole stream as arrays: images (T*B, H, W), labels, ids and concatenated ``meta``."""
    if not isinstance(scenario, Scenario):
        raise ValueError(f"materialise expects a Scenario, got {type(scenario).__name__}")
    batches = list(scenario)
    meta = {key: np.concatenate([b.meta[key] for b in batches]) for key in batches[0].meta}
    return Stream(
        images=np.concatenate([b.images for b in batches]),
        labels=np.concatenate([b.labels for b in batches]),
        ids=np.concatenate([b.ids for b in batches]),
        meta=meta,
    )
