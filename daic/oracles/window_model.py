"""Window-level correction: from what a whole window looks like to its accuracy.

Per-input signals cannot see some failures. Under heavy noise or scribbles both the model and
its shadow collapse onto one class ("8") with high confidence: every input looks like a
confident, agreed prediction, yet most are wrong. The window as a whole does show it: the
predicted-class histogram is far from the reference's, and the inputs sit far from the
reference in latent space. Such window-level features are what regressions of accuracy on
distribution statistics use (Deng & Zheng, 2021, "Are labels always necessary for classifier
accuracy evaluation?"; the class-marginal term is the idea behind COT, Lu et al., 2023).

The model here predicts the *residual* of the per-input estimate (window accuracy minus mean
P(correct)) with gradient-boosted trees, fitted on synthetic windows: mixtures of synthetic
shift conditions of the val split (never test), clean val rows, and resampled class
proportions so that label shift (a skewed histogram on inputs that look normal) is not taken
for collapse. The per-input probabilities used to build those windows are out-of-fold (each
from a combiner that never saw that shift type), so the model learns to correct the combiner
on shifts it has not seen, which is the situation it meets in operation.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from daic.oracles.threads import single_thread

WINDOW_FEATURES: tuple[str, ...] = (
    "mean_p_correct",       # the per-input estimate itself
    "drift_score",          # mean latent-distance percentile
    "far_fraction",         # share beyond the fitted support
    "agreement",            # model/shadow top-1 agreement rate
    "mean_confidence",      # mean max-softmax
    "tv_predicted",         # total variation: predicted-class histogram vs the reference's
    "tv_shadow_predicted",  # the same for the shadow
    "tv_model_shadow",      # model vs shadow predicted-class histograms
    "max_class_share",      # share of the most predicted class
)
N_CLASSES_MAX = 1000


@dataclass(frozen=True)
class WindowColumns:
    """Per-input columns a window keeps for the window model (all shape (N,))."""

    p_correct: np.ndarray
    drift: np.ndarray
    far: np.ndarray
    agreement: np.ndarray
    confidence: np.ndarray
    predicted: np.ndarray
    shadow_predicted: np.ndarray

    def take(self, index) -> "WindowColumns":
        return WindowColumns(*(getattr(self, f)[index] for f in self.__dataclass_fields__))

    @staticmethod
    def concat(parts: list["WindowColumns"]) -> "WindowColumns":
        return WindowColumns(*(np.concatenate([getattr(p, f) for p in parts])
                               for f in WindowColumns.__dataclass_fields__))

    def __len__(self) -> int:
        return int(self.p_correct.size)


def _histogram(classes: np.ndarray, n_classes: int) -> np.ndarray:
    return np.bincount(classes.astype(np.int64), minlength=n_classes)[:n_classes] / max(len(classes), 1)


def window_features(cols: WindowColumns, reference_predicted: np.ndarray,
                    reference_shadow_predicted: np.ndarray) -> np.ndarray:
    """The WINDOW_FEATURES vector of one window. ``reference_*`` are the reference's
    predicted-class histograms (shares summing to 1)."""
    n_classes = len(reference_predicted)
    hp = _histogram(cols.predicted, n_classes)
    hs = _histogram(cols.shadow_predicted, n_classes)
    return np.array([
        cols.p_correct.mean(),
        cols.drift.mean(),
        cols.far.mean(),
        cols.agreement.mean(),
        cols.confidence.mean(),
        0.5 * np.abs(hp - reference_predicted).sum(),
        0.5 * np.abs(hs - reference_shadow_predicted).sum(),
        0.5 * np.abs(hp - hs).sum(),
        hp.max(),
    ])


@dataclass(frozen=True)
class WindowSynthesis:
    """How synthetic training windows are drawn. Sizes are uniform in [min_size, max_size];
    each window mixes 1..max_conditions shift conditions with a clean share that is 0 half of
    the time and uniform on [0, 1] otherwise; a ``label_shift_share`` of windows resample
    classes with Dirichlet(``dirichlet``) proportions."""

    n_windows: int = 2000
    min_size: int = 200
    max_size: int = 1000
    max_conditions: int = 3
    label_shift_share: float = 0.3
    dirichlet: float = 0.7

    def __post_init__(self) -> None:
        if self.n_windows < 10:
            raise ValueError(f"n_windows must be >= 10, got {self.n_windows}")
        if not 1 <= self.min_size <= self.max_size:
            raise ValueError(f"need 1 <= min_size <= max_size, got {self.min_size}, {self.max_size}")
        if self.max_conditions < 1:
            raise ValueError(f"max_conditions must be >= 1, got {self.max_conditions}")
        if not 0.0 <= self.label_shift_share <= 1.0:
            raise ValueError(f"label_shift_share must lie in [0, 1], got {self.label_shift_share}")
        if not self.dirichlet > 0:
            raise ValueError(f"dirichlet must be > 0, got {self.dirichlet}")


def synthesize_windows(
    clean: tuple[WindowColumns, np.ndarray, np.ndarray],
    conditions: dict[str, tuple[WindowColumns, np.ndarray, np.ndarray]],
    n_windows: int,
    synthesis: WindowSynthesis,
    reference_predicted: np.ndarray,
    reference_shadow_predicted: np.ndarray,
    rng: np.random.Generator,
    sampling_variance: list | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw windows; each pool is (columns, labels, correct). Returns (features (W, F),
    accuracy (W,), drift share of shifted inputs (W,)). When ``sampling_variance`` is a list,
    each window's sum p(1 - p) / n^2 over its P(correct) is appended to it: the part of the
    window's error that comes from its finite size, not from the estimator."""
    names = sorted(conditions)
    if not names:
        raise ValueError("synthesize_windows needs at least one shift condition")
    n_classes = len(reference_predicted)
    feats, accs, shifted = [], [], []
    for _ in range(n_windows):
        size = int(rng.integers(synthesis.min_size, synthesis.max_size + 1))
        k = int(rng.integers(1, min(synthesis.max_conditions, len(names)) + 1))
        chosen = list(rng.choice(names, size=k, replace=False))
        clean_share = 0.0 if rng.uniform() < 0.5 else float(rng.uniform())
        if rng.uniform() < synthesis.label_shift_share:
            prior = rng.dirichlet(np.full(n_classes, synthesis.dirichlet))
        else:
            prior = None
        n_clean = int(round(clean_share * size)) if len(clean[1]) else 0
        counts = [n_clean] + list(rng.multinomial(size - n_clean, np.full(k, 1.0 / k)))
        parts, correct = [], []
        for pool, count in zip([clean] + [conditions[c] for c in chosen], counts):
            if count == 0:
                continue
            cols, labels, ok = pool
            if prior is None:
                idx = rng.integers(0, len(labels), size=count)
            else:
                w = prior[labels]
                idx = rng.choice(len(labels), size=count, replace=True, p=w / w.sum())
            parts.append(cols.take(idx))
            correct.append(ok[idx])
        window = WindowColumns.concat(parts)
        if sampling_variance is not None:
            p = window.p_correct
            sampling_variance.append(float((p * (1 - p)).sum()) / len(p) ** 2)
        feats.append(window_features(window, reference_predicted, reference_shadow_predicted))
        accs.append(float(np.concatenate(correct).mean()))
        shifted.append(1.0 - n_clean / size)
    return np.array(feats), np.array(accs), np.array(shifted)


class WindowModel:
    """Gradient-boosted regression of (accuracy - mean P(correct)) on WINDOW_FEATURES; or the
    average of several such regressions (:meth:`average`)."""

    def __init__(self, reference_predicted: np.ndarray, reference_shadow_predicted: np.ndarray,
                 seed: int = 0) -> None:
        self.reference_predicted = np.asarray(reference_predicted, dtype=np.float64)
        self.reference_shadow_predicted = np.asarray(reference_shadow_predicted, dtype=np.float64)
        self.seed = seed
        self._models: list = []

    @classmethod
    def average(cls, models: list["WindowModel"]) -> "WindowModel":
        """One model predicting the mean residual of fitted ``models`` (same reference histograms)."""
        if not models or any(not m._models for m in models):
            raise ValueError("average needs at least one fitted WindowModel")
        first = models[0]
        for m in models[1:]:
            if not (np.array_equal(m.reference_predicted, first.reference_predicted)
                    and np.array_equal(m.reference_shadow_predicted, first.reference_shadow_predicted)):
                raise ValueError("average: the models were fitted against different reference histograms")
        out = cls(first.reference_predicted, first.reference_shadow_predicted, first.seed)
        out._models = [r for m in models for r in m._models]
        return out

    def fit(self, features: np.ndarray, accuracy: np.ndarray) -> "WindowModel":
        from sklearn.ensemble import HistGradientBoostingRegressor
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(WINDOW_FEATURES):
            raise ValueError(f"features must have shape (W, {len(WINDOW_FEATURES)}), got {x.shape}")
        residual = np.asarray(accuracy, dtype=np.float64) - x[:, 0]
        # One thread: a few thousand rows are split faster than OpenMP threads can synchronise,
        # and on a busy machine spinning threads make it orders of magnitude slower.
        with single_thread():
            self._models = [HistGradientBoostingRegressor(
                max_iter=150, learning_rate=0.1, max_leaf_nodes=15, min_samples_leaf=20,
                random_state=self.seed,
            ).fit(x, residual)]
        return self

    def predict_features(self, features: np.ndarray) -> np.ndarray:
        if not self._models:
            from daic.oracles.base import NotFittedError

            raise NotFittedError("WindowModel: call fit first")
        x = np.atleast_2d(np.asarray(features, dtype=np.float64))
        with single_thread():
            residual = np.mean([m.predict(x) for m in self._models], axis=0)
        return np.clip(x[:, 0] + residual, 0.0, 1.0)

    def features(self, cols: WindowColumns) -> np.ndarray:
        return window_features(cols, self.reference_predicted, self.reference_shadow_predicted)

    def predict(self, cols: WindowColumns) -> float:
        """Estimated accuracy of one window."""
        return float(self.predict_features(self.features(cols)[None])[0])
