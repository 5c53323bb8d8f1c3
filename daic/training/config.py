"""Typed training configuration: every knob, its default and its validation in one place.

The same ``TrainConfig`` drives a local CPU run, a run against a remote Ray cluster
(``RAY_ADDRESS``) and a KubeRay ``RayJob``; it travels to the Ray workers as a plain dict
(``model_dump()``) and is re-validated there.
"""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Precision = Literal["auto", "fp32", "bf16", "fp16"]
DATASETS = ("mnist", "fashion-mnist")


class TrainConfig(BaseModel):
    """What one training run does.

    ``batch_size`` is per worker (Ray Train's convention): the global batch is
    ``batch_size * num_workers``; ``None`` lets each worker choose for its device (128 on a CPU,
    up to 2048 on a GPU: ``daic.training.device_plan``). ``lr`` is the peak of the one-cycle
    schedule (Smith & Topin 2019) at 128 examples per worker, which reaches >= 99 % on MNIST in a
    few epochs without tuning; when the batch is chosen per device, ``lr_scaling="sqrt"`` scales
    it to that batch (an explicit ``batch_size`` takes ``lr`` as given).
    ``compile`` and ``data_on_device`` default to the device's rule as well.

    Operational (labeled) data is mixed into the base training split in two ways that can be
    combined: ``operational_oversample`` repeats every operational example that many times per
    epoch, ``operational_weight`` scales their loss. A few hundred labels among 55,000 base images
    would otherwise barely move the gradient.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: Literal["mnist", "fashion-mnist"] = "mnist"
    epochs: int = Field(4, ge=1, le=1000)
    batch_size: Optional[int] = Field(None, ge=1, le=65536)
    lr: float = Field(4e-3, gt=0, le=10)
    lr_scaling: Literal["sqrt", "none"] = "sqrt"
    weight_decay: float = Field(0.0, ge=0, le=1)
    num_workers: int = Field(2, ge=1, le=1024)
    cpus_per_worker: int = Field(1, ge=1, le=256)
    use_gpu: bool = False
    precision: Precision = "auto"
    seed: int = Field(0, ge=0, le=2**31 - 1)
    # Use only the first N images of the base split (tests, quick runs); None = all 55,000.
    base_limit: Optional[int] = Field(None, ge=0)
    # Evaluate per-epoch validation accuracy on the first N val images; None = all 5,000.
    val_limit: Optional[int] = Field(None, ge=1)
    labels_prefix: Optional[str] = None
    operational_oversample: int = Field(1, ge=1, le=10_000)
    operational_weight: float = Field(1.0, gt=0, le=1_000)
    # At least this share of each epoch's examples are labelled operational ones: the repeats are
    # raised above operational_oversample where the base split would otherwise drown them (a few
    # hundred labels among 55,000 images); None: operational_oversample alone.
    operational_share: Optional[float] = Field(None, gt=0, lt=1)
    # Registry version (e.g. "v0003") whose weights initialise both networks; None = from scratch.
    warm_start_from: Optional[str] = None
    # Keep the whole training set as one tensor on the device and index batches there: for a model
    # this small, per-batch host-to-device copies starve a GPU (DESIGN.md, H100 figures).
    data_on_device: Optional[bool] = None
    # torch.compile both networks: auto = only where it pays (a GPU at batch >= 8192).
    compile: Literal["auto", "on", "off"] = "auto"
    checkpoints_to_keep: int = Field(2, ge=1, le=100)
    # Semi-supervised retraining on unlabelled operational inputs (daic.training.semi_supervised):
    # an object-store .npz with ``images`` (N, 28, 28) and optionally ``p_correct`` (N,).
    unlabeled_key: Optional[str] = None
    # Pseudo-labels from the warm-start model where the score reaches this; None = none.
    pseudo_label_threshold: Optional[float] = Field(None, gt=0, le=1)
    # "teacher": labels and confidence a teacher (the champion behind the input filter) wrote into the pool
    pseudo_label_score: Literal["p_correct", "confidence", "teacher"] = "p_correct"
    # Pseudo-labels repeated until they are at least this share of the base part of an epoch; 0 = once each.
    pseudo_label_share: float = Field(0.0, ge=0, lt=1)
    # FixMatch-style consistency loss on the unlabelled inputs; 0 = off.
    consistency_weight: float = Field(0.0, ge=0, le=100)
    consistency_threshold: float = Field(0.95, gt=0, le=1)
    # Re-estimate BatchNorm statistics after training (AdaBN) on the pool, or the pool + base images.
    bn_adapt: Literal["off", "pool", "pool+base"] = "off"
    # Corruption-robust training (daic.training.augment): a share of each batch's base examples
    # distorted by a fixed family of generic operations (AugMix-style mixing or one unmixed chain);
    # labelled operational examples get a weak view (small shift and rotation).
    augment: Literal["off", "chain", "augmix", "select"] = "off"
    augment_share: float = Field(0.5, ge=0, le=1)
    # augment="select": the recipe is chosen per run (daic.training.loop.select_recipe). A share
    # select_share of the labelled operational inputs is held out of training, one challenger per
    # candidate in select_candidates is trained on the rest, the one that classifies the held-out
    # inputs best (most correct, then lowest cross-entropy; the first candidate on a full tie) wins,
    # and the winner's recipe is trained again on every labelled input.
    select_candidates: tuple[Literal["off", "chain", "augmix"], ...] = ("chain", "off")
    select_share: float = Field(0.3, gt=0, lt=1)
    # The candidates train on the first select_base_limit base images only (None: all of them):
    # they rank recipes, the winner's final run uses the whole base. 10,000 keeps the choice at
    # about 1.4 fits' time on the full split instead of 3.
    select_base_limit: Optional[int] = Field(10_000, ge=1)
    # Self-training rounds with the challenger as teacher (daic.training.semi_supervised): after
    # training, pool inputs the challenger labels confidently (mean confidence over a plain and two
    # weakly shifted views >= self_training_threshold) and consistently (the same class in every
    # view) join the training set, repeated self_training_repeat times per epoch, and the challenger
    # trains self_training_epochs more epochs on it.
    self_training_rounds: int = Field(0, ge=0, le=5)
    self_training_threshold: float = Field(0.9, gt=0, le=1)
    self_training_epochs: int = Field(1, ge=1, le=100)
    self_training_repeat: int = Field(3, ge=1, le=100)

    @field_validator("labels_prefix")
    @classmethod
    def _prefix_is_relative(cls, v: Optional[str]) -> Optional[str]:
        if v is None:
            return v
        if not v or v.startswith("/") or ".." in v.split("/"):
            raise ValueError(
                f"labels_prefix {v!r} must be a relative object-store prefix such as 'labels/cycle-1/'"
            )
        return v

    @field_validator("unlabeled_key")
    @classmethod
    def _key_is_relative(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and (not v or v.startswith("/") or ".." in v.split("/") or not v.endswith(".npz")):
            raise ValueError(f"unlabeled_key {v!r} must be a relative object-store key of an .npz file")
        return v

    @field_validator("warm_start_from")
    @classmethod
    def _version_shape(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and (not v or "/" in v):
            raise ValueError(f"warm_start_from {v!r} must be a version id such as 'v0003'")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "TrainConfig":
        if self.precision == "fp16" and not self.use_gpu:
            raise ValueError("precision 'fp16' needs use_gpu=True (fp16 autocast is for CUDA)")
        if self.unlabeled_key is None and (self.pseudo_label_threshold is not None or self.consistency_weight > 0
                                           or self.bn_adapt != "off" or self.self_training_rounds > 0):
            raise ValueError("pseudo_label_threshold, consistency_weight, bn_adapt and self_training_rounds need "
                             "unlabeled_key "
                             "(the unlabelled operational inputs)")
        if self.augment == "select" and len(set(self.select_candidates)) < 2:
            raise ValueError(f"augment='select' needs at least two distinct select_candidates, "
                             f"got {self.select_candidates}")
        if self.base_limit == 0 and self.labels_prefix is None:
            raise ValueError("base_limit=0 with no labels_prefix leaves nothing to train on")
        return self

    @property
    def global_batch_size(self) -> Optional[int]:
        """``batch_size * num_workers``; None while the batch is chosen per device."""
        return None if self.batch_size is None else self.batch_size * self.num_workers
