"""The sidecar's one door to ``daic.oracles``: a fitted assessor and an estimator per version.

Every served response names the model version that produced it; that version's oracle
reference (``models/<name>/<version>/oracle_reference.npz``, and its shifted reference when the
registry has one) is what its predictions are scored against. Assessors are fitted once per
version, on first use or when the champion pointer moves, and cached (a few versions at most
are live at once: champion, canary, the one being retired).

Fitting takes about a minute of CPU (cross-fitted combiner and window model), which a restart or
a champion change would otherwise pay again before the sidecar is ready. So a fitted assessor is
also pickled to ``cache_dir`` (the sidecar's own state directory), keyed by a fingerprint of the
reference arrays and of the ``daic.oracles`` source: a changed reference or new code refits, a
missing or unreadable file refits, and only files this sidecar wrote are ever loaded.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import os
import pickle
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from daic.models import first_window
from daic.oracles.pipeline import OnlineAssessor
from daic.oracles.window import OnlineEstimator
from daic.serving.loading import load_oracle_reference, resolve_version
from daic.storage import ObjectStore

logger = logging.getLogger(__name__)


@functools.cache
def _code_fingerprint() -> str:
    """Hash of the daic.oracles sources: a pickled assessor is only reused by the same code.
    Taken once per process: it stands for the code that was loaded, not for later edits."""
    import daic.oracles

    digest = hashlib.sha256()
    for path in sorted(Path(daic.oracles.__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def reference_fingerprint(*references) -> str:
    """Hash of every array and scalar field of the (dataclass) references given, None skipped."""
    digest = hashlib.sha256()
    for reference in references:
        if reference is None:
            digest.update(b"none")
            continue
        for f in dataclasses.fields(reference):
            value = getattr(reference, f.name)
            digest.update(f.name.encode())
            if isinstance(value, np.ndarray):
                digest.update(str(value.dtype).encode() + str(value.shape).encode())
                digest.update(np.ascontiguousarray(value).tobytes() if value.dtype != object
                              else repr(value.tolist()).encode())
            else:
                digest.update(repr(value).encode())
    return digest.hexdigest()[:16]


class AssessorPool:
    def __init__(self, store: ObjectStore, model_name: str, window: int, keep: int = 4,
                 cache_dir: Path | None = None) -> None:
        self.store = store
        self.model_name = model_name
        self.window = window
        self.keep = keep
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.fits = 0  # assessors fitted (not loaded from the cache) by this pool
        self._assessors: OrderedDict[str, OnlineAssessor] = OrderedDict()
        self._lock = threading.Lock()

    def champion(self) -> str | None:
        """The registry's champion version, None while there is none."""
        return resolve_version(self.store, self.model_name, missing_ok=True)

    def get(self, version: str) -> OnlineAssessor:
        """The assessor fitted on ``version``'s oracle reference (fits it on first use)."""
        with self._lock:
            assessor = self._assessors.get(version)
            if assessor is None:
                reference, shifted = load_oracle_reference(self.store, self.model_name, version)
                assessor = self._fit_or_load(version, reference, shifted)
                # Labelled held-out inputs of the cycle that promoted it (daic.models.first_window).
                assessor = first_window.calibrate(assessor, self.store, self.model_name, version)
                self._assessors[version] = assessor
                while len(self._assessors) > self.keep:
                    self._assessors.popitem(last=False)
            self._assessors.move_to_end(version)
            return assessor

    def _fit_or_load(self, version: str, reference, shifted) -> OnlineAssessor:
        if self.cache_dir is None:
            self.fits += 1
            return OnlineAssessor().fit(reference, shifted)
        path = self.cache_dir / f"{version}-{reference_fingerprint(reference, shifted)}-{_code_fingerprint()}.pkl"
        if path.exists():
            try:
                with open(path, "rb") as fh:
                    assessor = pickle.load(fh)
                if isinstance(assessor, OnlineAssessor):
                    return assessor
                logger.warning("%s does not hold an assessor; refitting", path)
            except Exception as exc:  # noqa: BLE001 - any unreadable cache file means: refit
                logger.warning("cannot read the cached assessor %s (%s); refitting", path, exc)
        self.fits += 1
        assessor = OnlineAssessor().fit(reference, shifted)
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            for old in self.cache_dir.glob(f"{version}-*.pkl"):
                old.unlink(missing_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.cache_dir, suffix=".tmp")
            with os.fdopen(fd, "wb") as fh:
                pickle.dump(assessor, fh, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, path)
        except OSError as exc:
            logger.warning("cannot cache the fitted assessor in %s: %s", self.cache_dir, exc)
        return assessor

    def loaded_versions(self) -> list[str]:
        with self._lock:
            return list(self._assessors)

    def new_estimator(self, version: str) -> OnlineEstimator:
        """A window with the version's window model, measured model error and trust region.
        Once feedback recalibrates it, the label-free estimate is still weighed in by inverse
        variance (``fuse_label_free``): 1.92 points of error after 200 labels against 2.00 for
        the recalibration alone in benchmarks/online_estimation.py (docs/benchmarks/online.md)."""
        return self.get(version).new_estimator(max_count=self.window, fuse_label_free=True)

    def estimator_from_state(self, state: dict, version: str) -> OnlineEstimator:
        """Resume a persisted window; the window model is refitted (deterministically) with the
        version's assessor, since it is not part of the saved state."""
        return self.get(version).estimator_from_state(state)
