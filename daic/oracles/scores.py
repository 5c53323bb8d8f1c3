"""Per-input outputs of the online assessor: what the sidecar logs and the window aggregates."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class PerInputScores:
    """p_correct: combined P(correct) (N,); drift: reference percentile of the latent distance
    (N,), uniform on [0, 1] with no shift; far: (N,) True where the input lies beyond the data
    the combiner was fitted on; components: each pseudo-oracle's own per-input output, by name
    (logged and exported, not used by the window). predicted / shadow_predicted (int) and
    confidence (max-softmax) feed the window-level model; None where unknown."""

    p_correct: np.ndarray
    drift: np.ndarray
    far: np.ndarray
    components: dict[str, np.ndarray] = field(default_factory=dict)
    predicted: np.ndarray | None = None
    shadow_predicted: np.ndarray | None = None
    confidence: np.ndarray | None = None

    def __post_init__(self) -> None:
        p = np.asarray(self.p_correct, dtype=np.float64)
        if p.ndim != 1:
            raise ValueError(f"p_correct must be 1-d, got shape {p.shape}")
        n = p.size
        d = np.asarray(self.drift, dtype=np.float64)
        f = np.asarray(self.far)
        if d.shape != (n,):
            raise ValueError(f"drift must have shape ({n},), got {d.shape}")
        if f.shape != (n,):
            raise ValueError(f"far must have shape ({n},), got {f.shape}")
        if np.any((p < 0) | (p > 1)) or not np.all(np.isfinite(p)):
            raise ValueError("p_correct must lie in [0, 1]")
        if np.any((d < 0) | (d > 1)) or not np.all(np.isfinite(d)):
            raise ValueError("drift must lie in [0, 1]")
        comps = {}
        for name, arr in self.components.items():
            a = np.asarray(arr, dtype=np.float64)
            if a.shape != (n,):
                raise ValueError(f"component {name!r} must have shape ({n},), got {a.shape}")
            comps[name] = a
        for name in ("predicted", "shadow_predicted"):
            arr = getattr(self, name)
            if arr is not None:
                a = np.asarray(arr)
                if a.shape != (n,) or (a.size and not np.issubdtype(a.dtype, np.integer)):
                    raise ValueError(f"{name} must be integers of shape ({n},), got {a.dtype} {a.shape}")
                if a.size and a.min() < 0:
                    raise ValueError(f"{name} must be class indices >= 0")
                object.__setattr__(self, name, a.astype(np.int64))
        if self.confidence is not None:
            c = np.asarray(self.confidence, dtype=np.float64)
            if c.shape != (n,) or np.any((c < 0) | (c > 1)) or not np.all(np.isfinite(c)):
                raise ValueError(f"confidence must lie in [0, 1] with shape ({n},)")
            object.__setattr__(self, "confidence", c)
        object.__setattr__(self, "p_correct", p)
        object.__setattr__(self, "drift", d)
        object.__setattr__(self, "far", f.astype(bool))
        object.__setattr__(self, "components", comps)

    def __len__(self) -> int:
        return int(self.p_correct.size)

    @property
    def has_window_columns(self) -> bool:
        return all(x is not None for x in (self.predicted, self.shadow_predicted, self.confidence))

    def subset(self, index) -> "PerInputScores":
        opt = {k: (None if getattr(self, k) is None else getattr(self, k)[index])
               for k in ("predicted", "shadow_predicted", "confidence")}
        return PerInputScores(self.p_correct[index], self.drift[index], self.far[index],
                              {k: v[index] for k, v in self.components.items()}, **opt)

    def to_rows(self) -> list[dict[str, float]]:
        """One JSON-friendly dict per input (for logging next to the prediction)."""
        cols = {"p_correct": self.p_correct, "drift": self.drift, "far": self.far, **self.components}
        return [
            {k: (bool(v[i]) if k == "far" else float(v[i])) for k, v in cols.items()}
            for i in range(len(self))
        ]
