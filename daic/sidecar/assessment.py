"""The sidecar's one door to ``daic.oracles``: a fitted assessor and an estimator per version.

Every served response names the model version that produced it; that version's oracle
reference (``models/<name>/<version>/oracle_reference.npz``, and its shifted reference when the
registry has one) is what its predictions are scored against. Assessors are fitted once per
version, on first use or when the champion pointer moves, and cached (a few versions at most
are live at once: champion, canary, the one being retired).
"""
from __future__ import annotations

import threading
from collections import OrderedDict

from daic.oracles.pipeline import OnlineAssessor
from daic.oracles.window import OnlineEstimator
from daic.serving.loading import load_oracle_reference, resolve_version
from daic.storage import ObjectStore


class AssessorPool:
    def __init__(self, store: ObjectStore, model_name: str, window: int, keep: int = 4) -> None:
        self.store = store
        self.model_name = model_name
        self.window = window
        self.keep = keep
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
                assessor = OnlineAssessor().fit(reference, shifted)
                self._assessors[version] = assessor
                while len(self._assessors) > self.keep:
                    self._assessors.popitem(last=False)
            self._assessors.move_to_end(version)
            return assessor

    def loaded_versions(self) -> list[str]:
        with self._lock:
            return list(self._assessors)

    def new_estimator(self, version: str) -> OnlineEstimator:
        """A window with the version's window model, measured model error and trust region."""
        return self.get(version).new_estimator(max_count=self.window)

    def estimator_from_state(self, state: dict, version: str) -> OnlineEstimator:
        """Resume a persisted window; the window model is refitted (deterministically) with the
        version's assessor, since it is not part of the saved state."""
        return self.get(version).estimator_from_state(state)
