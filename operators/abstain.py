"""``spec.abstain`` onto the serving side (issue 21, item 4): the policy record the model server follows.

The decision itself is per input and lives in the serving graph (daic.serving.abstain); what the
operator owns is only *whether* and *below which bound*. Each pass projects ``spec.abstain`` onto
``models/<model>/abstain.json`` (daic.serving.abstain_policy), writing only when it differs, so the
spec is the one place it is set and the model servers pick a change up within their reload
interval, without a restart or a re-rendered SeldonDeployment. Outside the pure reconcile function:
it is desired state copied as is, with no decision to test in a table.
"""
from __future__ import annotations

import logging
from typing import Any, Optional

from daic.operators.actions import EmitEvent
from daic.operators.spec import CycleSpec

log = logging.getLogger(__name__)


def sync_abstain(spec: CycleSpec, store: Any, source: str) -> Optional[EmitEvent]:
    """Write the policy record when ``spec.abstain`` changed it; the Event to emit then, else None.
    A store that cannot be written is logged and retried on the next pass (it never fails a pass)."""
    from daic.serving.abstain_policy import sync_policy

    a = spec.abstain
    try:
        written = sync_policy(store, spec.deployment.model_name, a.enabled, a.bound, source)
    except Exception as exc:  # noqa: BLE001 - the next pass tries again
        log.warning("abstain policy of %s not written (%s: %s); retried next pass", spec.deployment.model_name,
                    type(exc).__name__, exc)
        return None
    if written is None:
        return None
    what = f"on below P(correct) {a.bound:g}" if a.enabled else "off"
    return EmitEvent("Normal", "AbstainPolicy", f"abstaining {what} for model {spec.deployment.model_name} "
                                                "(models/<model>/abstain.json; the model servers follow it)")
