"""Semi-supervised retraining pieces (daic.training.semi_supervised) and their place in the loop.

Pure tensor code against known truth with fixed seeds; the loop test runs ``daic.training.loop.fit``
on a few hundred images without Ray (the worker calls the same function under Ray Train).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from daic.models.networks import build
from daic.training.config import TrainConfig
from daic.training.semi_supervised import (UnlabeledPool, adapt_batchnorm, bn_adaptation_images, check_unlabeled,
                                           consistency_loss, has_batchnorm, select_pseudo_labels, strong_augment,
                                           weak_augment)


def _images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 28, 28), dtype=np.float32)


def test_pseudo_labels_keep_exactly_the_inputs_at_or_above_the_threshold():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    scores = np.array([0.95, 0.5, 0.9, 0.89])
    keep, labels = select_pseudo_labels(probs, scores, 0.9)
    assert keep.tolist() == [0, 2]
    assert labels.tolist() == [0, 0]
    with pytest.raises(ValueError, match="as many"):
        select_pseudo_labels(probs, scores[:3], 0.9)


def test_unlabeled_pool_is_validated_by_field():
    with pytest.raises(ValueError, match="images"):
        check_unlabeled({}, "k.npz")
    with pytest.raises(ValueError, match=r"\(N, 28, 28\)"):
        check_unlabeled({"images": np.zeros((2, 27, 28), np.float32)}, "k.npz")
    with pytest.raises(ValueError, match="p_correct"):
        check_unlabeled({"images": _images(3), "p_correct": np.array([0.1, 2.0, 0.3])}, "k.npz")
    pool = check_unlabeled({"images": _images(3), "p_correct": np.array([0.1, 0.2, 0.3])}, "k.npz")
    assert pool.images.shape == (3, 28, 28)


def test_config_needs_the_pool_for_any_semi_supervised_option():
    for option in ({"pseudo_label_threshold": 0.9}, {"consistency_weight": 1.0}, {"bn_adapt": "pool"}):
        with pytest.raises(ValueError, match="unlabeled_key"):
            TrainConfig(**option)
    with pytest.raises(ValueError, match="unlabeled_key"):
        TrainConfig(unlabeled_key="/abs.npz")
    TrainConfig(unlabeled_key="cycles/c/unlabeled.npz", consistency_weight=1.0, bn_adapt="pool+base")


def test_augmentations_keep_shape_and_range_and_are_seeded():
    x = torch.as_tensor(_images(8))
    for aug in (weak_augment, strong_augment):
        a = aug(x, torch.Generator().manual_seed(1))
        b = aug(x, torch.Generator().manual_seed(1))
        assert a.shape == (8, 1, 28, 28)
        assert torch.equal(a, b)
        assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0 + 1e-6
    # A zero shift is the identity: the affine grid lands on pixel centres.
    from daic.training.semi_supervised import _affine

    same = _affine(x.unsqueeze(1), torch.zeros(8), torch.ones(8), torch.zeros(8, 2))
    assert torch.allclose(same, x.unsqueeze(1), atol=1e-5)
    # A whole-pixel shift moves the image by that pixel.
    moved = _affine(x.unsqueeze(1), torch.zeros(8), torch.ones(8), torch.tensor([[1.0, 0.0]] * 8))
    assert torch.allclose(moved[..., 1:], x.unsqueeze(1)[..., :-1], atol=1e-5)


def test_consistency_loss_is_masked_by_confidence_and_trains():
    torch.manual_seed(0)
    net = build("small_cnn")
    x = torch.as_tensor(_images(16))
    loss, kept = consistency_loss(net, x, threshold=1.0, gen=torch.Generator().manual_seed(0))
    assert float(kept) == 0.0 and float(loss.detach()) == 0.0
    loss, kept = consistency_loss(net, x, threshold=1e-6, gen=torch.Generator().manual_seed(0))
    assert float(kept) == 1.0 and float(loss) > 0.0
    loss.backward()
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in net.parameters())


def test_adabn_sets_running_statistics_to_the_pool_average():
    net = build("small_cnn")
    assert has_batchnorm(net) and not has_batchnorm(build("shadow_net"))
    images = _images(64, seed=3) * 0.3 + 0.5
    assert adapt_batchnorm(net, images, torch.device("cpu"), batch_size=64) == 2
    net.eval()
    first_conv, first_bn = net.features[0], net.features[1]
    with torch.no_grad():
        h = first_conv(torch.as_tensor(images).unsqueeze(1))
    assert torch.allclose(first_bn.running_mean, h.mean(dim=(0, 2, 3)), atol=1e-5)
    assert first_bn.momentum == 0.1  # restored
    assert adapt_batchnorm(build("shadow_net"), images, torch.device("cpu")) == 0


def test_bn_adaptation_images_mix_pool_and_base():
    pool = UnlabeledPool(_images(5, seed=1))
    base = _images(20, seed=2)
    assert bn_adaptation_images(pool, base, "pool", 0).shape[0] == 5
    mixed = bn_adaptation_images(pool, base, "pool+base", 0)
    assert mixed.shape[0] == 10 and np.array_equal(mixed[:5], pool.images)
    with pytest.raises(ValueError, match="bn_adapt"):
        bn_adaptation_images(pool, base, "target", 0)


def test_fit_uses_every_option_on_the_pool():
    from daic.training.loop import MAIN, fit

    rng = np.random.default_rng(0)
    images, labels = _images(96, seed=4), rng.integers(0, 10, 96)
    pool = UnlabeledPool(_images(48, seed=5), p_correct=np.r_[np.full(20, 0.99), np.full(28, 0.1)])
    config = TrainConfig(epochs=1, batch_size=32, num_workers=1, unlabeled_key="u.npz", pseudo_label_threshold=0.9,
                         consistency_weight=1.0, consistency_threshold=1e-6, bn_adapt="pool")
    seen = []
    result = fit(config, images, labels, n_base=64, device=torch.device("cpu"), unlabeled=pool,
                 on_epoch=lambda metrics, nets: seen.append(metrics))
    assert seen[-1]["pseudo_labels"] == 20.0
    # AdaBN ran last: the first BN layer's mean is the pool's.
    net = result.nets[MAIN]
    with torch.no_grad():
        h = net.features[0](torch.as_tensor(pool.images).unsqueeze(1))
    assert torch.allclose(net.features[1].running_mean, h.mean(dim=(0, 2, 3)), atol=1e-4)
