"""Which filter version serves in front of the champion: the record the serving transformer follows.

Torch-free on purpose (the filter's network and registry import torch): the deploy step runs in the
pipelines image, which has no torch, and moves this record when the pipeline promotes (issue 21).
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from daic.models.registry import ModelRegistry


def filter_model_name(classifier: str) -> str:
    return f"{classifier}-filter"


SERVICE_FILE = "service.json"
FOLLOW = "service"  # the transformer's filter_version that follows the service record


class FilterService(BaseModel):
    """``models/<classifier>-filter/service.json``: which filter version is in service in front of
    the champion and how it is gated (``version`` None: removed, the transformer passes inputs
    through). Written by the cycle's remedy step (and its removal when traffic is clean again),
    read by the serving transformer every ``reload_interval_s``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Optional[str] = None
    gate: Literal["gated", "always", "off"] = "gated"
    reason: str = ""
    cycle: Optional[str] = None
    decided_at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))


def read_service(store, classifier: str) -> FilterService:
    from daic.storage import KeyNotFound

    try:
        return FilterService.model_validate(store.get_json(f"models/{filter_model_name(classifier)}/{SERVICE_FILE}"))
    except KeyNotFound:
        return FilterService(reason="no filter has been put in service")


def write_service(store, classifier: str, service: FilterService) -> FilterService:
    if service.version is not None:
        ModelRegistry(store, filter_model_name(classifier)).card(service.version)  # only a complete version goes in service
    store.put_json(f"models/{filter_model_name(classifier)}/{SERVICE_FILE}", service.model_dump(mode="json"))
    return service


def switch_service(store, classifier: str, version: Optional[str], gate: str, reason: str,
                   cycle: Optional[str] = None) -> bool:
    """Put ``version`` (None: no filter) in service with ``gate``, unless it is there already (a repeated
    action after a restart); returns whether the record changed. The operator's local deployment and
    the deploy step (when the pipeline promotes) both switch through here."""
    now = read_service(store, classifier)
    if now.version == version and (version is None or now.gate == gate):
        return False
    write_service(store, classifier, FilterService(version=version, gate=gate if version else "gated",
                                                   reason=reason, cycle=cycle))
    return True
