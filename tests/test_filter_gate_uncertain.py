"""The gate's uncertainty part (issue 21): in ``gated`` mode an input also goes through the filter
when the wrapped classifier's entropy on the raw input is above the calibrated bound
(FilterNet.gate_entropy); off until calibrated, kept in the state dict, served by the transformer."""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from daic.filters.apply import gate, uncertain_mask
from daic.filters.gate import select
from daic.filters.network import FilterNet


class Fixed(nn.Module):
    """A classifier certain about images with ink in the top-left pixel, uniform about the others."""

    def forward(self, x):
        x = x.reshape(len(x), -1)
        sure = (x[:, 0] > 0.5).float().unsqueeze(1)
        return torch.cat([sure * 20.0, torch.zeros(len(x), 9)], dim=1)


def _images() -> np.ndarray:
    images = np.zeros((3, 28, 28), np.float32)
    images[0, 0, 0] = 1.0  # the classifier is certain
    images[2, 10:20, 10:20] = 0.7  # uncertain
    return images


def test_select_adds_uncertain_inputs_in_gated_mode_only():
    images, filtered = _images(), _images() + 0.0
    uncertain = np.array([False, True, False])
    assert select(images, filtered, "gated", 0.5, uncertain)[1].tolist() == [False, True, False]
    assert select(images, filtered, "gated", 0.5)[1].tolist() == [False, False, False]
    assert select(images, filtered, "always", 0.5, uncertain)[1].all()
    assert not select(images, filtered, "off", 0.5, uncertain)[1].any()


def test_uncertainty_is_off_until_calibrated_and_survives_the_state_dict():
    net = FilterNet().attach_aligner(Fixed())
    assert uncertain_mask(net, _images()) is None  # gate_entropy inf: off
    net.gate_entropy.fill_(0.5 * math.log(10))
    assert uncertain_mask(net, _images()).tolist() == [False, True, True]
    assert gate(net, _images(), _images(), "gated", 1e9)[1].tolist() == [False, True, True]
    assert gate(net, _images(), _images(), "always", 1e9)[1].all()
    again = FilterNet()
    again.load_state_dict(net.state_dict())
    assert float(again.gate_entropy) == float(net.gate_entropy)
    assert uncertain_mask(again, _images()) is None, "no classifier attached: no uncertainty part"
    old = {k: v for k, v in net.state_dict().items() if k != "gate_entropy"}
    older = FilterNet()
    older.load_state_dict(old)  # a filter registered before the uncertainty part
    assert math.isinf(float(older.gate_entropy))


def test_the_transformer_filters_the_inputs_the_classifier_is_uncertain_about():
    from daic.serving.filter import InputFilter, ServedFilter

    net = FilterNet().attach_aligner(Fixed()).eval()  # an identity restoration: the residual gate never fires
    server = InputFilter()
    server._served = ServedFilter("v0007", net, "gated", 1e9)
    request = {"data": {"ndarray": _images().tolist()}}
    assert server.transform(request)["meta"]["tags"]["daic.filtered"] == [0, 0, 0]
    net.gate_entropy.fill_(0.5 * math.log(10))
    tags = server.transform(request)["meta"]["tags"]
    assert tags["daic.filtered"] == [0, 1, 1] and tags["daic.filter.gate"] == "gated"
