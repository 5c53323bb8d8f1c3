"""augment="select": the retraining recipe chosen per run on labelled inputs held out of training
(daic.training.loop.select_recipe). The choice logic runs with a stub trainer (its outcome is known);
one small real fit checks the wiring through ``fit`` without Ray."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from daic.training import loop
from daic.training.config import TrainConfig
from daic.training.loop import MAIN, held_out_rows, select_recipe

CPU = torch.device("cpu")


def _data(n_base: int = 50, n_op: int = 60):
    # Every image is constant with a unique value, so a stub can tell which rows it was given.
    values = np.arange(n_base + n_op, dtype=np.float32) / (n_base + n_op)
    images = np.broadcast_to(values[:, None, None], (n_base + n_op, 28, 28)).copy()
    labels = np.arange(n_base + n_op) % 10
    return images, labels, n_base


class _Oracle(torch.nn.Module):
    """Predicts the true label (``row % 10``, read back from the pixel value) or always class 0."""

    def __init__(self, n: int, right: bool):
        super().__init__()
        self.n, self.right = n, right

    def forward(self, x):
        rows = torch.round(x.reshape(x.shape[0], -1)[:, 0] * self.n).long()
        target = rows % 10 if self.right else torch.zeros_like(rows)
        return torch.nn.functional.one_hot(target, 10).float() * 5


def test_held_out_rows_are_a_seeded_share_of_the_labelled_rows_only():
    rows = held_out_rows(100, 40, 0.3, seed=3)
    assert len(rows) == 12 and rows.min() >= 100 and rows.max() < 140 and len(set(rows)) == 12
    assert np.array_equal(rows, held_out_rows(100, 40, 0.3, seed=3))
    assert not np.array_equal(rows, held_out_rows(100, 40, 0.3, seed=4))


@pytest.mark.parametrize("winner", ["chain", "off"])
def test_the_candidate_that_classifies_the_held_out_inputs_wins(monkeypatch, winner):
    images, labels, n_base = _data()
    held = set(held_out_rows(n_base, len(labels) - n_base, 0.3, seed=0).tolist())
    n = len(labels)
    calls = []

    def stub_fit(config, x, y, *, n_base, **_):
        seen_rows = set(np.round(x[:, 0, 0] * n).astype(int).tolist())
        calls.append((config.augment, seen_rows))
        return SimpleNamespace(nets={MAIN: _Oracle(n, right=config.augment == winner)})

    monkeypatch.setattr(loop, "fit", stub_fit)
    config = TrainConfig(augment="select", num_workers=1)
    sel = select_recipe(config, images, labels, n_base=n_base, device=CPU)
    assert sel.chosen == winner
    assert [c[0] for c in calls] == ["chain", "off"]
    for _, rows in calls:  # no candidate trains on a held-out input, and every other row is kept
        assert not rows & held and rows | held == set(range(n))
    assert sel.held_out == len(held) == 18
    assert sel.correct[winner] == 18 and sel.metrics()["select_chosen"] == ("chain", "off").index(winner)


def test_a_full_tie_keeps_the_first_candidate_and_too_few_labels_skip_the_trial(monkeypatch):
    images, labels, n_base = _data()
    monkeypatch.setattr(loop, "fit", lambda config, x, y, **_: SimpleNamespace(
        nets={MAIN: _Oracle(len(labels), right=True)}))
    assert select_recipe(TrainConfig(augment="select", select_candidates=("off", "chain")), images, labels,
                         n_base=n_base, device=CPU).chosen == "off"
    few_x, few_y, nb = _data(n_op=20)  # 6 held out < SELECT_MIN_HELD_OUT
    sel = select_recipe(TrainConfig(augment="select"), few_x, few_y, n_base=nb, device=CPU)
    assert (sel.chosen, sel.held_out, sel.correct) == ("chain", 0, {})


def test_config_needs_two_distinct_candidates():
    with pytest.raises(ValueError, match="select_candidates"):
        TrainConfig(augment="select", select_candidates=("chain", "chain"))
    with pytest.raises(ValueError):
        TrainConfig(augment="select", select_candidates=("chain", "mixup"))
    with pytest.raises(ValueError):
        TrainConfig(select_share=1.0)


def test_fit_with_select_trains_the_winner_on_everything_and_reports_the_choice():
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    images = np.random.default_rng(4).random((120, 28, 28), dtype=np.float32)
    labels = rng.integers(0, 10, 120)
    seen = []
    config = TrainConfig(epochs=1, batch_size=32, num_workers=1, augment="select")
    loop.fit(config, images, labels, n_base=60, device=CPU, on_epoch=lambda m, nets: seen.append(m))
    assert len(seen) == 1  # the candidates' fits report nothing; the final fit reports its epoch
    m = seen[0]
    assert m["select_held_out"] == 18 and m["select_chosen"] in (0.0, 1.0)
    assert {"select_chain_accuracy", "select_off_accuracy", "select_chain_nll", "select_off_nll"} <= set(m)


def test_operational_share_raises_the_repeats_to_the_share_and_never_lowers_them():
    from daic.training.loop import operational_repeats
    from daic.training.sharding import epoch_pool

    plain = TrainConfig(operational_oversample=10)
    assert operational_repeats(plain, 55_000, 140) == 10
    shared = TrainConfig(operational_oversample=10, operational_share=0.3)
    repeats = operational_repeats(shared, 55_000, 140)
    pool = epoch_pool(55_000, 140, repeats)
    share = float((pool >= 55_000).mean())
    assert 0.3 <= share < 0.301  # the smallest whole number of repeats that reaches the share
    assert operational_repeats(shared, 1_000, 140) == 10  # already above the share: unchanged
    assert operational_repeats(shared, 1_000, 0) == 10
    with pytest.raises(ValueError):
        TrainConfig(operational_share=1.0)


def test_candidates_train_on_the_first_select_base_limit_base_images(monkeypatch):
    images, labels, n_base = _data(n_base=50, n_op=60)
    held = set(held_out_rows(n_base, 60, 0.3, seed=0).tolist())
    n = len(labels)
    seen = []

    def stub_fit(config, x, y, *, n_base, **_):
        seen.append((n_base, set(np.round(x[:, 0, 0] * n).astype(int).tolist())))
        return SimpleNamespace(nets={MAIN: _Oracle(n, right=True)})

    monkeypatch.setattr(loop, "fit", stub_fit)
    select_recipe(TrainConfig(augment="select", select_base_limit=20), images, labels, n_base=n_base, device=CPU)
    for probe_base, rows in seen:
        assert probe_base == 20
        assert rows == set(range(20)) | (set(range(50, 110)) - held)
