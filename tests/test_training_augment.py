"""Corruption-robust retraining (daic.training.augment) and its place in the loop and the train step.

Pure tensor code with fixed seeds; the loop test runs ``daic.training.loop.fit`` on a few dozen
images without Ray (the Ray worker calls the same function).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from daic.training.augment import OPS, augment_batch, augmix, chain, weak_affine
from daic.training.config import TrainConfig


def _images(n: int, seed: int = 0) -> torch.Tensor:
    # Digit-like: a bright square on black, so geometry and intensity ops visibly change pixels.
    x = np.zeros((n, 1, 28, 28), np.float32)
    x[:, :, 8:20, 10:18] = np.random.default_rng(seed).uniform(0.6, 1.0, (n, 1, 1, 1))
    return torch.as_tensor(x)


@pytest.mark.parametrize("name", sorted(OPS))
def test_every_op_keeps_shape_changes_pixels_and_is_seeded(name):
    x = _images(6)
    a = OPS[name](x.clone(), torch.Generator().manual_seed(3))
    b = OPS[name](x.clone(), torch.Generator().manual_seed(3))
    assert a.shape == x.shape and torch.isfinite(a).all()
    assert torch.equal(a, b)
    assert not torch.allclose(a, x)


@pytest.mark.parametrize("mix", [chain, augmix])
def test_chains_and_augmix_stay_in_range(mix):
    x = _images(16)
    out = mix(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert not torch.allclose(out, x)


def test_batch_distorts_only_a_share_of_base_rows_and_gives_operational_rows_a_weak_view():
    x = _images(200, seed=1)
    operational = torch.zeros(200, dtype=torch.bool)
    operational[150:] = True
    out = augment_batch(x, operational, "chain", 0.5, torch.Generator().manual_seed(0))
    changed = (out - x).abs().flatten(1).amax(1) > 1e-6
    base_changed = changed[:150].float().mean().item()
    assert 0.3 < base_changed < 0.7  # about half the base rows
    assert changed[150:].all()  # every operational row gets its weak view
    # The weak view is small: a shifted/rotated copy keeps most of its mass.
    assert torch.allclose(out[150:].sum(dim=(1, 2, 3)), x[150:].sum(dim=(1, 2, 3)), rtol=0.35)
    none = augment_batch(x, operational, "augmix", 0.0, torch.Generator().manual_seed(0))
    assert torch.equal(none[:150], x[:150])
    assert augment_batch(x, operational, "off", 1.0, torch.Generator()) is x


def test_batch_accepts_n_h_w_and_rejects_bad_settings():
    x = _images(4).squeeze(1)
    out = augment_batch(x, torch.zeros(4, dtype=torch.bool), "augmix", 1.0, torch.Generator().manual_seed(0))
    assert out.shape == (4, 28, 28)
    with pytest.raises(ValueError, match="augment must be"):
        augment_batch(x, torch.zeros(4, dtype=torch.bool), "randaugment", 0.5, torch.Generator())
    with pytest.raises(ValueError, match="augment_share"):
        augment_batch(x, torch.zeros(4, dtype=torch.bool), "chain", 1.5, torch.Generator())
    with pytest.raises(ValueError, match="operational mask"):
        augment_batch(x, torch.zeros(3, dtype=torch.bool), "chain", 0.5, torch.Generator())
    with pytest.raises(ValueError):
        TrainConfig(augment="randaugment")
    with pytest.raises(ValueError):
        TrainConfig(augment_share=1.5)


def test_weak_view_is_a_small_geometric_change():
    x = _images(32)
    out = weak_affine(x, torch.Generator().manual_seed(0))
    # Never more than ~2 px shift and 10 degrees: the square's centre of mass moves little.
    grid = torch.arange(28.0)
    def centre(t):
        m = t.sum(dim=(1, 2, 3))
        return (t.sum(dim=(1, 2)) * grid).sum(-1).squeeze(-1) / m
    assert (centre(out) - centre(x)).abs().max() < 3.0


def test_fit_with_augmentation_trains_on_distorted_base_examples():
    from daic.training.loop import MAIN, fit

    rng = np.random.default_rng(0)
    images = np.random.default_rng(4).random((96, 28, 28), dtype=np.float32)
    labels = rng.integers(0, 10, 96)
    out = {}
    for mode in ("off", "augmix"):
        config = TrainConfig(epochs=1, batch_size=32, num_workers=1, augment=mode, augment_share=1.0)
        result = fit(config, images, labels, n_base=64, device=torch.device("cpu"))
        out[mode] = result.nets[MAIN].head.weight.detach().clone()
    # Same seed, same order: only the augmentation differs, so the trained weights differ.
    assert not torch.allclose(out["off"], out["augmix"])


def test_retrain_path_defaults_to_select_and_passes_it_on():
    from daic.components.train.logic import TrainConfig as StepConfig
    from daic.components.train.registry_access import rayjob_entrypoint, training_fields
    from daic.training.workflow import RETRAIN_DEFAULTS

    step = StepConfig()
    assert step.augment == "select" and step.operational_share == 0.3
    assert RETRAIN_DEFAULTS["augment"] == "select" and RETRAIN_DEFAULTS["operational_share"] == 0.3
    fields = training_fields(step)
    assert TrainConfig(**fields).augment == "select" and TrainConfig(**fields).operational_share == 0.3
    assert training_fields(StepConfig(operational_share=0.0))["operational_share"] is None
    # The RayJob's driver is `daic retrain`: the step's recipe and share reach it, and the CLI takes them.
    from click.testing import CliRunner

    from daic.commands.retrain import command as retrain_cli

    argv = rayjob_entrypoint("s3://b", "c1", "mnist", "v0001", "labels/", step, "cycles/c1/o.json")
    assert argv[argv.index("--augment") + 1] == "select" and argv[argv.index("--operational-share") + 1] == "0.3"
    usage = CliRunner().invoke(retrain_cli, ["--help"]).output
    assert "select" in usage and "--operational-share" in usage
    fields = training_fields(StepConfig(augment="chain", augment_share=0.25))
    assert fields["augment"] == "chain" and fields["augment_share"] == 0.25
    TrainConfig(**{k: v for k, v in fields.items()})  # valid trainer fields
    argv = rayjob_entrypoint("s3://b", "c1", "mnist", "v0001", "labels/", StepConfig(augment="off"), "cycles/c1/o.json")
    assert argv[argv.index("--augment") + 1] == "off"
    with pytest.raises(ValueError, match="augment"):
        StepConfig(augment="mixup")
    with pytest.raises(ValueError, match="augment_share"):
        StepConfig(augment_share=-0.1)


class _MeanNet(torch.nn.Module):
    """Class 3 with high confidence for bright images, uniform logits for dark ones."""

    def forward(self, x):
        m = x.reshape(x.shape[0], -1).mean(1)
        logits = torch.zeros(x.shape[0], 10)
        logits[:, 3] = 5.0 * (m > 0.3).float()  # softmax 0.943
        return logits


def test_self_training_keeps_only_confident_inputs_that_agree_under_shifts():
    from daic.training.semi_supervised import agreed_pseudo_labels

    images = np.zeros((8, 28, 28), np.float32)
    images[:5] = 0.8  # confident class 3 in every view
    keep, labels = agreed_pseudo_labels(_MeanNet(), images, 0.9, torch.device("cpu"), seed=0)
    assert keep.tolist() == [0, 1, 2, 3, 4]
    assert labels.tolist() == [3] * 5
    keep, _ = agreed_pseudo_labels(_MeanNet(), images, 0.95, torch.device("cpu"))
    assert keep.size == 0  # 0.943 < 0.95: none is confident enough


def test_fit_runs_a_self_training_round_after_the_epochs():
    from daic.training.loop import fit
    from daic.training.semi_supervised import UnlabeledPool

    with pytest.raises(ValueError, match="unlabeled_key"):
        TrainConfig(self_training_rounds=1)
    rng = np.random.default_rng(0)
    images = np.random.default_rng(4).random((96, 28, 28), dtype=np.float32)
    labels = rng.integers(0, 10, 96)
    pool = UnlabeledPool(np.random.default_rng(5).random((40, 28, 28), dtype=np.float32))
    config = TrainConfig(epochs=1, batch_size=32, num_workers=1, unlabeled_key="u.npz", augment="augmix",
                         self_training_rounds=1, self_training_threshold=1e-6, self_training_epochs=2)
    seen = []
    fit(config, images, labels, n_base=64, device=torch.device("cpu"), unlabeled=pool,
        on_epoch=lambda metrics, nets: seen.append(metrics))
    assert [m["epoch"] for m in seen] == [1, 2, 3]
    # A threshold of ~0 keeps every pool input whose views agree: some, and at most all 40.
    assert 0 < seen[-1]["self_training_labels"] <= 40
    assert "self_training_labels" not in seen[0]


def test_train_step_passes_self_training_with_its_pool():
    from daic.components.train.logic import TrainConfig as StepConfig
    from daic.components.train.registry_access import rayjob_entrypoint, semi_supervised_fields

    with pytest.raises(ValueError, match="unlabeled_limit"):
        StepConfig(self_training_rounds=1)
    with pytest.raises(ValueError, match="self_training_rounds"):
        StepConfig(self_training_rounds=9, unlabeled_limit=10)
    step = StepConfig(self_training_rounds=1, self_training_threshold=0.8, unlabeled_limit=100)
    fields = semi_supervised_fields(step, "cycles/c1/unlabeled.npz")
    assert fields["self_training_rounds"] == 1 and fields["self_training_threshold"] == 0.8
    TrainConfig(**fields)
    argv = rayjob_entrypoint("s3://b", "c1", "mnist", "v0001", "labels/", step, "cycles/c1/o.json",
                             "cycles/c1/unlabeled.npz")
    assert argv[argv.index("--self-training-rounds") + 1] == "1"
