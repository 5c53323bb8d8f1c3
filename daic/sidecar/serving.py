"""Which model versions a sidecar serves now: the versions whose estimates it exports.

One serving version per series, by construction (issue 23): ``/metrics`` and ``/estimate`` show
the estimate of a version only while this sidecar serves it, so a query never meets the frozen
window of a version that left.

* A version serves from its first scored prediction on.
* When the champion pointer moves (promotion or rollback), every version but the new champion
  stops serving at once. One that still gets predictions afterwards (a pod not yet replaced)
  serves again from its next prediction, with a fresh window.
* A version that is not the champion stops serving after ``idle_s`` without a prediction (a
  canary that ended). The champion does not expire: its estimate ages, and its timestamp (the
  time of its newest input) says how old it is.
* After a restart the same rules apply to what the checkpoint held: the champion recorded with
  the checkpoint is compared with the registry's, and checkpoints written before this module
  existed (no times) keep only the champion.

Roles: ``champion`` is the registry's champion (before any champion is known, every version);
any other serving version is a ``canary`` (a canary predictor's own sidecar serves only the
challenger, which is not yet the champion).

Pure bookkeeping: the caller (daic.sidecar.service) discards the estimators of dropped versions.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

CHAMPION, CANARY = "champion", "canary"


@dataclass
class ServingVersions:
    idle_s: float = 600.0
    champion: str | None = None                               # the champion these rules last saw
    newest: dict[str, float] = field(default_factory=dict)    # version -> time of its newest input
    keep_champion_only: bool = False                          # restored from a checkpoint without times

    def seen(self, version: str, time: float) -> None:
        """A scored prediction of ``version`` whose input arrived at ``time``."""
        self.newest[version] = max(time, self.newest.get(version, time))

    def serving(self) -> list[str]:
        return sorted(self.newest)

    def role(self, version: str) -> str:
        return CHAMPION if self.champion is None or version == self.champion else CANARY

    def set_champion(self, champion: str, now: float) -> list[str]:
        """The registry names ``champion``; returns the versions that stop serving."""
        if self.keep_champion_only or (self.champion is not None and champion != self.champion):
            dropped = [v for v in self.newest if v != champion]
        else:
            dropped = [v for v in self.newest if v != champion and now - self.newest[v] > self.idle_s]
        self.champion, self.keep_champion_only = champion, False
        for version in dropped:
            del self.newest[version]
        return dropped

    def expire(self, now: float) -> list[str]:
        """Versions other than the champion idle for more than ``idle_s``; they stop serving."""
        dropped = [v for v, t in self.newest.items() if self.role(v) == CANARY and now - t > self.idle_s]
        for version in dropped:
            del self.newest[version]
        return dropped

    def to_state(self) -> dict[str, Any]:
        return {"champion": self.champion, "newest": dict(self.newest)}

    @classmethod
    def from_state(cls, state: dict[str, Any] | None, idle_s: float, versions: list[str],
                   restored_at: float) -> "ServingVersions":
        """From a checkpoint; ``versions`` are the estimators it held. Without a recorded state
        (an older checkpoint) nothing is known to serve: the champion check keeps the champion's
        window only (its time becomes ``restored_at``)."""
        if not state:
            return cls(idle_s=idle_s, newest={v: restored_at for v in versions}, keep_champion_only=True)
        newest = {str(v): float(t) for v, t in dict(state.get("newest", {})).items() if v in versions}
        for version in versions:
            newest.setdefault(version, restored_at)
        return cls(idle_s=idle_s, champion=state.get("champion"), newest=newest)
