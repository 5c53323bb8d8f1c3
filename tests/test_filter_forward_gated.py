"""The serving path's single classifier pass (issue 21, latency): ``FilterNet.forward_gated`` scores
the raw inputs (the gate's uncertainty part) in the same batched pass as the alignment search's
candidates, and must give exactly what ``forward`` and ``uncertain`` give separately; the search
keeps its own channels-last copy of the classifier, so the caller's network is left as it was."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from daic.filters.network import FilterNet
from daic.models.networks import SmallCNN


def _classifier() -> SmallCNN:
    torch.manual_seed(3)
    net = SmallCNN().eval()
    for m in net.modules():  # non-trivial batch-norm statistics, so the layout matters numerically
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return net


def _inputs(n: int = 12) -> torch.Tensor:
    rng = np.random.default_rng(5)
    x = np.zeros((n, 28, 28), np.float32)
    for i in range(n):
        r, c = rng.integers(4, 16, size=2)
        x[i, r:r + 10, c:c + 6] = rng.uniform(0.4, 1.0)
    x += rng.uniform(0, 0.3, size=x.shape).astype(np.float32) * (np.arange(n) % 2 == 0)[:, None, None]
    return torch.from_numpy(np.clip(x, 0, 1))


@pytest.mark.parametrize("recentre_search,angles", [(True, (-30.0, 15.0)), (False, (20.0,)), (False, ())])
def test_forward_gated_is_forward_and_uncertain_in_one_pass(recentre_search, angles):
    net = FilterNet(canonical=True, align_angles=angles, recentre_search=recentre_search)
    net.attach_aligner(_classifier()).eval()
    x = _inputs()
    entropies = net.entropy(x)
    net.gate_entropy.fill_(float(entropies.median()))  # half the inputs count as uncertain
    with torch.inference_mode():
        out, uncertain = net.forward_gated(x)
        assert torch.allclose(out, net(x), atol=1e-6)
        assert torch.equal(uncertain, net.uncertain(x))
    assert 0 < int(uncertain.sum()) < len(x), "the bound must split the inputs for the test to mean anything"


def test_forward_gated_without_an_uncertainty_part_is_forward():
    net = FilterNet(canonical=True, align_angles=(15.0,)).attach_aligner(_classifier()).eval()
    x = _inputs(4)
    with torch.inference_mode():
        out, uncertain = net.forward_gated(x)  # gate_entropy is inf: no uncertainty part
        assert uncertain is None
        assert torch.allclose(out, net(x), atol=0)


def test_the_aligner_is_a_channels_last_copy_and_the_callers_network_is_untouched():
    classifier = _classifier().train()
    before = {k: v.clone() for k, v in classifier.state_dict().items()}
    net = FilterNet(canonical=True, align_angles=(15.0,)).attach_aligner(classifier)
    assert classifier.training, "the caller's network keeps its mode"
    assert all(p.requires_grad for p in classifier.parameters())
    assert net._aligner[0] is not classifier and not net._aligner[0].training
    conv = next(m for m in net._aligner[0].modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert all(torch.equal(v, classifier.state_dict()[k]) for k, v in before.items())
    x = _inputs(6).unsqueeze(1)
    with torch.no_grad():
        assert torch.allclose(net._log_probs(x), torch.log_softmax(classifier.eval()(x), dim=1), atol=1e-5)
