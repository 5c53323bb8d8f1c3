"""The whole pipeline under kfp.local (each step a subprocess of this interpreter).

The first test needs no model registry: on the drifted stream with an operator threshold below the
estimate, the run stops after estimate-accuracy (the drop-confirmed condition is false). The second
is the issue's done-when check at test size: a champion trained on Ray, a drifted stream it serves
badly, the simulated labeler, a warm-started retraining on Ray with the labeled batch, and the
challenger promoted because it is better on the drifted distribution -- measured here again on
drifted inputs that neither the labelers nor the trainer saw.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from daic.components import cycle_store
from daic.pipelines.local_run import resolve_params, run_pipeline

SPEC = {"name": "sudden", "seed": 3, "batch_size": 50, "n_steps": 8, "drift_start": 4,
        "corruption": "translate", "severity": 3}


@pytest.fixture
def drifted_store(tmp_path):
    """Operational records of the drifted stream, served by a nearest-centroid classifier."""
    from daic.data.mnist import load_split
    from daic.data.scenarios import ScenarioSpec, Scenario
    from daic.components.testing.operational import write_operational
    from daic.storage import open_store

    train = load_split("train")
    x, y = train.images[:5000].reshape(5000, -1), train.labels[:5000]
    centroids = np.stack([x[y == c].mean(axis=0) for c in range(10)])

    def predict(images):
        logits = -0.5 * ((images.reshape(len(images), -1)[:, None, :] - centroids[None]) ** 2).sum(-1)
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        return {"probs": p / p.sum(axis=1, keepdims=True)}

    store = open_store(f"file://{tmp_path / 'store'}")
    write_operational(store, "mnist", Scenario(ScenarioSpec(**SPEC)), predict)
    return store, tmp_path


def test_unknown_parameter_is_refused():
    with pytest.raises(ValueError, match="unknown pipeline parameter\\(s\\) budgett"):
        resolve_params({"budgett": 3})


def test_local_run_stops_when_the_drop_is_not_confirmed(drifted_store):
    store, tmp = drifted_store
    result = run_pipeline({
        "store_url": store.url, "cycle_id": "c-local", "budget": 60, "sampler": "srs",
        "since": str(1_700_000_000 + 4 * 60), "simulated_scenario": json.dumps(SPEC),
        "threshold": 0.05, "labeling_poll_s": 1.0,
    }, pipeline_root=tmp / "kfp")
    assert result["cycle"] == "c-local"
    assert result["drop_confirmed"] is False and result["drop_outcome"] == "no-drop"
    assert result["labels_used"] == 60
    assert store.exists(cycle_store.key("c-local", "estimate.json"))
    assert not store.exists(cycle_store.key("c-local", "train.json"))  # the condition skipped training


# -- the whole cycle at test size ---------------------------------------------------------------------
E2E_SPEC = {"name": "sudden", "seed": 5, "batch_size": 100, "n_steps": 4, "drift_start": 1,
            "corruption": "translate", "severity": 3}
T0 = 1_700_000_000.0


@pytest.fixture(scope="module")
def champion_and_stream(tmp_path_factory):
    """A registered SmallCNN champion (3,000 base images, 1 epoch) and 300 drifted inputs it served.

    The champion is trained with the trainer's own loop (``daic.training.loop.fit``, what each Ray
    worker runs) in this process: the pipeline's retraining is the Ray run under test, and a second
    Ray start here would only add its fixed cost.
    """
    import torch

    from daic.components.testing.operational import torch_predictor, write_operational
    from daic.data.mnist import load_split
    from daic.data.scenarios import Scenario, ScenarioSpec
    from daic.models.card import DataLineage
    from daic.models.reference import ReferenceConfig
    from daic.models.registry import ModelRegistry
    from daic.storage import open_store
    from daic.training.config import TrainConfig
    from daic.training.loop import fit
    from daic.training.workflow import clean_test_metrics

    tmp = tmp_path_factory.mktemp("e2e")
    store = open_store(f"file://{tmp / 'store'}")
    train = load_split("train")
    config = TrainConfig(epochs=1, base_limit=3000)
    nets = fit(config, train.images[:3000], train.labels[:3000], n_base=3000, device=torch.device("cpu")).nets
    model, shadow = nets["model"].eval(), nets["shadow"].eval()
    registry = ModelRegistry(store, "mnist")
    registry.register(model=model, shadow=shadow, data=DataLineage(dataset="mnist", base_count=3000),
                      metrics=clean_test_metrics(model, shadow, "mnist", limit=2000),
                      train_config=config.model_dump(mode="json"),
                      reference_config=ReferenceConfig(val_limit=500, shift_per_condition=0))
    registry.promote("v0001", expected_current=None)
    spec = ScenarioSpec(**E2E_SPEC)
    stream = write_operational(store, "mnist", Scenario(spec), torch_predictor(model), t0=T0)
    return store, spec, stream, tmp


def test_local_run_retrains_and_promotes_a_better_model(champion_and_stream):
    from daic.components.testing.drifted import drifted_holdout
    from daic.data.mnist import load_split
    from daic.models.inference import accuracy
    from daic.models.registry import ModelRegistry

    store, spec, stream, tmp = champion_and_stream
    result = run_pipeline({
        "store_url": store.url, "cycle_id": "c-e2e", "budget": 100, "since": str(T0 + 60),
        "simulated_scenario": json.dumps(E2E_SPEC), "labeling_poll_s": 1.0,
        # a small retraining: 2,000 base images + the ~70 labeled training inputs x 10, 2 epochs
        "epochs": 2, "learning_rate": 4e-3, "train_base_limit": 2000, "reference_shift_per_condition": 0,
        "clean_limit": 2000,
    }, pipeline_root=tmp / "kfp")

    # sample -> labels -> estimate: the drop is confirmed against the champion's own test accuracy
    estimate = store.get_json(cycle_store.key("c-e2e", "estimate.json"))
    assert result["drop_confirmed"] is True and estimate["decision"]["outcome"] == "confirmed"
    assert estimate["srs_labels_needed"] >= 1
    # train (warm start from the champion with the labeled batch) -> evaluate -> deploy
    registry = ModelRegistry(store, "mnist")
    card = registry.card("v0002")
    assert card.parent == "v0001" and card.data.notes == {"cycle": "c-e2e"}
    assert [b.key for b in card.data.labeled_batches] == ["labels/c-e2e/batch-0.npz"]
    assert card.data.base_count == 2000 and card.data.operational_oversample == 10
    evaluation = store.get_json(cycle_store.key("c-e2e", "evaluation.json"))
    assert result["promote"] is True, evaluation["decision"]["reason"]
    assert (result["champion_version"], result["challenger_version"]) == ("v0001", "v0002")
    assert registry.champion() == "v0002"
    assert store.get_json(cycle_store.key("c-e2e", "deploy.json"))["previous_version"] == "v0001"

    # Better on drifted inputs nobody labeled or trained on, and no worse on clean ones.
    old, _ = registry.load_networks("v0001")
    new, _ = registry.load_networks("v0002")
    images, labels = drifted_holdout(spec, stream, n=1000)
    drifted_old, drifted_new = accuracy(old, images, labels), accuracy(new, images, labels)
    test = load_split("test")
    clean_old = accuracy(old, test.images[:2000], test.labels[:2000])
    clean_new = accuracy(new, test.images[:2000], test.labels[:2000])
    print(f"drifted {drifted_old:.3f} -> {drifted_new:.3f}; clean {clean_old:.3f} -> {clean_new:.3f}")
    assert drifted_new > drifted_old + 0.10
    assert clean_new >= clean_old - 0.01
