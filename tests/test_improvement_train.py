"""The train step's semi-supervised settings: validation, the cycle's unlabelled pool, the RayJob's
driver command line.

Real file store, real sidecar record writer and the real sample-operational step; the predictor that
"serves" the stream is a fixed function of the image (no model needed to test which inputs are
left unlabelled).
"""
from __future__ import annotations

import numpy as np
import pytest

from daic.components.train.logic import TrainConfig


@pytest.mark.parametrize("fields, match", [
    ({"pseudo_label_threshold": 0.9}, "unlabeled_limit"),
    ({"consistency_weight": 1.0}, "unlabeled_limit"),
    ({"bn_adapt": "pool"}, "unlabeled_limit"),
    ({"unlabeled_limit": 10, "bn_adapt": "target"}, "bn_adapt"),
    ({"unlabeled_limit": 10, "pseudo_label_threshold": 1.5}, "pseudo_label_threshold"),
    ({"unlabeled_limit": 10, "consistency_weight": -1.0}, "consistency_weight"),
    ({"unlabeled_limit": -1}, "unlabeled_limit"),
])
def test_semi_supervised_settings_are_validated_by_name(fields, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**fields)


def _predict(images: np.ndarray) -> dict[str, np.ndarray]:
    logits = np.stack([images[:, k, :].mean(axis=1) for k in range(10)], axis=1) * 10
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return {"probs": probs, "p_correct": images.mean(axis=(1, 2)).clip(0, 1)}


@pytest.fixture
def sampled_cycle(tmp_path):
    from daic.components.sample_operational import logic as sample
    from daic.components.testing.operational import write_operational
    from daic.data.scenarios import Scenario, ScenarioSpec
    from daic.storage import open_store

    store = open_store(f"file://{tmp_path / 'store'}")
    spec = ScenarioSpec(name="sudden", corruption="fog", severity=3, batch_size=50, n_steps=6, drift_start=2)
    stream = write_operational(store, "mnist", Scenario(spec), _predict, t0=1_700_000_000.0, step_seconds=60.0)
    sample.run(store, sample.SampleConfig(budget=40, seed=3, since="1700000000", cycle="c1"))
    return store, stream


def test_the_unlabelled_pool_is_the_window_less_every_sampled_input(sampled_cycle):
    from daic.components import cycle_store
    from daic.components.train.unlabeled import write_unlabeled_pool

    store, stream = sampled_cycle
    record = cycle_store.read_sample(store, "c1")
    sampled = set(record.sampled_ids.astype(str))
    key, n = write_unlabeled_pool(store, "c1", limit=10_000, seed=0)
    pool = store.get_arrays(key)
    ids = pool["ids"].astype(str)
    assert n == len(ids) == 300 - len(sampled)  # 6 steps x 50 inputs, none sampled
    assert not sampled & set(ids) and len(set(ids)) == n
    position = {i: k for k, i in enumerate(stream.ids)}
    rows = np.array([position[i] for i in ids])
    np.testing.assert_array_equal(pool["images"], stream.images[rows])
    np.testing.assert_allclose(pool["p_correct"], _predict(stream.images[rows])["p_correct"], rtol=1e-6)
    # A limit draws that many, reproducibly by seed.
    _, n_small = write_unlabeled_pool(store, "c1", limit=25, seed=1)
    first = store.get_arrays(key)["ids"]
    write_unlabeled_pool(store, "c1", limit=25, seed=1)
    assert n_small == 25 and np.array_equal(first, store.get_arrays(key)["ids"])
    assert not sampled & set(first.astype(str))


def test_the_rayjob_driver_gets_the_semi_supervised_options():
    from daic.commands.retrain import command as retrain_command
    from daic.components.train.registry_access import rayjob_entrypoint

    config = TrainConfig(unlabeled_limit=500, pseudo_label_threshold=0.9, consistency_weight=0.5, bn_adapt="pool")
    argv = rayjob_entrypoint("file:///s", "c1", "mnist", "v0001", "labels/", config, "cycles/c1/out.json",
                             unlabeled_key="cycles/c1/unlabeled.npz")
    params = retrain_command.make_context("retrain", argv[2:]).params
    assert params["unlabeled_key"] == "cycles/c1/unlabeled.npz"
    assert (params["pseudo_label_threshold"], params["consistency_weight"], params["bn_adapt"]) == (0.9, 0.5, "pool")
    plain = rayjob_entrypoint("file:///s", "c1", "mnist", "v0001", "labels/", TrainConfig(), "k.json")
    assert "--unlabeled" not in plain
