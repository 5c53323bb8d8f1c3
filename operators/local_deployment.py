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


class LocalDeployment:
    def __init__(self, path: str | os.PathLike[str], model_name: str, on_champion: ChampionHook | None = None,
                 initial_champion: str | None = None):
        self.path, self.model_name, self.on_champion = Path(path), model_name, on_champion
        self.initial_champion = initial_champion

    def observe(self, now: datetime) -> DeploymentReading:
        try:
            state = json.loads(self.path.read_text())
        except FileNotFoundError:
            return DeploymentReading(self.initial_champion, None, 0, now)
        return DeploymentReading(state.get("champion_version"), state.get("canary_version"),
                                 int(state.get("canary_share") or 0), now)

    def apply(self, want: PatchDeployment) -> None:
        if want.canary_version is None and self.on_champion is not None:
            self.on_champion(self.model_name, want.champion_version)  # idempotent: same pointer again
        write_json_atomic(self.path, {
            "deployment": want.name,
            "champion_version": want.champion_version,
            "canary_version": want.canary_version,
            "canary_share": want.canary_share,
            "updated_at": datetime.now(timezone.utc).isoformat(),
        })
