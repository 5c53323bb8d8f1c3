"""Whether the model server abstains, and below which P(correct): the record it follows (issue 21, item 4).

``models/<classifier>/abstain.json`` is the projection of an AssessmentCycle's ``spec.abstain``
(``{enabled, bound}``) that the serving side reads, as ``models/<classifier>-filter/service.json``
is for the filter: the operator (and ``daic controller``) writes it on every pass when it differs
(:func:`sync_policy`, idempotent), the model server (``daic.serving.model.DaicModel`` with
``abstain: service``, the default) re-reads it every ``reload_interval_s``. No record: no
abstaining. Torch-free and seldon-free, so the operator's image can write it.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field

POLICY_FILE = "abstain.json"


class AbstainPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    bound: float = Field(default=0.5, gt=0, lt=1)
    source: str = ""  # who asked for it (``<namespace>/<AssessmentCycle>``)
    decided_at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))

    def same(self, other: "AbstainPolicy") -> bool:
        """The same behaviour (who wrote it and when aside)."""
        return self.enabled == other.enabled and (not self.enabled or self.bound == other.bound)


def policy_key(classifier: str) -> str:
    return f"models/{classifier}/{POLICY_FILE}"


def read_policy(store, classifier: str) -> AbstainPolicy:
    """The record, or a disabled policy when there is none."""
    from daic.storage import KeyNotFound

    try:
        return AbstainPolicy.model_validate(store.get_json(policy_key(classifier)))
    except KeyNotFound:
        return AbstainPolicy()


def sync_policy(store, classifier: str, enabled: bool, bound: float, source: str = "") -> Optional[AbstainPolicy]:
    """Write the policy when it differs from the stored one; returns what was written, None when
    nothing changed (a pass that repeats itself writes nothing)."""
    wanted = AbstainPolicy(enabled=enabled, bound=bound, source=source)
    if read_policy(store, classifier).same(wanted):
        return None
    store.put_json(policy_key(classifier), wanted.model_dump(mode="json"))
    return wanted
