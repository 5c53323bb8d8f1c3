"""The assess-and-improve pipeline under kfp.local with the filter remedy (issue 21): a real run of
every step (each a subprocess of this interpreter) on a small champion and a drifted stream it
served badly; with ``remedy=filter`` the fit-filter step adapts a filter on the cycle's unlabeled
pool (a short in-process Ray Train run), judges it on the labels, and the retraining branch is
skipped; the pipeline promotes by itself here, so a filter that wins goes in service at once."""
from __future__ import annotations

import json

import pytest

from daic.components import cycle_store
from daic.pipelines.local_run import run_pipeline

SPEC = {"name": "sudden", "seed": 5, "batch_size": 100, "n_steps": 4, "drift_start": 1,
        "corruption": "gaussian_noise", "severity": 5}
T0 = 1_700_000_000.0


def test_remedy_filter_fits_and_judges_the_filter_and_skips_retraining(tmp_path):
    pytest.importorskip("ray")
    import torch

    from daic.components.testing.operational import torch_predictor, write_operational
    from daic.data.mnist import load_split
    from daic.data.scenarios import Scenario, ScenarioSpec
    from daic.filters.registry import FilterRegistry, read_service
    from daic.models.card import DataLineage
    from daic.models.reference import ReferenceConfig
    from daic.models.registry import ModelRegistry
    from daic.storage import open_store
    from daic.training.config import TrainConfig
    from daic.training.loop import fit
    from daic.training.workflow import clean_test_metrics

    store = open_store(f"file://{tmp_path / 'store'}")
    train = load_split("train")
    config = TrainConfig(epochs=1, base_limit=2000)
    nets = fit(config, train.images[:2000], train.labels[:2000], n_base=2000, device=torch.device("cpu")).nets
    model, shadow = nets["model"].eval(), nets["shadow"].eval()
    registry = ModelRegistry(store, "mnist")
    registry.register(model=model, shadow=shadow, data=DataLineage(dataset="mnist", base_count=2000),
                      metrics=clean_test_metrics(model, shadow, "mnist", limit=1000),
                      train_config=config.model_dump(mode="json"),
                      reference_config=ReferenceConfig(val_limit=200, shift_per_condition=0))
    registry.promote("v0001", expected_current=None)
    write_operational(store, "mnist", Scenario(ScenarioSpec(**SPEC)), torch_predictor(model), t0=T0)

    result = run_pipeline({
        "store_url": store.url, "cycle_id": "c-filter", "budget": 100, "since": str(T0 + 60),
        "simulated_scenario": json.dumps(SPEC), "labeling_poll_s": 1.0, "remedy": "filter", "threshold": 0.9,
        "filter_epochs": 1, "filter_base_limit": 128, "filter_pool_limit": 128,
    }, pipeline_root=tmp_path / "kfp")

    assert result["drop_confirmed"] is True
    record = store.get_json(cycle_store.key("c-filter", "filter.json"))
    assert record["remedy"] == "filter" and record["retrain"] is False and record["served_by"] == "pipeline"
    assert 0 < record["pool_count"] <= 128 and record["labels"] > 0
    assert result["filter_decision"] == record["decision"] in ("deploy", "none")
    card = FilterRegistry(store, "mnist").card(record["filter_version"])
    assert card.train_config["classifier_version"] == "v0001" and card.data.notes["cycle"] == "c-filter"
    served = read_service(store, "mnist")
    assert served.version == (record["filter_version"] if record["decision"] == "deploy" else None)
    assert not store.exists(cycle_store.key("c-filter", "train.json")), "remedy filter: no retraining"
    assert registry.champion() == "v0001"
