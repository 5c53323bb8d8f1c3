"""Typed configuration of a filter training run (travels to Ray workers as a dict, like TrainConfig)."""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator

from daic.data.corruptions import CORRUPTIONS
from daic.data.fit_shifts import FIT_SHIFTS

#: Generic corruption families the filter is fitted on: noise, blur, resolution, intensity,
#: occlusion, geometry. Kept OUT (for evaluation of unseen corruptions): impulse_noise,
#: motion_blur, glass_blur, fog, zigzag, dotted_line, edges, rotate, scale.
TRAIN_CORRUPTIONS: tuple[str, ...] = (
    "gaussian_noise", "shot_noise", "gaussian_blur", "pixelate", "brightness", "contrast",
    "spatter", "stripe", "elastic", "translate", "shear",
)
HELD_OUT: tuple[str, ...] = tuple(c for c in CORRUPTIONS if c not in TRAIN_CORRUPTIONS)


class FilterConfig(BaseModel):
    """What one filter training run does. ``classifier_version`` is the champion the filter wraps
    (frozen during training); ``warm_start_from`` a filter version to fine-tune (the cycle's
    label-free adaptation of the generic filter to its operational pool at ``pool_key``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: Literal["mnist", "fashion-mnist"] = "mnist"
    classifier: str = "mnist"
    classifier_version: str
    epochs: int = Field(3, ge=1, le=1000)
    batch_size: int = Field(128, ge=2, le=65536)
    lr: float = Field(2e-3, gt=0, le=1)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    num_workers: int = Field(1, ge=1, le=1024)
    cpus_per_worker: int = Field(1, ge=1, le=256)
    use_gpu: bool = False
    checkpoints_to_keep: int = Field(2, ge=1, le=100)
    #: clean training images used (the first N of the base split); None = all 55,000
    base_limit: Optional[int] = Field(20_000, ge=1)
    corruptions: tuple[str, ...] = TRAIN_CORRUPTIONS
    #: share of training images left clean (the filter must keep them as they are)
    clean_share: float = Field(0.25, ge=0, le=1)
    #: object-store key of an .npz with ``images`` (N, 28, 28): the unlabeled operational pool
    pool_key: Optional[str] = None
    restore_weight: float = Field(1.0, ge=0)
    task_weight: float = Field(1.0, ge=0)
    pool_weight: float = Field(1.0, ge=0)
    warm_start_from: Optional[str] = None
    val_limit: int = Field(2_000, ge=1)
    #: share of clean validation inputs the gate may send through the filter (its threshold)
    gate_clean_rate: float = Field(0.01, gt=0, lt=1)
    #: the parameter-free canonical form (contrast stretch, centre-of-mass re-centring;
    #: daic.filters.network) around the U-Net
    canonical: bool = True
    #: re-centring at inference: ``search`` (a candidate the classifier's entropy chooses, no margin,
    #: beside the un-shifted restoration) or ``always`` (forced). Measured: forced costs 13 points on
    #: fog/4, whose haze moves the centre of mass (docs/benchmarks.md); training always re-centres.
    recentre: Literal["search", "always"] = "search"
    #: rotations (degrees) the test-time alignment search tries besides the identity (empty: none)
    align_angles: tuple[float, ...] = (-45.0, -30.0, -15.0, 15.0, 30.0, 45.0)
    #: entropy (nats) a rotation must beat the identity by to be chosen (0.5: no clean validation
    #: accuracy lost with every input searched; 0.2 lost 0.3 points, see docs/benchmarks.md)
    align_margin: float = Field(0.5, ge=0, le=10)
    #: wall-clock budget of the fit in seconds (None: all ``epochs``): a cycle's adaptation stops
    #: when it is spent so the filter is in service in time (the learning rate anneals to it)
    max_seconds: Optional[float] = Field(None, gt=0)

    @field_validator("align_angles")
    @classmethod
    def _angles(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if any(a == 0 or not -90 <= a <= 90 for a in v):
            raise ValueError(f"align_angles must be non-zero degrees in [-90, 90], got {list(v)}")
        return v

    @field_validator("corruptions")
    @classmethod
    def _known(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [c for c in v if c not in CORRUPTIONS and c not in FIT_SHIFTS]
        if bad:
            raise ValueError(f"unknown corruptions {bad}; valid: {', '.join(CORRUPTIONS + FIT_SHIFTS)}")
        return v

    @field_validator("pool_key")
    @classmethod
    def _relative(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and (not v or v.startswith("/") or ".." in v.split("/")):
            raise ValueError(f"pool_key {v!r} must be a relative object-store key such as 'cycles/c-1/pool.npz'")
        return v
