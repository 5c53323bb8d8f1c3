"""Every knob of the demo, its default and its validation in one place."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from daic.data.corruptions import CORRUPTIONS
from daic.data.scenarios import SCENARIOS

# A drift that a confidence-based estimator misses (DESIGN.md: translated / low-contrast digits)
# mixed with ones it sees, growing in over a few batches.
DEFAULT_MIXTURE = (("translate", 3), ("contrast", 4), ("rotate", 4), ("gaussian_noise", 5))


class DemoConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    run: str = Field(default_factory=lambda: time.strftime("demo-%Y%m%dT%H%M%S", time.gmtime()),
                     pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,60}$")
    store_url: str | None = None  # default: $DAIC_STORE or ./.daic/store
    work_dir: Path = Path(".daic/demo")
    model_name: str = "mnist"
    scenario: str = "mixture"
    mixture: tuple[tuple[str, int], ...] = DEFAULT_MIXTURE
    corruption: str = "translate"  # for single-corruption scenarios (sudden, gradual, recurring)
    severity: int = Field(3, ge=1, le=5)
    share: float = Field(0.8, gt=0, le=1)
    seed: int = Field(7, ge=0)
    labeler: Literal["simulated", "web"] = "simulated"
    quick: bool = False
    # traffic
    batch_size: int = Field(100, ge=10, le=256)
    clean_steps: int = Field(6, ge=2)
    # Streaming goes on while the cycle runs, up to this many batches or cycle_timeout_s, whichever
    # comes first. The time is the bound that matters: a batch takes 0.5 s plus its answer, so 400
    # batches (the old cap) ran out after about 9 minutes on a slow 2-core machine while the cycle
    # was evaluating (session 11: the first training took 233 s there against 75 s on a quick one).
    max_drift_steps: int = Field(3000, ge=5)
    recovery_steps: int = Field(10, ge=1)
    step_interval_s: float = Field(0.5, ge=0)  # pause between batches: traffic arrives over time
    # training and the cycle
    epochs: int = Field(3, ge=1)
    retrain_epochs: int = Field(2, ge=1)
    budget: int = Field(200, ge=20)
    label_round_size: int = Field(50, ge=0)  # labels asked for in rounds of this many (0: all at once)
    threshold: float = Field(0.93, gt=0, lt=1)
    # the second remedy (issue 21): an input filter in front of the champion while retraining runs
    remedy: Literal["retrain", "filter", "both"] = "both"
    filter_generic_epochs: int = Field(1, ge=1)      # the generic filter, trained once before any drift
    filter_generic_base: int = Field(8000, ge=100)
    filter_adapt_epochs: int = Field(1, ge=1)        # the cycle's label-free adaptation (quick on purpose)
    filter_adapt_base: int = Field(2000, ge=100)
    filter_pool_limit: int = Field(1000, ge=50)
    min_window: int = Field(300, ge=50)
    cycle_timeout_s: float = Field(1800, gt=0)  # on a quick machine the cycle ends in about 4 minutes
    # ports
    gateway_port: int = 8003
    model_port: int = 9000
    metrics_port: int = 6000
    sidecar_port: int = 8300
    sidecar_ingest_port: int = 8301  # the sidecar's events/feedback/admin port (loopback)
    label_port: int = 8090
    transformer_port: int = 9001
    transformer_metrics_port: int = 6001

    @model_validator(mode="after")
    def _check(self) -> "DemoConfig":
        if self.scenario not in SCENARIOS or self.scenario in ("stationary", "label-shift"):
            raise ValueError(f"scenario must be a covariate drift: one of "
                             f"{', '.join(s for s in SCENARIOS if s not in ('stationary', 'label-shift'))}")
        if self.corruption not in CORRUPTIONS:
            raise ValueError(f"corruption must be one of {', '.join(CORRUPTIONS)}")
        for name, sev in self.mixture:
            if name not in CORRUPTIONS or not 1 <= sev <= 5:
                raise ValueError(f"mixture entry ({name!r}, {sev}) is not a known corruption at severity 1..5")
        return self

    @classmethod
    def quick_defaults(cls) -> dict:
        """Smaller and faster: fewer epochs and labels (the cycle still runs end to end)."""
        return {"epochs": 1, "retrain_epochs": 1, "budget": 120, "clean_steps": 4, "recovery_steps": 6,
                "min_window": 200, "step_interval_s": 0.2, "filter_generic_base": 4000, "filter_adapt_base": 1000,
                "filter_pool_limit": 600}

    @property
    def run_dir(self) -> Path:
        return self.work_dir / self.run
