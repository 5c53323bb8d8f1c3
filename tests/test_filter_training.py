"""The input filter (issue 21): its objectives and gate against known truth, and a real, short
Ray Train run (Ray Train's local mode, one worker; the same trainer as the classifier) on tiny
data that registers a filter version wrapping a registered classifier, then a label-free
fine-tune on an operational pool that registers its child."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from daic.data.corruptions import corrupt
from daic.data.mnist import load_split
from daic.filters.config import HELD_OUT, TRAIN_CORRUPTIONS, FilterConfig
from daic.filters.data import corrupt_mixture
from daic.filters.gate import calibrate_threshold, residual_score, select
from daic.filters.network import FilterNet
from daic.filters.objective import information_maximisation
from daic.models.card import DataLineage
from daic.models.networks import build
from daic.models.reference import ReferenceConfig
from daic.models.registry import ModelRegistry
from daic.storage import open_store

SMALL_REFERENCE = ReferenceConfig(val_limit=64, shift_per_condition=2, corruptions=("fog",))


def test_information_maximisation_known_values():
    # Uniform outputs: conditional entropy log 10, marginal log 10 -> 0.
    assert float(information_maximisation(torch.zeros(4, 10))) == pytest.approx(0.0, abs=1e-6)
    # Confident and spread over two classes: 0 - log 2.
    logits = torch.full((2, 10), -1e4)
    logits[0, 3] = logits[1, 7] = 0.0
    assert float(information_maximisation(logits)) == pytest.approx(-math.log(2), abs=1e-5)
    # Confident but collapsed onto one class: 0 - 0 (worse than spread: the diversity term).
    collapsed = torch.full((2, 10), -1e4)
    collapsed[:, 3] = 0.0
    assert float(information_maximisation(collapsed)) == pytest.approx(0.0, abs=1e-5)


def test_gate_selects_by_residual_and_threshold_bounds_the_clean_rate():
    rng = np.random.default_rng(0)
    clean_scores = rng.random(10_000)
    t = calibrate_threshold(clean_scores, 0.01)
    assert (clean_scores > t).mean() == pytest.approx(0.01, abs=0.002)
    images = np.zeros((3, 28, 28), np.float32)
    filtered = images.copy()
    filtered[1] += 0.5  # changed a lot: off-distribution
    filtered[2] += 0.001  # barely changed
    out, mask = select(images, filtered, "gated", threshold=0.01)
    assert mask.tolist() == [False, True, False]
    assert np.array_equal(out[1], filtered[1]) and np.array_equal(out[2], images[2])
    assert select(images, filtered, "always", 0.01)[1].all() and not select(images, filtered, "off", 0.01)[1].any()
    assert residual_score(images, filtered)[1] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="gate mode"):
        select(images, filtered, "sometimes", 0.01)


def test_held_out_corruptions_are_not_trained_on_and_the_mixture_is_deterministic():
    assert not set(HELD_OUT) & set(TRAIN_CORRUPTIONS)
    assert {"impulse_noise", "motion_blur", "fog"} <= set(HELD_OUT)
    with pytest.raises(ValueError, match="unknown corruptions"):
        FilterConfig(classifier_version="v0001", corruptions=("nope",))
    # the fit-only shift families can be trained on too (measured, not the default: docs/benchmarks.md)
    assert FilterConfig(classifier_version="v0001", corruptions=("randconv",)).corruptions == ("randconv",)
    with pytest.raises(ValueError, match="pool_key"):
        FilterConfig(classifier_version="v0001", pool_key="/abs")
    images = load_split("train").images[:40]
    a = corrupt_mixture(images, ("gaussian_noise",), 0.5, seed=3)
    assert np.array_equal(a, corrupt_mixture(images, ("gaussian_noise",), 0.5, seed=3))
    r = corrupt_mixture(images, ("randwarp",), 0.0, seed=3)
    assert np.array_equal(r, corrupt_mixture(images, ("randwarp",), 0.0, seed=3)) and not np.array_equal(r, images)
    changed = np.abs(a - images).reshape(40, -1).max(axis=1) > 0
    assert 0 < changed.sum() < 40  # some kept clean, some corrupted


def test_untrained_filter_is_the_identity():
    # FilterNet() is the plain U-Net (a config switches the canonical form and the search on).
    x = torch.from_numpy(np.array(load_split("val").images[:8]))
    assert torch.allclose(FilterNet()(x), x)


def test_filter_trains_on_ray_registers_with_lineage_and_adapts_without_labels(tmp_path):
    pytest.importorskip("ray")
    from daic.filters.registry import FilterRegistry
    from daic.filters.workflow import train_filter

    store = open_store(f"file://{tmp_path / 'store'}")
    classifiers = ModelRegistry(store, "mnist")
    torch.manual_seed(0)
    champion = classifiers.register(model=build("small_cnn"), shadow=build("shadow_net"),
                                    data=DataLineage(dataset="mnist", base_count=0), reference_config=SMALL_REFERENCE)
    config = FilterConfig(classifier_version=champion.version, epochs=2, base_limit=96, batch_size=32, val_limit=64)
    generic = train_filter(store, config, notes={"purpose": "generic"})
    assert generic.run.mode == "in-process"
    card = generic.card
    assert (card.name, card.version, card.parent) == ("mnist-filter", "v0001", None)
    assert card.data.notes["wraps"] == "mnist/v0001" and card.data.notes["pool_count"] == "0"
    assert card.data.notes["purpose"] == "generic" and card.data.base_count == 96
    assert len(card.history) == 2 and card.history[-1]["restore_loss"] >= 0
    assert 0 <= card.metrics["val_gated_share"] <= 0.1 and card.metrics["gate_threshold"] >= 0
    assert any(k.endswith("filter.pt") for k in store.list("checkpoints/mnist-filter/"))
    registry = FilterRegistry(store, "mnist")
    assert registry.wraps("v0001") == "v0001"
    trained = registry.load_filter("v0001")
    assert not torch.equal(trained.out.weight, FilterNet().out.weight)  # left the identity

    # The cycle's pool: unlabeled corrupted operational inputs (no labels stored).
    test = load_split("test")
    store.put_arrays("cycles/c-1/pool.npz", images=corrupt(test.images[:64], "fog", 4, seed=1))
    adapted = train_filter(store, config.model_copy(update={"pool_key": "cycles/c-1/pool.npz",
                                                            "warm_start_from": "v0001", "epochs": 1}),
                           notes={"cycle": "c-1"})
    assert (adapted.card.version, adapted.card.parent) == ("v0002", "v0001")
    assert adapted.card.data.notes["pool_count"] == "64" and adapted.card.data.labeled_batches == []
    assert adapted.card.history[-1]["pool_loss"] != 0.0
    assert registry.ancestry("v0002") == ["v0002", "v0001"]
    # A filter for a classifier version that does not exist is refused before Ray starts.
    with pytest.raises(Exception, match="v0009"):
        train_filter(store, config.model_copy(update={"classifier_version": "v0009"}))
