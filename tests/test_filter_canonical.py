"""The filter's parameter-free canonical form, its test-time alignment search and its time-bounded
fit (issue 21), against known truth on tiny data; no Ray."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from daic.data.corruptions import corrupt
from daic.data.mnist import load_split
from daic.filters.config import FilterConfig
from daic.filters.data import FilterData
from daic.filters.fit import budget_lr, fit_filter
from daic.filters.network import FilterNet, centre_of_mass, shift_whole_pixels, stretch


def _canonical() -> FilterNet:
    return FilterNet().configure(canonical=True, centre=(14.0, 14.0))


def test_canonical_form_undoes_shifts_and_faded_ink_and_keeps_clean_digits():
    clean = torch.from_numpy(np.array(load_split("val").images[:64]))
    net = _canonical()
    assert (net(clean) - clean).abs().amax() <= 1 / 255 + 1e-6  # at most a rounding of the stretch
    shifted = torch.from_numpy(corrupt(clean.numpy(), "translate", 3, seed=0))
    assert (net(shifted) - clean).abs().mean() < 0.1 * (shifted - clean).abs().mean()
    faded = torch.from_numpy(corrupt(clean.numpy(), "contrast", 4, seed=0))
    assert (net(faded) - clean).abs().mean() < 0.1 * (faded - clean).abs().mean()
    # Blank and flat images pass unchanged (no centre of mass, no range to stretch).
    flat = torch.full((2, 28, 28), 0.3)
    flat[0] = 0.0
    assert torch.equal(net(flat), flat)


def test_whole_pixel_shift_and_centre_of_mass_known_values():
    x = torch.zeros(1, 1, 28, 28)
    x[0, 0, 5, 7] = 1.0
    r, c = centre_of_mass(x)
    assert (float(r), float(c)) == (5.0, 7.0)
    moved = shift_whole_pixels(x, torch.tensor([3]), torch.tensor([-2]))
    assert moved[0, 0, 8, 5] == 1.0 and float(moved.sum()) == 1.0
    gone = shift_whole_pixels(x, torch.tensor([-10]), torch.tensor([0]))  # shifted out: zeros come in
    assert float(gone.sum()) == 0.0
    assert torch.allclose(stretch(torch.full((1, 1, 2, 2), 0.5) + torch.tensor([[[[0.0, 0.2], [0.1, 0.0]]]])),
                          torch.tensor([[[[0.0, 1.0], [0.5, 0.0]]]]))


class _UprightBar(nn.Module):
    """Confident (class 0) when the ink lies in the central column, uncertain otherwise."""

    def forward(self, x):
        x = x.reshape(len(x), 28, 28)
        share = x[:, :, 13:15].sum(dim=(1, 2)) / x.sum(dim=(1, 2)).clamp_min(1e-6)
        return torch.cat([20 * share[:, None], torch.zeros(len(x), 9)], dim=1)


def test_alignment_search_picks_the_rotation_the_classifier_is_surest_of():
    bar = torch.zeros(1, 1, 28, 28)
    bar[0, 0, 4:24, 13:15] = 1.0
    from daic.filters.network import rotate

    tilted = rotate(bar, torch.tensor([30.0]))
    net = FilterNet().configure(canonical=False, align_angles=(-30.0, 30.0), align_margin=0.2)
    assert torch.equal(net(tilted[:, 0]), tilted[0])  # no classifier attached: no search
    net.attach_aligner(_UprightBar())
    back = net(tilted[:, 0])
    assert _UprightBar()(back)[0, 0] > _UprightBar()(tilted)[0, 0] + 5  # the upright candidate won
    assert torch.equal(net(bar[:, 0]), bar[0])  # already upright: the identity is kept (margin)
    # The search is in the state dict: a reloaded filter searches the same angles; a U-Net-only dict does not.
    again = FilterNet()
    again.load_state_dict(net.state_dict())
    assert again.searches and again.align_angles.tolist() == [-30.0, 30.0]
    old = {k: v for k, v in FilterNet().state_dict().items()
           if k not in ("canonical", "centre", "align_angles", "align_margin")}
    plain = FilterNet()
    plain.load_state_dict(old)
    assert not plain.searches and float(plain.canonical) == 0.0
    with pytest.raises(ValueError, match="align_angles"):
        FilterConfig(classifier_version="v0001", align_angles=(0.0,))


def test_budget_schedule_and_a_spent_budget_stops_the_fit():
    assert budget_lr(1.0, 0.0, warm_start=True) == pytest.approx(1.0)
    assert budget_lr(1.0, 1.0, warm_start=True) == pytest.approx(0.0, abs=1e-12)
    lrs = [budget_lr(1.0, p / 10, warm_start=True) for p in range(11)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    assert budget_lr(1.0, 0.01, warm_start=False) < budget_lr(1.0, 0.01, warm_start=True)  # warm-up
    images = np.array(load_split("train").images[:64])
    data = FilterData(clean=images, corrupted=corrupt(images, "gaussian_noise", 3, seed=0),
                      labels=np.array(load_split("train").labels[:64]), pool=np.zeros((0, 28, 28), np.float32))
    classifier = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    epochs = []
    config = FilterConfig(classifier_version="v0001", epochs=2, batch_size=32, max_seconds=1e-9)
    fit_filter(config, data, classifier, device=torch.device("cpu"), on_epoch=lambda m, n: epochs.append(m))
    assert epochs == []  # spent before the first step: nothing trained, nothing reported
    fitted = fit_filter(config.model_copy(update={"max_seconds": None}), data, classifier,
                        device=torch.device("cpu"), on_epoch=lambda m, n: epochs.append(m))
    assert [m["steps"] for m in epochs] == [2, 4] and float(fitted.canonical) == 1.0
    r, c = centre_of_mass(torch.from_numpy(images).unsqueeze(1))
    assert fitted.centre.tolist() == pytest.approx([float(r.mean()), float(c.mean())], abs=1e-4)


class _BarAt(nn.Module):
    """Confident (class 0) when the ink lies in columns ``col``..``col + 1``."""

    def __init__(self, col: int) -> None:
        super().__init__()
        self.col = col

    def forward(self, x):
        x = x.reshape(len(x), 28, 28)
        share = x[:, :, self.col:self.col + 2].sum(dim=(1, 2)) / x.sum(dim=(1, 2)).clamp_min(1e-6)
        return torch.cat([20 * share[:, None], torch.zeros(len(x), 9)], dim=1)


def test_recentring_as_a_search_candidate_is_chosen_by_the_classifier_not_forced():
    bar = torch.zeros(1, 28, 28)
    bar[0, 4:24, 4:6] = 1.0  # off-centre: forced re-centring moves it to columns ~13-14
    forced = FilterNet().configure(canonical=True, centre=(14.0, 14.0))
    assert float(forced(bar)[0, :, 13:15].sum()) > 0 and float(forced(bar)[0, :, 4:6].sum()) == 0
    net = FilterNet().configure(canonical=True, centre=(14.0, 14.0), recentre_search=True)
    assert net.searches and torch.equal(net(bar), forced(bar))  # no classifier attached: the forced form
    assert torch.equal(net.attach_aligner(_BarAt(13))(bar), forced(bar))  # the classifier is surer centred
    assert torch.equal(net.attach_aligner(_BarAt(4))(bar), bar)  # ... or where it was: kept
    again = FilterNet()
    again.load_state_dict(net.state_dict())
    assert float(again.recentre_search) == 1.0 and again.searches
