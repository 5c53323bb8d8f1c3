"""The filter-wrapped champion as the retraining's teacher (issues 21 and 16): the pool carries the
teacher's labels and confidence (daic.filters.teacher), ``pseudo_label_score="teacher"`` trains on
the confident ones, repeated to ``pseudo_label_share`` of the base part. Known truth, fixed seeds;
the loop runs without Ray (the Ray worker calls the same ``fit``)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from daic.filters.network import FilterNet
from daic.filters.teacher import teacher_arrays
from daic.training.config import TrainConfig
from daic.training.loop import pseudo_repeats
from daic.training.semi_supervised import UnlabeledPool, check_unlabeled, pseudo_labeled


def _images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 28, 28), dtype=np.float32)


def test_the_teacher_arrays_are_validated_by_field():
    images = _images(3)
    ok = {"images": images, "teacher_labels": np.array([1, 2, 3]), "teacher_confidence": np.array([0.9, 0.5, 1.0])}
    pool = check_unlabeled(ok, "t.npz")
    assert pool.teacher_labels.dtype == np.int64 and pool.teacher_confidence.tolist() == [0.9, 0.5, 1.0]
    with pytest.raises(ValueError, match="go together"):
        check_unlabeled({"images": images, "teacher_labels": np.array([1, 2, 3])}, "t.npz")
    with pytest.raises(ValueError, match="teacher_labels must"):
        check_unlabeled({**ok, "teacher_labels": np.array([1, 2, 10])}, "t.npz")
    with pytest.raises(ValueError, match="teacher_labels must"):
        check_unlabeled({**ok, "teacher_labels": np.array([1.0, 2.0, 3.0])}, "t.npz")
    with pytest.raises(ValueError, match="teacher_confidence must"):
        check_unlabeled({**ok, "teacher_confidence": np.array([0.9, np.nan, 1.0])}, "t.npz")
    with pytest.raises(ValueError, match="teacher_confidence must"):
        check_unlabeled({**ok, "teacher_confidence": np.array([0.9, 0.5])}, "t.npz")


def test_teacher_pseudo_labels_are_the_confident_teacher_labels():
    pool = UnlabeledPool(_images(4), teacher_labels=np.array([3, 1, 4, 1]),
                         teacher_confidence=np.array([0.995, 0.2, 0.99, 0.989]))
    images, labels = pseudo_labeled(nn.Identity(), pool, 0.99, "teacher", torch.device("cpu"))
    assert labels.tolist() == [3, 4]
    assert np.array_equal(images, pool.images[[0, 2]])
    with pytest.raises(ValueError, match="teacher_labels"):
        pseudo_labeled(nn.Identity(), UnlabeledPool(_images(2)), 0.99, "teacher", torch.device("cpu"))


def test_pseudo_labels_are_repeated_to_their_share_of_the_base_part():
    config = TrainConfig(unlabeled_key="u.npz", pseudo_label_threshold=0.9, pseudo_label_share=0.2)
    assert pseudo_repeats(config, 55_000, 1_200) == 12  # 0.2 * 55000 / (0.8 * 1200) = 11.5
    assert pseudo_repeats(config, 3_000, 1_200) == 1  # already 29 % of the base part
    assert pseudo_repeats(config, 55_000, 0) == 1
    assert pseudo_repeats(config.model_copy(update={"pseudo_label_share": 0.0}), 55_000, 1_200) == 1
    with pytest.raises(ValueError):
        TrainConfig(unlabeled_key="u.npz", pseudo_label_share=1.0)


class ByInk(nn.Module):
    """Class 7 for images with ink in the top-left quarter, class 2 otherwise; confident."""

    def embed_and_logits(self, x):  # the network contract daic.models.inference.predict uses
        logits = self(x)
        return logits, logits

    def forward(self, x):
        x = x.reshape(len(x), 28, 28)
        top_left = (x[:, :14, :14].mean(dim=(1, 2)) > 0.25).float()
        logits = torch.full((len(x), 10), -10.0)
        logits[:, 7] = 10.0 * top_left
        logits[:, 2] = 10.0 * (1 - top_left)
        return logits


def test_the_teacher_labels_what_the_classifier_says_behind_the_filter():
    images = np.zeros((3, 28, 28), np.float32)
    images[0, 2:10, 2:10] = 1.0  # ink top-left
    images[1, 18:26, 18:26] = 1.0
    images[2, 2:10, 2:10] = 0.4
    net = FilterNet()  # untrained: a pass-through, so the labels are the classifier's on the raw inputs
    out = teacher_arrays(ByInk(), net, images, "always", 0.0)
    assert out["teacher_labels"].tolist() == [7, 2, 2]  # 0.4 ink over a quarter: mean 0.08 <= 0.25
    assert np.all(out["teacher_confidence"] > 0.99) and np.array_equal(out["images"], images)
    assert teacher_arrays(ByInk(), net, images, "off", 0.0)["teacher_labels"].tolist() == [7, 2, 2]
    with pytest.raises(ValueError, match=r"\(N, 28, 28\)"):
        teacher_arrays(ByInk(), net, images[:0], "always", 0.0)


def test_fit_trains_on_the_teachers_confident_labels_repeated():
    from daic.training.loop import fit

    rng = np.random.default_rng(0)
    images, labels = _images(64, seed=4), rng.integers(0, 10, 64)
    pool = UnlabeledPool(_images(40, seed=5), teacher_labels=rng.integers(0, 10, 40),
                         teacher_confidence=np.r_[np.full(8, 0.999), np.full(32, 0.5)])
    config = TrainConfig(epochs=1, batch_size=16, num_workers=1, unlabeled_key="u.npz", pseudo_label_threshold=0.99,
                         pseudo_label_score="teacher", pseudo_label_share=0.5)
    seen = []
    fit(config, images, labels, n_base=48, device=torch.device("cpu"), unlabeled=pool,
        on_epoch=lambda metrics, nets: seen.append(metrics))
    assert seen[-1]["pseudo_labels"] == 8.0
    # 48 base + 8 pseudo x 6 (0.5 * 48 / (0.5 * 8)) + 16 labelled x operational_oversample (share unset)
    assert seen[-1]["samples_per_s"] * seen[-1]["epoch_time_s"] == pytest.approx(48 + 8 * 6 + 16 * config.operational_oversample, rel=1e-6)
