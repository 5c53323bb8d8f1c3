"""The local champion switch used by ``daic controller``: the embedded default's traffic split.

On one machine there is no SeldonDeployment to patch; the split lives in a JSON file
(``<state_dir>/deployment.json``: champion version, canary version, canary share) that the local
gateway can read, written atomically. A full promotion or rollback also calls an optional
``on_champion(model_name, version)`` hook, where the model registry's champion pointer is moved
(the registry owns that pointer's format; ``daic controller --champion-hook module:function``).
"""
from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from daic.operators.actions import PatchDeployment
from daic.operators.observations import DeploymentReading
from daic.operators.runners.local import write_json_atomic

ChampionHook = Callable[[str, str], None]
#: ``(model_name, filter_version or None, gate, reason)``: put a filter in front of the champion or take it out.
FilterHook = Callable[[str, "str | None", str, str], None]


def registry_champion_hook(store_url: str | None = None) -> ChampionHook:
    """Move the model registry's champion pointer (``daic.models.registry``) in ``store_url``:
    the locally served model follows that pointer (``model_version: champion``)."""

    def move(model_name: str, version: str) -> None:
        from daic.models.registry import champion, set_champion
        from daic.storage import KeyNotFound, open_store

        store = open_store(store_url)
        try:
            if champion(store, model_name) == version:
                return  # already there (a repeated action after a restart)
        except KeyNotFound:
            pass
        set_champion(store, model_name, version)

    return move


def registry_filter_hook(store_url: str | None = None) -> FilterHook:
    """Write the filter service record (``daic.filters.service.FilterService``) in ``store_url``:
    the local gateway's TRANSFORMER node (``daic.serving.filter.InputFilter``, following the record)
    filters with that version within its reload interval, or passes inputs through when none."""

    def switch(model_name: str, version: str | None, gate: str, reason: str) -> None:
        from daic.filters.service import switch_service
        from daic.storage import open_store

        switch_service(open_store(store_url), model_name, version, gate, reason)

    return switch


class LocalDeployment:
    """``deployment.json`` holds the split and the filters (``filter_version``, ``canary_filter_version``);
    a patch without a canary also calls ``on_filter`` (the filter in front of the champion, or none)."""

    def __init__(self, path: str | os.PathLike[str], model_name: str, on_champion: ChampionHook | None = None,
                 initial_champion: str | None = None, on_filter: FilterHook | None = None):
        self.path, self.model_name, self.on_champion = Path(path), model_name, on_champion
        self.initial_champion = initial_champion
        self.on_filter = on_filter

    def observe(self, now: datetime) -> DeploymentReading:
        try:
            state = json.loads(self.path.read_text())
        except FileNotFoundError:
            return DeploymentReading(self.initial_champion, None, 0, now)
        return DeploymentReading(state.get("champion_version"), state.get("canary_version"),
                                 int(state.get("canary_share") or 0), now, state.get("filter_version"),
                                 state.get("canary_filter_version"))

    def apply(self, want: PatchDeployment) -> None:
        if want.canary_version is None and self.on_champion is not None:
            self.on_champion(self.model_name, want.champion_version)  # idempotent: same pointer again
        if want.canary_version is None and self.on_filter is not None:
            self.on_filter(self.model_name, want.filter_version, want.filter_gate,
                           f"the operator: {want.key}")  # idempotent too
        write_json_atomic(self.path, {
            "deployment": want.name,
            "champion_version": want.champion_version,
            "canary_version": want.canary_version,
            "canary_share": want.canary_share,
            "filter_version": want.filter_version,
            "filter_gate": want.filter_gate if want.filter_version else None,
            "canary_filter_version": want.canary_filter_version,
            "canary_filter_gate": want.canary_filter_gate if want.canary_filter_version else None,
            "updated_at": datetime.now(timezone.utc).isoformat(),
        })
