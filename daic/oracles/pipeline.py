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

The shifted reference is used in ``cv_folds`` folds grouped by corruption type, so every
number the assessor learns about its own reliability comes from shifts it was not fitted on:

1. the combiner is cross-fitted: each row's *out-of-fold* P(correct) comes from a combiner that
   never saw that row's corruption type;
2. synthetic windows (mixtures of conditions, clean rows and resampled class proportions,
   :func:`daic.oracles.window_model.synthesize_windows`) are built from those out-of-fold
   probabilities, and the window model is itself cross-fitted on them, giving a held-out error
   for every synthetic window;
3. the trust region is the largest window drift score up to which the ``trusted_quantile`` of
   those held-out errors stays within ``trusted_error``; the estimator's model-error term is
   their RMS inside the region.

``score(probs, embeddings, shadow_probs)`` returns :class:`PerInputScores`: the combined
P(correct), the drift percentile, the "far" flag, and each oracle's own output.
``new_estimator()`` / ``estimator_from_state()`` give an :class:`OnlineEstimator` wired to this
assessor's window model and calibrated trust region.
"""
from __future__ import annotations

import bisect
import copy
import math
from dataclasses import dataclass, replace
from statistics import NormalDist

import numpy as np

from daic.oracles.band_model import BandModel, band_features
from daic.oracles.base import NotFittedError
from daic.oracles.change import ChangeConfig, Cusum, CusumDetector
from daic.oracles.batch import OracleBatch
from daic.oracles.combiner import FEATURES, Combiner, signal_features
from daic.oracles.confidence import ConfidenceOracle
from daic.oracles.disagreement import ShadowDisagreementOracle
from daic.oracles.distance import KNNDistanceOracle, MahalanobisOracle
from daic.oracles.error_model import ErrorModel
from daic.oracles.reference import OracleReference
from daic.oracles.scores import PerInputScores
from daic.oracles.window import OnlineEstimator, WindowConfig
from daic.oracles.window_model import WindowColumns, WindowModel, WindowSynthesis, synthesize_windows


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
    head_weight (C, D) and head_bias (C,), both or neither: the model's last (linear) layer on
    the embedding, so the assessor can recompute the logits and use minus the free energy as a
    signal (``daic.oracles.combiner.ENERGY_FEATURE``).
    self_agreement (N,) and reference_self_agreement (one per row of the *clean* oracle
    reference), both or neither: the model's agreement with itself under test-time transforms
    (:mod:`daic.oracles.self_agreement`) on these rows and on the clean reference's rows. With
    them the assessor uses that signal, and then needs it for every input it scores.
    self_agreement_views: the views it was computed over, as text (``"stretch:0"``,
    :func:`daic.oracles.self_agreement.views_text`; None: not recorded, as in references built
    before the views were served): the sidecar scores a response's self-agreement only when the
    response names the same views.
    """

    reference: OracleReference
    conditions: np.ndarray
    self_agreement: np.ndarray | None = None
    reference_self_agreement: np.ndarray | None = None
    head_weight: np.ndarray | None = None
    head_bias: np.ndarray | None = None
    self_agreement_views: str | None = None

    def __post_init__(self) -> None:
        if (self.head_weight is None) != (self.head_bias is None):
            raise ValueError("give both head_weight and head_bias, or neither")
        if self.head_weight is not None:
            w = np.asarray(self.head_weight, dtype=np.float64)
            b = np.asarray(self.head_bias, dtype=np.float64)
            c, d = self.reference.n_classes, self.reference.embeddings.shape[1]
            if w.shape != (c, d) or b.shape != (c,):
                raise ValueError(f"head_weight must have shape ({c}, {d}) and head_bias ({c},), got {w.shape}, {b.shape}")
            if not (np.all(np.isfinite(w)) and np.all(np.isfinite(b))):
                raise ValueError("head_weight and head_bias must be finite")
            object.__setattr__(self, "head_weight", w)
            object.__setattr__(self, "head_bias", b)
        cond = np.asarray(self.conditions).astype(str)
        if cond.shape != (len(self.reference),):
            raise ValueError(f"conditions must have shape ({len(self.reference)},), got {cond.shape}")
        object.__setattr__(self, "conditions", cond)
        if (self.self_agreement is None) != (self.reference_self_agreement is None):
            raise ValueError("give both self_agreement and reference_self_agreement, or neither")
        for name, n in (("self_agreement", len(self.reference)), ("reference_self_agreement", None)):
            value = getattr(self, name)
            if value is None:
                continue
            a = np.asarray(value, dtype=np.float64)
            if a.ndim != 1 or (n is not None and a.shape != (n,)):
                raise ValueError(f"{name} must have shape ({n if n is not None else 'N'},), got {a.shape}")
            if not np.all(np.isfinite(a)) or np.any((a < 0) | (a > 1)):
                raise ValueError(f"{name} must lie in [0, 1]")
            object.__setattr__(self, name, a)
        if self.self_agreement_views is not None:
            if self.self_agreement is None:
                raise ValueError("self_agreement_views names the views of a self-agreement the reference does not carry")
            if not isinstance(self.self_agreement_views, str) or not self.self_agreement_views:
                raise ValueError(f"self_agreement_views must be a non-empty text, got {self.self_agreement_views!r}")

    @property
    def has_self_agreement(self) -> bool:
        return self.self_agreement is not None

    @property
    def types(self) -> np.ndarray:
        """Each row's shift type: the part of its condition before "/" (``"a+b"`` for a
        composition of corruptions a and b)."""
        return np.array([c.split("/", 1)[0] for c in self.conditions])

    @property
    def components(self) -> list[tuple[str, ...]]:
        """Each row's base corruption types (one, or several for a composition)."""
        return [tuple(t.split("+")) for t in self.types]

    def without_types(self, types) -> "ShiftedReference":
        """Drop every row that involves one of ``types``, alone or in a composition."""
        excluded = set(types)
        keep = np.array([not excluded.intersection(c) for c in self.components], dtype=bool)
        return ShiftedReference(self.reference.subset(keep), self.conditions[keep],
                                None if self.self_agreement is None else self.self_agreement[keep],
                                self.reference_self_agreement, self.head_weight, self.head_bias,
                                self.self_agreement_views)

    def with_self_agreement(self, self_agreement, reference_self_agreement,
                            views: str | None = None) -> "ShiftedReference":
        """A copy carrying the self-agreement of its rows and of the clean reference's rows, computed
        over ``views`` (text, :func:`daic.oracles.self_agreement.views_text`)."""
        return ShiftedReference(self.reference, self.conditions, self_agreement, reference_self_agreement,
                                self.head_weight, self.head_bias, views)

    def with_head(self, weight, bias) -> "ShiftedReference":
        """A copy carrying the model's linear head (logits = embeddings @ weight.T + bias)."""
        return ShiftedReference(self.reference, self.conditions, self.self_agreement,
                                self.reference_self_agreement, weight, bias, self.self_agreement_views)

    def to_arrays(self) -> dict[str, np.ndarray]:
        arrays = {**self.reference.to_arrays(), "conditions": self.conditions}
        if self.self_agreement is not None:
            arrays["self_agreement"] = self.self_agreement
            arrays["reference_self_agreement"] = self.reference_self_agreement
        if self.self_agreement_views is not None:
            arrays["self_agreement_views"] = np.array(self.self_agreement_views)
        if self.head_weight is not None:
            arrays["head_weight"] = self.head_weight
            arrays["head_bias"] = self.head_bias
        return arrays

    @classmethod
    def from_arrays(cls, arrays) -> "ShiftedReference":
        if "conditions" not in arrays:
            raise ValueError("shifted reference is missing array: conditions")
        extra = ("self_agreement", "reference_self_agreement", "head_weight", "head_bias")
        base = {k: v for k, v in arrays.items() if k not in extra and k != "self_agreement_views"}
        opt = {k: (np.asarray(arrays[k]) if k in arrays else None) for k in extra}
        views = np.asarray(arrays["self_agreement_views"]) if "self_agreement_views" in arrays else None
        if views is not None and (views.ndim != 0 or views.dtype.kind != "U"):
            raise ValueError(f"shifted reference's self_agreement_views must be one text, got {views.dtype} {views.shape}")
        return cls(OracleReference.from_arrays(base), np.asarray(arrays["conditions"]), **opt,
                   self_agreement_views=None if views is None else str(views.item()))


@dataclass(frozen=True)
class AssessorConfig:
    """k: neighbours for the kNN distance. combiner / regularisation: see Combiner.
    clean_share: share of the combiner's total sample weight given to clean calibration rows
    (the rest is spread evenly over the shift conditions). far_quantile: an input is "far" when
    its kNN distance exceeds this quantile of the distances the combiner was fitted on.
    cv_folds: folds over corruption types (see the module docstring). window_model: fit the
    window-level model. trusted_error / trusted_quantile: the trust region keeps this quantile
    of held-out window errors within this many accuracy points (as a fraction).
    default_model_error / default_max_drift_score: used without a shifted reference.
    replicates: independent cross-fits (fold assignment, synthetic windows) whose window models
    are averaged (see ``_cross_fit``). Eight (issue 17, session 14; four before): on the online
    benchmark's two model pairs the held-out-type error of the average of four was 3.01 and 2.94
    points (subsets of four of eight: 2.72-3.10), of all eight 2.89 and 2.90. Averaging lowers
    the expected error on shifts nobody simulated.
    calibration_replicates: how many of the replicates (the first ones) are also cross-fitted at
    the window level, giving the held-out window errors the band model, the trust region and the
    model-error term are fitted on. The rest only add their window model to the average (the
    online benchmark's ten assessors: 182 s against 120 s with four replicates; all eight
    calibrated cost 2.3 times four): four calibrated replicates measure the error of one
    replicate's window model as well as eight, and the average of eight errs less than that
    (conservative). All replicates are calibrated when there are no more than this.
    label_share: share of the combiner's sample weight given to labelled operational inputs when
    it is refitted with them (``refit_with_labels``); the reference rows keep the rest.
    change: how the sequential change detector is calibrated on the clean calibration rows'
    expected errors (:mod:`daic.oracles.change`); None: no detector.
    drift_tolerance: the window drift test's relevance margin (:func:`daic.oracles.drift.drift_test`).
    trust_from_error_model: a window is trusted where the error model (drift score x estimate)
    expects the ``trusted_quantile`` of errors within ``trusted_error`` (for Gaussian errors: an
    RMS error of at most trusted_error / z), instead of below one drift score for all estimates.
    Off: measured in development it trusted fewer windows (27 of 116 held-out scenarios against
    36), because the error model, calibrated on synthetic windows (95 % of them inside the band),
    overstates the error on the benchmark's scenarios (99 % inside).
    error_net_of_sampling: the error model is fitted on the synthetic windows' squared errors
    minus their own sampling variance (the band adds each operational window's sampling
    variance itself; counting the synthetic windows' as model error counted it twice).
    self_agreement: use the model's agreement with itself under test-time transforms as a
    combiner signal when the shifted reference carries it (:mod:`daic.oracles.self_agreement`);
    the assessor then needs it for every scored input.
    energy: use minus the free energy (logsumexp of the logits recomputed from the embedding with
    the model's linear head) as a combiner signal when the shifted reference carries the head.
    band_model: size the band and decide trust with a conformal model of the window estimate's
    error on the window's features (:mod:`daic.oracles.band_model`), fitted on the held-out
    synthetic windows and cross-fitted over their groups of corruption types; ``level`` is the
    band's coverage, the trust rule keeps the ``trusted_quantile`` of errors within
    ``trusted_error``. band_method: "scale" (normalised conformal: a regression of the model-error
    scale, the window's own sampling SD added exactly) or "cqr" (conformalized quantile
    regression; measured on the whole benchmark: fewer windows trusted than the drift rule).
    See docs/benchmarks/online.md, issue 17."""

    k: int = 10
    combiner: str = "logistic"
    regularisation: float = 1.0
    clean_share: float = 0.3
    far_quantile: float = 0.99
    cv_folds: int = 5
    window_model: bool = True
    synthesis: WindowSynthesis = WindowSynthesis()
    trusted_error: float = 0.05
    trusted_quantile: float = 0.9
    default_model_error: float = 0.05
    default_max_drift_score: float = 1.0
    label_share: float = 0.8
    replicates: int = 8
    calibration_replicates: int = 4
    change: ChangeConfig | None = ChangeConfig()
    drift_tolerance: float = 0.10
    trust_from_error_model: bool = False
    error_net_of_sampling: bool = True
    self_agreement: bool = True
    energy: bool = True
    band_model: bool = True
    band_method: str = "scale"
    level: float = 0.95
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or int(self.k) != self.k or self.k < 1:
            raise ValueError(f"k must be a positive integer, got {self.k!r}")
        if not 0.0 < self.clean_share <= 1.0:
            raise ValueError(f"clean_share must lie in (0, 1], got {self.clean_share!r}")
        if not 0.0 < self.far_quantile < 1.0:
            raise ValueError(f"far_quantile must lie in (0, 1), got {self.far_quantile!r}")
        if isinstance(self.cv_folds, bool) or int(self.cv_folds) != self.cv_folds or self.cv_folds < 2:
            raise ValueError(f"cv_folds must be an integer >= 2, got {self.cv_folds!r}")
        if not 0.0 < self.trusted_error <= 1.0:
            raise ValueError(f"trusted_error must lie in (0, 1], got {self.trusted_error!r}")
        if not 0.0 < self.trusted_quantile <= 1.0:
            raise ValueError(f"trusted_quantile must lie in (0, 1], got {self.trusted_quantile!r}")
        if not self.default_model_error >= 0.0:
            raise ValueError(f"default_model_error must be >= 0, got {self.default_model_error!r}")
        if isinstance(self.replicates, bool) or int(self.replicates) != self.replicates or self.replicates < 1:
            raise ValueError(f"replicates must be a positive integer, got {self.replicates!r}")
        cal = self.calibration_replicates
        if isinstance(cal, bool) or int(cal) != cal or cal < 1:
            raise ValueError(f"calibration_replicates must be a positive integer, got {cal!r}")
        if not 0.0 < self.label_share < 1.0:
            raise ValueError(f"label_share must lie in (0, 1), got {self.label_share!r}")
        if not 0.0 <= self.drift_tolerance < 0.5:
            raise ValueError(f"drift_tolerance must lie in [0, 0.5), got {self.drift_tolerance!r}")
        if self.change is not None and not isinstance(self.change, ChangeConfig):
            raise ValueError(f"change must be a ChangeConfig or None, got {type(self.change).__name__}")
        if not 0.0 <= self.default_max_drift_score <= 1.0:
            raise ValueError(f"default_max_drift_score must lie in [0, 1], got {self.default_max_drift_score!r}")
        from daic.oracles.band_model import METHODS as BAND_METHODS

        if self.band_method not in BAND_METHODS:
            raise ValueError(f"band_method must be one of {', '.join(BAND_METHODS)}, got {self.band_method!r}")


def _linear_quantile(ascending: list[float], q: float) -> float:
    """``np.quantile(values, q)`` (method "linear") of values already sorted ascending: the
    same virtual index (n - 1) q and the same interpolation (numpy's ``_lerp``)."""
    h = (len(ascending) - 1) * q
    lo = math.floor(h)
    a, b = ascending[lo], ascending[min(lo + 1, len(ascending) - 1)]
    t = h - lo
    return b - (b - a) * (1 - t) if t >= 0.5 else a + (b - a) * t


def _trust_threshold(drift: np.ndarray, errors: np.ndarray, tolerance: float, quantile: float) -> float:
    """Largest drift score t such that the ``quantile`` of |errors| over windows with drift <= t
    stays within ``tolerance`` (1.0 when all windows do; the smallest drift seen when none do).

    The prefixes' errors are kept sorted as they grow (O(n log n) searches instead of a sort per
    prefix, which took seconds for the 16,000 windows of eight replicates); each prefix's
    quantile is numpy's default (linear) one, computed the same way."""
    order = np.argsort(drift, kind="stable")
    d, e = drift[order], np.abs(errors[order])
    best = None
    prefix: list[float] = []
    for i in range(len(d)):
        bisect.insort(prefix, float(e[i]))
        if i + 1 < len(d) and d[i + 1] == d[i]:
            continue  # decide on whole groups of equal drift
        if _linear_quantile(prefix, quantile) <= tolerance:
            best = i
    if best is None:
        return float(d[0])
    if best == len(d) - 1:
        return 1.0
    return float(d[best])


class OnlineAssessor:
    """Fits the pseudo-oracles, the combiner and the window model; scores batches (see the
    module docstring)."""

    def __init__(self, config: AssessorConfig | None = None) -> None:
        self.config = config or AssessorConfig()
        self._fitted = False
        self.window_model: WindowModel | None = None
        self.labels_used = 0  # operational labels the combiner was refitted with (refit_with_labels)

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
        self.uses_self_agreement = bool(cfg.self_agreement) and shifted is not None and shifted.has_self_agreement
        if self.uses_self_agreement and len(shifted.reference_self_agreement) != len(reference):
            raise ValueError(f"the shifted reference's reference_self_agreement has {len(shifted.reference_self_agreement)} "
                             f"rows, the reference {len(reference)}")
        # The views its self-agreement was computed over (None: not recorded): what a scored
        # input's self-agreement must have been computed over too (daic.sidecar checks the tag).
        self.self_agreement_views = shifted.self_agreement_views if self.uses_self_agreement else None
        sa_cal = shifted.reference_self_agreement[cal_rows] if self.uses_self_agreement else None
        self.head = ((shifted.head_weight, shifted.head_bias)
                     if getattr(cfg, "energy", False) and shifted is not None and shifted.head_weight is not None
                     else None)
        self.knn = KNNDistanceOracle(cfg.k).fit(bank)
        self.mahalanobis = MahalanobisOracle().fit(bank)
        # Drift percentiles against held-out (calibration) distances: exactly exchangeable.
        cal_batch = OracleBatch(cal.probs, cal.embeddings, cal.shadow_probs, sa_cal)
        self._cal_distances = np.sort(self.knn.signal(cal_batch))
        self.components = {
            "max_softmax": ConfidenceOracle("max_softmax").fit(reference),
            "margin": ConfidenceOracle("margin").fit(reference),
            "entropy": ConfidenceOracle("entropy").fit(reference),
            "shadow": ShadowDisagreementOracle().fit(reference),
        }
        n_classes = reference.n_classes
        self._reference_predicted = np.bincount(reference.predictions, minlength=n_classes) / len(reference)
        self._reference_shadow_predicted = np.bincount(reference.shadow_probs.argmax(1), minlength=n_classes) / len(reference)
        x_cal = self.features(cal_batch)
        self.model_error = cfg.default_model_error
        self.max_drift_score = cfg.default_max_drift_score
        self.held_out_errors: dict[str, float] = {}
        self.window_errors: dict[str, np.ndarray] = {}
        self.window_model = None
        self.band_model: BandModel | None = None
        self.cv_skipped: str | None = None  # why no held-out measurement was made, if so
        knn_col = FEATURES.index("knn_distance")
        if shifted is None:
            self.combiner = Combiner(cfg.combiner, cfg.regularisation, cfg.seed).fit(x_cal, cal.correct)
            self._combiner_data = (x_cal, cal.correct, np.ones(len(cal)))
            self._far_distance = float(np.quantile(x_cal[:, knn_col], cfg.far_quantile))
        else:
            self._fit_with_shifts(cal, x_cal, shifted)
        # The sequential change detector: calibrated on the clean calibration rows' expected
        # errors, which the distance oracles never indexed (like new clean inputs). The combiner
        # was fitted on those rows, so their mean expected error can be optimistic (a weak model:
        # 0.12 against a reference error rate of 0.165 in the serving tests); the clean mean is
        # at least the reference's error rate, so clean traffic at the reference accuracy does
        # not alarm.
        self.change: Cusum | None = None
        if cfg.change is not None:
            p_cal = self.combiner.predict(x_cal)
            self.change = CusumDetector.calibrate(1.0 - p_cal, cfg.change, at_least=1.0 - reference.accuracy)
        self._fitted = True
        return self

    def _fit_with_shifts(self, cal: OracleReference, x_cal: np.ndarray, shifted: ShiftedReference) -> None:
        cfg = self.config
        sref = shifted.reference
        if sref.n_classes != cal.n_classes:
            raise ValueError(f"shifted reference has {sref.n_classes} classes, the reference {cal.n_classes}")
        sa = shifted.self_agreement if self.uses_self_agreement else None
        x = np.vstack([x_cal, self.features(OracleBatch(sref.probs, sref.embeddings, sref.shadow_probs, sa))])
        y = np.concatenate([cal.correct, sref.correct])
        w = self._weights(len(cal), shifted.conditions)
        self.combiner = Combiner(cfg.combiner, cfg.regularisation, cfg.seed).fit(x, y, w)
        self._combiner_data = (x, y, w)
        self._far_distance = float(np.quantile(x[:, FEATURES.index("knn_distance")], cfg.far_quantile))

        if len({t for c in shifted.components for t in c}) < 2:
            self.cv_skipped = "fewer than 2 corruption types in the shifted reference"
            return
        try:
            self._cross_fit(cal, x, y, w, shifted)
        except ValueError as exc:  # a fold without errors (tiny references in tests)
            self.cv_skipped = f"cross-fitting impossible: {exc}"
            self.window_model = None
            self.band_model = None
            self.held_out_errors = {}

    def _cross_fit(self, cal: OracleReference, x: np.ndarray, y: np.ndarray, w: np.ndarray,
                   shifted: ShiftedReference) -> None:
        """Steps 1-3 of the module docstring, ``config.replicates`` times over.

        Which types share a fold and which windows are drawn are chance choices, and the window
        model's error on unseen shifts depends on them as much as on the method (measured: the
        held-out error of single fits ranged 3.7-4.5 points over four seeds). Each replicate
        redraws them; the window model is the average of the replicates' models (bagging,
        Breiman 1996). The trust region and model error come from the replicates' own held-out
        errors pooled, which overstates the average's error: conservative. Only the first
        ``calibration_replicates`` are cross-fitted at the window level; the others add their
        window model to the average.
        """
        cfg = self.config
        held, feats, accs, pred_oof, models, svars, bands = [], [], [], [], [], [], []
        for r in range(cfg.replicates):
            calibrated = r < cfg.calibration_replicates
            h, f, a, p, m, sv, wf = self._replicate(cal, x, y, w, shifted, cfg.seed + r, calibrate=calibrated)
            held.append(h)
            models.append(m)
            if not calibrated:  # its window model joins the average; no held-out window errors
                continue
            if cfg.band_model and m is not None:
                bands.append(BandModel(cfg.level, min(cfg.trusted_quantile, 0.999), cfg.seed + r,
                                       getattr(cfg, "band_method", "cqr")).fit(
                    band_features(f, p, np.sqrt(sv)), np.abs(p - a), wf))
            svars.append(sv)
            feats.append(f)
            accs.append(a)
            pred_oof.append(p)
        self.held_out_errors = {c: float(np.mean([h[c] for h in held])) for c in held[0]}
        feats, accs, pred_oof = np.vstack(feats), np.concatenate(accs), np.concatenate(pred_oof)
        if cfg.window_model:
            self.window_model = WindowModel.average(models)
        self.band_model = BandModel.average(bands) if bands else None
        errors = pred_oof - accs
        drift = feats[:, 1]
        self.max_drift_score = _trust_threshold(drift, errors, cfg.trusted_error, cfg.trusted_quantile)
        inside = drift <= self.max_drift_score
        self.model_error = float(math.sqrt(np.mean(errors[inside] ** 2))) if inside.any() else cfg.default_model_error
        self.window_errors = {"drift": drift, "error": errors, "accuracy": accs,
                              "sampling_var": np.concatenate(svars)}

    def _replicate(self, cal: OracleReference, x: np.ndarray, y: np.ndarray, w: np.ndarray,
                   shifted: ShiftedReference, seed: int, calibrate: bool = True):
        """One cross-fit with its own fold assignment and synthetic windows: (held-out error per
        condition, window features, window accuracies, held-out window estimates, window model
        fitted on all windows or None, the windows' sampling variances, their folds).
        ``calibrate=False``: the window model is not cross-fitted, and the held-out window
        estimates are None."""
        cfg = self.config
        sref = shifted.reference
        # Folds over base corruption types; clean rows spread over the folds at random. A
        # composition belongs to the fold of its first type and is left out of the fits of
        # every fold one of its types is in.
        components = shifted.components
        uniq = np.unique([t for c in components for t in c])
        n_folds = min(cfg.cv_folds, len(uniq))
        rng = np.random.default_rng(seed)
        type_fold = {t: i % n_folds for i, t in enumerate(rng.permutation(uniq))}
        clean_fold = rng.integers(0, n_folds, size=len(cal))
        fold = np.concatenate([clean_fold, np.array([type_fold[c[0]] for c in components], dtype=np.int64)])
        touches = np.zeros((n_folds, len(y)), dtype=bool)
        touches[clean_fold, np.arange(len(cal))] = True
        for i, c in enumerate(components):
            for t in c:
                touches[type_fold[t], len(cal) + i] = True
        p_oof = np.empty(len(y))
        for k in range(n_folds):
            test, train = fold == k, ~touches[k]
            comb = Combiner(cfg.combiner, cfg.regularisation, seed).fit(x[train], y[train], w[train])
            p_oof[test] = comb.predict(x[test])
        n_clean = len(cal)
        conds = shifted.conditions
        held = {}
        for c in np.unique(conds):
            sel = np.flatnonzero(conds == c) + n_clean
            held[str(c)] = float(p_oof[sel].mean() - y[sel].mean())

        # Synthetic windows from out-of-fold probabilities, fold by fold.
        probs = np.vstack([cal.probs, sref.probs])
        shadow = np.vstack([cal.shadow_probs, sref.shadow_probs])
        labels = np.concatenate([cal.labels, sref.labels])
        pred, spred = probs.argmax(1), shadow.argmax(1)
        cols = WindowColumns(
            p_correct=p_oof, drift=self._drift(x[:, FEATURES.index("knn_distance")]),
            far=(x[:, FEATURES.index("knn_distance")] > self._far_distance).astype(np.float64),
            agreement=(pred == spred).astype(np.float64), confidence=probs.max(1),
            predicted=pred, shadow_predicted=spred,
        )
        all_conds = np.concatenate([np.full(n_clean, ""), conds])
        feats, accs, win_fold, svar = [], [], [], []
        per_fold = max(cfg.synthesis.n_windows // n_folds, 1)
        for k in range(n_folds):
            rows = np.flatnonzero((fold == k) & (all_conds == ""))
            clean_pool = (cols.take(rows), labels[rows], y[rows])
            cond_pools = {}
            for c in np.unique(all_conds[(fold == k) & (all_conds != "")]):
                r = np.flatnonzero(all_conds == c)
                cond_pools[str(c)] = (cols.take(r), labels[r], y[r])
            f, a, _ = synthesize_windows(clean_pool, cond_pools, per_fold, cfg.synthesis,
                                         self._reference_predicted, self._reference_shadow_predicted, rng,
                                         sampling_variance=svar)
            feats.append(f)
            accs.append(a)
            win_fold.append(np.full(len(a), k))
        feats, accs, win_fold = np.vstack(feats), np.concatenate(accs), np.concatenate(win_fold)
        model = None
        if cfg.window_model:
            pred_oof = np.empty(len(accs)) if calibrate else None
            for k in range(n_folds if calibrate else 0):
                test = win_fold == k
                wm = WindowModel(self._reference_predicted, self._reference_shadow_predicted, seed)
                pred_oof[test] = wm.fit(feats[~test], accs[~test]).predict_features(feats[test])
            model = WindowModel(self._reference_predicted, self._reference_shadow_predicted, seed).fit(feats, accs)
        else:
            pred_oof = feats[:, 0]
        return held, feats, accs, pred_oof, model, np.asarray(svar), win_fold

    def _weights(self, n_clean: int, conditions: np.ndarray) -> np.ndarray:
        """Clean rows share ``clean_share`` of the weight; each shift condition an equal part
        of the rest, so conditions with more rows do not dominate the fit."""
        cfg = self.config
        uniq, inverse, counts = np.unique(conditions, return_inverse=True, return_counts=True)
        w_shift = (1 - cfg.clean_share) / len(uniq) / counts[inverse]
        w_clean = np.full(n_clean, cfg.clean_share / n_clean)
        w = np.concatenate([w_clean, w_shift])
        return w * len(w) / w.sum()  # mean weight 1 keeps the regulariser's scale

    # -- offline corrects online ------------------------------------------------------------------
    def refit_with_labels(self, probs: np.ndarray, embeddings: np.ndarray, shadow_probs: np.ndarray,
                          labels: np.ndarray, self_agreement: np.ndarray | None = None) -> "OnlineAssessor":
        """A copy whose combiner is refitted on its reference rows plus labelled operational inputs.

        A cycle's labels show how this stream's errors look; a few hundred of them are too few
        (and hold too few errors) to fit the combiner alone, and too noisy to estimate accuracy
        alone (their mean is off by ~2.4 points with 200 labels at 70 % accuracy). Refitting the
        combiner on the reference *and* the labelled inputs, the latter holding
        ``config.label_share`` of the total sample weight, keeps the reference as a prior while
        letting the stream move every coefficient; the window's estimate is then the mean of the
        refitted P(correct) over the unlabelled inputs (a model-based estimator: it uses their
        signals, not only the labels' mean). The window-level model is dropped: it corrects the
        reference-fitted combiner's bias under shift, which the refit has already removed on
        this stream. The copy's model error is the labels' residual standard error, as for
        :func:`daic.oracles.recalibration.fit_recalibration`.
        """
        if not self._fitted:
            raise NotFittedError("OnlineAssessor: call fit(reference) before refit_with_labels")
        batch = self._batch(probs, embeddings, shadow_probs, self_agreement)
        labels = np.asarray(labels)
        n = len(batch.probs)
        if labels.shape != (n,) or (n and not np.issubdtype(labels.dtype, np.integer)):
            raise ValueError(f"labels must be integers of shape ({n},), got {labels.dtype} {labels.shape}")
        if n == 0:
            raise ValueError("refit_with_labels needs at least one labelled input")
        n_classes = len(self._reference_predicted)
        if labels.min() < 0 or labels.max() >= n_classes:
            raise ValueError(f"labels must lie in [0, {n_classes}), got range [{labels.min()}, {labels.max()}]")
        cfg = self.config
        x_new = self.features(batch)
        y_new = batch.probs.argmax(1) == labels
        x, y, w = self._combiner_data
        w_new = np.full(n, cfg.label_share * w.sum() / (1.0 - cfg.label_share) / n)
        weights = np.concatenate([w, w_new])
        weights = weights * len(weights) / weights.sum()
        combiner = Combiner(cfg.combiner, cfg.regularisation, cfg.seed).fit(
            np.vstack([x, x_new]), np.concatenate([y, y_new]), weights)
        refit = copy.copy(self)
        refit.combiner = combiner
        refit.window_model = None
        refit.band_model = None
        p = combiner.predict(x_new)
        refit.model_error = float(np.sqrt(np.mean((y_new - p) ** 2) / n))
        refit.labels_used = self.labels_used + n
        return refit

    # -- scoring ------------------------------------------------------------------------------
    def features(self, batch: OracleBatch) -> np.ndarray:
        return signal_features(batch, self.knn, self.mahalanobis,
                               self_agreement=getattr(self, "uses_self_agreement", False),
                               head=getattr(self, "head", None))

    def _batch(self, probs, embeddings, shadow_probs, self_agreement) -> OracleBatch:
        if getattr(self, "uses_self_agreement", False):
            if self_agreement is None:
                raise ValueError("this assessor was fitted with self-agreement (the shifted reference carries it): "
                                 "pass self_agreement, the model's agreement with itself under test-time transforms "
                                 "(daic.oracles.self_agreement)")
        else:
            self_agreement = None  # not a signal of this assessor
        return OracleBatch(probs, embeddings, shadow_probs, self_agreement)

    def _drift(self, knn: np.ndarray) -> np.ndarray:
        cal = self._cal_distances
        below = np.searchsorted(cal, knn, side="left")
        ties = np.searchsorted(cal, knn, side="right") - below
        return (below + 0.5 * ties + 0.5) / (len(cal) + 1)

    @property
    def n_classes(self) -> int:
        """Classes of the reference it was fitted on: the width of the probabilities it scores."""
        if not self._fitted:
            raise NotFittedError("OnlineAssessor: call fit(reference) first")
        return len(self._reference_predicted)

    @property
    def embedding_dim(self) -> int:
        """Embedding width of the reference it was fitted on."""
        if not self._fitted:
            raise NotFittedError("OnlineAssessor: call fit(reference) first")
        return int(self.mahalanobis.embedding_dim)

    def score(self, probs: np.ndarray, embeddings: np.ndarray, shadow_probs: np.ndarray,
              self_agreement: np.ndarray | None = None) -> PerInputScores:
        """Per-input scores for one batch of the model's (and shadow's) outputs; ``self_agreement``
        (N,) is required when the assessor uses it (``uses_self_agreement``), ignored otherwise."""
        if not self._fitted:
            raise NotFittedError("OnlineAssessor: call fit(reference) before score")
        batch = self._batch(probs, embeddings, shadow_probs, self_agreement)
        if batch.probs.shape[1] != len(self._reference_predicted):
            raise ValueError(f"probs have {batch.probs.shape[1]} classes, the reference "
                             f"{len(self._reference_predicted)}")
        x = self.features(batch)
        knn = x[:, FEATURES.index("knn_distance")]
        components = {name: oracle.score(batch) for name, oracle in self.components.items()}
        components["knn_distance"] = knn
        components["mahalanobis"] = np.expm1(x[:, FEATURES.index("log_mahalanobis")])
        if batch.self_agreement is not None:
            components["self_agreement"] = batch.self_agreement
        if getattr(self, "head", None) is not None:
            components["neg_energy"] = x[:, len(FEATURES)]
        return PerInputScores(
            p_correct=self.combiner.predict(x),
            drift=self._drift(knn),
            far=knn > self._far_distance,
            components=components,
            predicted=batch.probs.argmax(1),
            shadow_predicted=batch.shadow_probs.argmax(1),
            confidence=batch.probs.max(1),
        )

    # -- estimators ---------------------------------------------------------------------------
    @property
    def error_model(self) -> ErrorModel | None:
        """The window estimate's error scale by (drift score, estimate), fitted on the held-out
        errors of the synthetic windows (None without them); computed once per fit."""
        errors = self.window_errors
        if not errors:
            return None
        cached = getattr(self, "_error_model", None)
        if cached is None or cached[0] is not errors:
            net = getattr(self.config, "error_net_of_sampling", False) and "sampling_var" in errors
            model = ErrorModel.fit(errors["drift"], errors["accuracy"] + errors["error"], errors["error"],
                                   sampling_var=errors["sampling_var"] if net else None)
            self._error_model = (errors, model)
        return self._error_model[1]

    def window_config(self, **overrides) -> WindowConfig:
        """A WindowConfig with this assessor's measured model error, error model and trust region."""
        if not self._fitted:
            raise NotFittedError("OnlineAssessor: call fit(reference) first")
        cfg = self.config
        trusted_model_error = None
        if getattr(cfg, "trust_from_error_model", False) and self.error_model is not None:
            trusted_model_error = cfg.trusted_error / NormalDist().inv_cdf(0.5 + cfg.trusted_quantile / 2)
        return replace(WindowConfig(model_error=self.model_error, max_drift_score=self.max_drift_score,
                                    error_model=self.error_model, change=getattr(self, "change", None),
                                    drift_tolerance=cfg.drift_tolerance, level=getattr(cfg, "level", 0.95),
                                    trusted_error=cfg.trusted_error,
                                    trusted_model_error=trusted_model_error), **overrides)

    def new_estimator(self, **overrides) -> OnlineEstimator:
        """An empty estimator using this assessor's window model, band model, error and trust region."""
        return OnlineEstimator(self.window_config(**overrides), window_model=self.window_model,
                               band_model=getattr(self, "band_model", None))

    def estimator_from_state(self, state: dict) -> OnlineEstimator:
        """Resume a persisted estimator with this assessor's window model and band model."""
        return OnlineEstimator.from_state(state, window_model=self.window_model,
                                          band_model=getattr(self, "band_model", None))
