"""Training on Ray Train: config, data assembly, the per-worker loop, the driver, RayJob rendering.

Entry points (imported lazily so ``import daic.training`` stays cheap):
``TrainConfig``, ``run_training`` (one Ray Train run), ``train_and_register`` and ``retrain``
(run, evaluate, register a version), ``rayjob.render_rayjob`` (KubeRay manifest).
"""
from __future__ import annotations

import importlib

_LAZY = {
    "TrainConfig": "daic.training.config",
    "run_training": "daic.training.trainer",
    "TrainRun": "daic.training.trainer",
    "train_and_register": "daic.training.workflow",
    "retrain": "daic.training.workflow",
    "Outcome": "daic.training.workflow",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'daic.training' has no attribute {name!r}")
