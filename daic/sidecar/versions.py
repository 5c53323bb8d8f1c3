"""Which model versions exist in the registry, as the sidecar checks what a response claims.

A response's ``daic.model_version`` tag is data the sidecar receives, not something it can trust:
a forged or broken event may name any string. Predictions are scored, recorded and exported per
version only for versions that exist in the registry (``daic.models.registry``), which also bounds
the ``model_version`` label values in /metrics. The registry is listed once and again at most every
``refresh_s`` seconds when an unknown name shows up (a version registered since), so a stream of
forged names costs one listing per interval, not one per event.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable

from daic.storage import ObjectStore


class RegistryVersions:
    def __init__(self, store: ObjectStore, model_name: str, refresh_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.model_name = model_name
        self.refresh_s = refresh_s
        self.clock = clock
        self._known: set[str] = set()
        self._listed_at = -float("inf")
        self._lock = threading.Lock()

    def add(self, version: str) -> None:
        """A version seen in the registry by other means (the champion pointer names it): known
        at once, whenever the list was last read."""
        with self._lock:
            self._known.add(version)

    def known(self, version: str) -> bool:
        """Whether ``version`` is a complete version of the model in the registry (I/O: call it
        off the event loop)."""
        with self._lock:
            if version in self._known:
                return True
            now = self.clock()
            if now - self._listed_at >= self.refresh_s:
                from daic.models.registry import ModelRegistry

                self._known = set(ModelRegistry(self.store, self.model_name).versions())
                self._listed_at = now
            return version in self._known
