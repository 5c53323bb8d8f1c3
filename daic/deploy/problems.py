"""One finding of a manifest or image check, naming the object and the field."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Problem:
    """``where`` names the object (``Kind/namespace/name`` or a file), ``path`` the field inside
    it (dotted, with list indexes), ``message`` what is wrong."""

    where: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.path}: {self.message}" if self.path else f"{self.where}: {self.message}"


def describe(obj: dict[str, Any]) -> str:
    """``Kind/namespace/name`` (or ``Kind/name`` for cluster-scoped objects) of a manifest."""
    meta = obj.get("metadata") or {}
    name = meta.get("name") or meta.get("generateName") or "<unnamed>"
    ns = meta.get("namespace")
    kind = obj.get("kind", "<no kind>")
    return f"{kind}/{ns}/{name}" if ns else f"{kind}/{name}"


def join(path: str, *parts: str | int) -> str:
    """Append field names and list indexes to a dotted path: ``join("spec", "containers", 0)``
    gives ``spec.containers[0]``."""
    out = path
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out = f"{out}.{part}" if out else part
    return out
