"""The facade the sidecar uses: fit every pseudo-oracle on a reference, score batches.

``OnlineAssessor.fit(reference, shifted=None)`` splits the oracle reference in two halves by
row parity: the *bank* (even rows) is what the distance oracles index; the *calibration* half
(odd rows) is held out from it, so its distances, percentiles and combiner fit see the same
kind of "unseen input" that operation will bring. A :class:`ShiftedReference` (the model's
outputs on synthetic corruptions of calibration rows of val, never test) lets the combiner
learn what errors look like under shift, which the clean reference alone barely shows (a 99 %
accurate model makes ~25 errors on 2,500 clean inputs). With it the assessor also measures its
own error on shifts it has not seen (leave one corruption type out), which becomes the
estimator's model-error term.

``score(probs, embeddings, shadow_probs)`` returns :class:`PerInputScores`: the combined
P(correct), the drift percentile, the "far" flag, and each oracle's own output.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from daic.oracles.base import NotFittedError
from daic.oracles.batch import OracleBatch
from daic.oracles.combiner import FEATURES, Combiner, signal_features
from daic.oracles.confidence import ConfidenceOracle
from daic.oracles.disagreement import ShadowDisagreementOracle
from daic.oracles.distance import KNNDistanceOracle, MahalanobisOracle
from daic.oracles.reference import OracleReference
from daic.oracles.scores import PerInputScores
from daic.oracles.window import WindowConfig


def split_reference(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(bank rows, calibration rows) of an n-row reference: even and odd row numbers.

    Fixed by position so whoever builds a :class:`ShiftedReference` corrupts calibration rows
    only, without coordinating a random seed.
    """
    rows = np.arange(n)
    return rows[0::2], rows[1::2]


@dataclass(frozen=True)
class ShiftedReference:
    """Model and shadow outputs on synthetically shifted calibration rows of the val split.

    conditions: (N,) str naming each row's shift as ``"<corruption>/<severity>"``; the part
    before "/" is the corruption *type* held out as a group when measuring model error.
    """

    reference: OracleReference
    conditions: np.ndarray

    def __post_init__(self) -> None:
        cond = np.asarray(self.conditions).astype(str)
        if cond.shape != (len(self.reference),):
            raise ValueError(f"conditions must have shape ({len(self.reference)},), got {cond.shape}")
        object.__setattr__(self, "conditions", cond)

    @property
    def types(self) -> np.ndarray:
        return np.array([c.split("/", 1)[0] for c in self.conditions])

    def without_types(self, types) -> "ShiftedReference":
        keep = ~np.isin(self.types, list(types))
        return ShiftedReference(self.reference.subset(keep), self.conditions[keep])

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {**self.reference.to_arrays(), "conditions": self.conditions}

    @classmethod
    def from_arrays(cls, arrays) -> "ShiftedReference":
        if "conditions" not in arrays:
            raise ValueError("shifted reference is missing array: conditions")
        return cls(OracleReference.from_arrays(arrays), np.asarray(arrays["conditions"]))


@dataclass(frozen=True)
class AssessorConfig:
    """k: neighbours for the kNN distance. combiner / regularisation: see Combiner.
    clean_share: share of the combiner's total sample weight given to clean calibration rows
    (the rest is spread evenly over the shift conditions). far_quantile: an input is "far" when
    its kNN distance exceeds this quantile of the distances the combiner was fitted on.
    default_model_error: model-error term when no shifted reference is given."""

    k: int = 10
    combiner: str = "logistic"
    regularisation: float = 1.0
    clean_share: float = 0.3
    far_quantile: float = 0.99
    default_model_error: float = 0.05
    estimate_model_error: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or int(self.k) != self.k or self.k < 1:
            raise ValueError(f"k must be a positive integer, got {self.k!r}")
        if not 0.0 < self.clean_share <= 1.0:
            raise ValueError(f"clean_share must lie in (0, 1], got {self.clean_share!r}")
        if not 0.0 < self.far_quantile < 1.0:
            raise ValueError(f"far_quantile must lie in (0, 1), got {self.far_quantile!r}")
        if not self.default_model_error >= 0.0:
            raise ValueError(f"default_model_error must be >= 0, got {self.default_model_error!r}")


class OnlineAssessor:
    """Fits the pseudo-oracles and the combiner; scores batches (see the module docstring)."""

    def __init__(self, config: AssessorConfig | None = None) -> None:
        self.config = config or AssessorConfig()
        self._fitted = False

    # -- fitting ------------------------------------------------------------------------------
    def fit(self, reference: OracleReference, shifted: ShiftedReference | None = None) -> "OnlineAssessor":
        cfg = self.config
        bank_rows, cal_rows = split_reference(len(reference))
        bank, cal = reference.subset(bank_rows), reference.subset(cal_rows)
        if len(bank) <= cfg.k:
            raise ValueError(f"reference too small: {len(reference)} rows for k={cfg.k}")
        if cal.correct.all() and shifted is None:
            raise ValueError("the calibration half of the reference has no errors and no shifted "
                             "reference was given: nothing to learn what an error looks like from")
        self.reference_accuracy = reference.accuracy
        self.knn = KNNDistanceOracle(cfg.k).fit(bank)
        self.mahalanobis = MahalanobisOracle().fit(bank)
        # Drift percentiles against held-out (calibration) distances: exactly exchangeable.
        self._cal_distances = np.sort(self.knn.signal(OracleBatch.of(cal)))
        # Individually calibrated oracles, reported as components.
        self.components = {
            "max_softmax": ConfidenceOracle("max_softmax").fit(reference),
            "margin": ConfidenceOracle("margin").fit(reference),
            "entropy": ConfidenceOracle("entropy").fit(reference),
            "shadow": ShadowDisagreementOracle().fit(reference),
        }
        x_cal = self.features(OracleBatch.of(cal))
        if shifted is None:
            x, y, w = x_cal, cal.correct, None
            groups = None
        else:
            x_sh = self.features(OracleBatch.of(shifted.reference))
            x = np.vstack([x_cal, x_sh])
            y = np.concatenate([cal.correct, shifted.reference.correct])
            w = self._weights(len(cal), shifted.conditions)
            groups = np.concatenate([np.full(len(cal), ""), shifted.types])
        self.combiner = Combiner(cfg.combiner, cfg.regularisation, cfg.seed).fit(x, y, w)
        knn_col = FEATURES.index("knn_distance")
        self._far_distance = float(np.quantile(x[:, knn_col], cfg.far_quantile))
        self.model_error = cfg.default_model_error
        self.held_out_errors: dict[str, float] = {}
        if shifted is not None and cfg.estimate_model_error:
            self.model_error = self._held_out_error(x, y, w, groups, shifted.conditions)
        self._fitted = True
        return self

    def _weights(self, n_clean: int, conditions: np.ndarray) -> np.ndarray:
        """Clean rows share ``clean_share`` of the weight; each shift condition an equal part
        of the rest, so conditions with more rows do not dominate the fit."""
        cfg = self.config
        uniq, inverse, counts = np.unique(conditions, return_inverse=True, return_counts=True)
        w_shift = (1 - cfg.clean_share) / len(uniq) / counts[inverse]
        w_clean = np.full(n_clean, cfg.clean_share / n_clean)
        w = np.concatenate([w_clean, w_shift])
        return w * len(w) / w.sum()  # mean weight 1 keeps the regulariser's scale

    def _held_out_error(self, x, y, w, groups, conditions) -> float:
        """RMS error of the window estimate on each shift condition, the combiner having been
        fitted without that condition's corruption type (leave one type out)."""
        cfg = self.config
        n_clean = int((groups == "").sum())
        errors = []
        for t in np.unique(groups[groups != ""]):
            train = groups != t
            comb = Combiner(cfg.combiner, cfg.regularisation, cfg.seed).fit(x[train], y[train], w[train])
            test = np.flatnonzero(groups == t)
            p = comb.predict(x[test])
            conds = conditions[test - n_clean]
            for c in np.unique(conds):
                sel = conds == c
                err = float(p[sel].mean() - y[test][sel].mean())
                self.held_out_errors[c] = err
                errors.append(err)
        return float(math.sqrt(np.mean(np.square(errors))))

    # -- scoring ------------------------------------------------------------------------------
    def features(self, batch: OracleBatch) -> np.ndarray:
        return signal_features(batch, self.knn, self.mahalanobis)

    def score(self, probs: np.ndarray, embeddings: np.ndarray, shadow_probs: np.ndarray) -> PerInputScores:
        """Per-input scores for one batch of the model's (and shadow's) outputs."""
        if not self._fitted:
            raise NotFittedError("OnlineAssessor: call fit(reference) before score")
        batch = OracleBatch(probs, embeddings, shadow_probs)
        x = self.features(batch)
        knn = x[:, FEATURES.index("knn_distance")]
        cal = self._cal_distances
        below = np.searchsorted(cal, knn, side="left")
        ties = np.searchsorted(cal, knn, side="right") - below
        drift = (below + 0.5 * ties + 0.5) / (len(cal) + 1)
        components = {name: oracle.score(batch) for name, oracle in self.components.items()}
        components["knn_distance"] = knn
        components["mahalanobis"] = np.expm1(x[:, FEATURES.index("log_mahalanobis")])
        return PerInputScores(
            p_correct=self.combiner.predict(x),
            drift=drift,
            far=knn > self._far_distance,
            components=components,
        )

    def window_config(self, **overrides) -> WindowConfig:
        """A WindowConfig whose model-error term is this assessor's measured one."""
        if not self._fitted:
            raise NotFittedError("OnlineAssessor: call fit(reference) first")
        return replace(WindowConfig(model_error=self.model_error), **overrides)
