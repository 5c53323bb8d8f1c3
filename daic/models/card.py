"""The model card: what a registered version is, where it came from, how good it was.

Stored as ``models/<name>/<version>/card.json``. The card is written last when a version is
registered, so a version with a card is complete (weights and oracle reference are there).
"""
from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator

VERSION_RE = re.compile(r"^v(\d{4,})$")
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ValueError(
            f"invalid model name {name!r}: lower-case letters, digits and ._- (at most 63, "
            "starting with a letter or digit)"
        )
    return name


def check_version(version: str) -> str:
    if not isinstance(version, str) or not VERSION_RE.match(version):
        raise ValueError(f"invalid version {version!r}: expected 'v' and at least 4 digits, e.g. 'v0001'")
    return version


def version_id(number: int) -> str:
    """Versions sort as strings and as numbers alike while below 10,000 (and by number always)."""
    if number < 1:
        raise ValueError(f"version numbers start at 1, got {number}")
    return f"v{number:04d}"


def version_number(version: str) -> int:
    return int(check_version(version)[1:])


class LabeledBatchRef(BaseModel):
    """One labeled operational batch a version was trained on."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str
    count: int = Field(ge=0)
    sha256: str


class DataLineage(BaseModel):
    """Which data trained a version: the base split and every labeled batch, by content hash."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: str
    base_split: str = "train"
    base_count: int = Field(ge=0)
    labels_prefix: Optional[str] = None
    labeled_batches: list[LabeledBatchRef] = []
    operational_oversample: int = Field(1, ge=1)
    operational_weight: float = Field(1.0, gt=0)
    # Free-form context from the caller (e.g. {"cycle": "c-0007"}).
    notes: dict[str, str] = {}

    @property
    def operational_count(self) -> int:
        return sum(b.count for b in self.labeled_batches)


class ModelCard(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    version: str
    parent: Optional[str] = None
    arch: str = "small_cnn"
    shadow_arch: str = "shadow_net"
    created: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))
    code_version: str
    data: DataLineage
    # Final figures (val_accuracy, test_accuracy, shadow_val_accuracy, train_wall_s, ...).
    metrics: dict[str, float] = {}
    # One entry per epoch as reported by the rank-0 worker.
    history: list[dict[str, float]] = []
    train_config: dict = {}

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name(v)

    @field_validator("version")
    @classmethod
    def _version(cls, v: str) -> str:
        return check_version(v)

    @field_validator("parent")
    @classmethod
    def _parent(cls, v: Optional[str]) -> Optional[str]:
        return None if v is None else check_version(v)


class ChampionPointer(BaseModel):
    """Content of ``models/<name>/champion``. ``generation`` counts promotions (lost-update check)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str
    previous: Optional[str] = None
    generation: int = Field(ge=1)
    promoted_at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))
    token: str  # unique per write: a writer re-reads it to detect a concurrent overwrite

    @field_validator("version")
    @classmethod
    def _v(cls, v: str) -> str:
        return check_version(v)
