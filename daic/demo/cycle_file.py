"""The AssessmentCycle the demo's local controller runs: the same resource a cluster user applies."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import yaml

from daic.data.scenarios import ScenarioSpec

from .config import DemoConfig


def cycle_resource(cfg: DemoConfig, scenario: ScenarioSpec, sidecar_url: str, store_url: str,
                   since: float, generic_filter: str | None = None) -> dict:
    """An AssessmentCycle watching the local sidecar; one cycle, promoted automatically; with remedy
    ``both`` the input filter goes in while retraining runs (quick adaptation settings)."""
    parameters = {
        "store_url": store_url,
        "since": str(since),  # sample only this run's traffic
        "epochs": cfg.retrain_epochs,
        "clean_limit": 2000,  # evaluate's clean check on 2,000 test images keeps the cycle short
        "label_round_size": cfg.label_round_size,  # rounds: the design adapts between them (docs/pipeline.md)
        "deploy_target": "local",
        "filter_epochs": cfg.filter_adapt_epochs,
        "filter_base_limit": cfg.filter_adapt_base,
        "filter_pool_limit": cfg.filter_pool_limit,
    }
    if generic_filter:
        parameters["filter_generic_version"] = generic_filter
    if cfg.labeler == "simulated":
        parameters["simulated_scenario"] = json.dumps(dataclasses.asdict(scenario))
    return {
        "apiVersion": "daic.dev/v1alpha1",
        "kind": "AssessmentCycle",
        "metadata": {"name": cfg.run.lower().replace("_", "-").replace(".", "-")[:63]},
        "spec": {
            "deployment": {"name": "mnist", "modelName": cfg.model_name},
            "estimate": {"source": "sidecar", "url": sidecar_url.rstrip("/") + "/estimate",
                         "staleAfterSeconds": 120},
            "trigger": {"mode": "absolute", "threshold": cfg.threshold, "minWindow": cfg.min_window,
                        "consecutive": 2, "hysteresis": 0.02, "whenUntrusted": True},
            "labeling": {"backend": cfg.labeler, "budget": cfg.budget, "sampler": "stratified",
                         "targetHalfWidth": 0.05, "timeoutSeconds": 3600},
            "pipeline": {"parameters": parameters},
            "resources": {"rayWorkers": 2, "cpusPerWorker": 1, "gpusPerWorker": 0, "memoryPerWorker": "2Gi"},
            "promotion": {"mode": "auto", "canaryShare": 0, "canarySeconds": 0},
            "cooldownSeconds": 3600,
            "remedy": cfg.remedy,
        },
    }


def write_cycle_file(path: Path, resource: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(resource, sort_keys=False))
    return path
