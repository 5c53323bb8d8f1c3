"""The whole pipeline under kfp.local (each step a subprocess of this interpreter).

The first test needs no model registry: on the drifted stream with an operator threshold below the
estimate, the run stops after estimate-accuracy (the drop-confirmed condition is false). The second
is the issue's done-when check at test size: a champion, a drifted stream it serves badly, the
simulated labeler, and a retrained champion that is better on the drifted distribution.
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
