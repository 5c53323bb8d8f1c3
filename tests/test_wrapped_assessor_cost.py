"""The wrapped assessor's cheaper build (issue 21 follow-up, daic.filters.assessor): the alignment
search scores the rotations only of the inputs where one can win (``searched_filter``) and the
references are built in batches of ``REFERENCE_BATCH``; both must give what the filter as served
and the old build gave, bit for bit, and so the same fitted assessor."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from daic.filters.apply import apply_filter
from daic.filters.assessor import REFERENCE_BATCH, searched_filter, wrapped_references
from daic.filters.gate import residual_score
from daic.filters.network import FilterNet
from daic.models import assessor_store
from daic.models.weights import network_from_bytes
from daic.oracles.self_agreement import SERVED_VIEWS, views_text
from test_serving_support import trained_weights


@pytest.fixture(scope="module")
def networks():
    model_bytes, shadow_bytes = trained_weights()  # ~85 % accurate, and unsure (median entropy 1.6 nats)
    model = network_from_bytes("small_cnn", model_bytes).eval()
    with torch.no_grad():  # logits x 3: as sure as a real champion (median entropy 0.3 nats here)
        model.head.weight.mul_(3.0)
        model.head.bias.mul_(3.0)
    return model, network_from_bytes("shadow_net", shadow_bytes).eval()


def _filter(model, recentre_search: bool = True, margin: float = 0.5) -> FilterNet:
    torch.manual_seed(11)
    net = FilterNet(canonical=True, align_angles=(-45.0, -20.0, 20.0, 45.0), align_margin=margin,
                    recentre_search=recentre_search)
    torch.nn.init.normal_(net.out.weight, std=0.05)  # a restoration that changes its input
    return net.attach_aligner(model).eval()


def _inputs(n: int = 240) -> np.ndarray:
    from daic.data.corruptions import corrupt
    from daic.data.mnist import load_split

    x = np.asarray(load_split("val").images[:n], np.float32)
    third = n // 3
    return np.concatenate([x[:third], corrupt(x[third:2 * third], "rotate", 4, seed=1),
                           corrupt(x[2 * third:], "gaussian_noise", 3, seed=2)]).astype(np.float32)


def _min_plain_entropy(net: FilterNet, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        staged, unshifted = net._stages(torch.from_numpy(x).unsqueeze(1))
        plain = staged.unsqueeze(1) if unshifted is None else torch.stack([unshifted, staged], dim=1)
        logp = net._log_probs(plain.flatten(0, 1)).view(len(x), plain.shape[1], -1)
        return (-(logp.exp() * logp).sum(dim=2)).min(dim=1).values.numpy()


@pytest.mark.parametrize("recentre_search", [True, False])
def test_the_pruned_search_is_the_served_filter_bit_for_bit(networks, recentre_search):
    model, _ = networks
    net = _filter(model, recentre_search)
    x = _inputs()
    served = apply_filter(net, x)
    assert np.array_equal(searched_filter(net, x), served)
    # its own batches (here 100 and 140 inputs, and the open inputs of both together)
    assert np.array_equal(searched_filter(net, x, batch_size=100), served)
    # The case must exercise both branches and a search that matters: inputs whose choice is made
    # on the plain candidates alone, inputs that run the whole search, and among those some
    # where a rotation wins (so skipping the search everywhere would fail the comparison).
    # Some of those just above the margin keep a rotation: a rule that skipped the search a little
    # above the margin (by 0.3 nats) would fail the comparison too (measured: 8 of 240 inputs).
    entropy, margin = _min_plain_entropy(net, x), float(net.align_margin)
    pruned = entropy <= margin
    plain_only = copy.deepcopy(net).configure(canonical=True, align_angles=(), recentre_search=recentre_search)
    plain_only.attach_aligner(model)
    rotated = (apply_filter(plain_only, x) != served).reshape(len(x), -1).any(axis=1)
    assert pruned.sum() >= 20 and (~pruned).sum() >= 20, pruned.sum()
    assert rotated.sum() >= 5 and not rotated[pruned].any(), rotated.sum()
    assert (rotated & (entropy <= margin + 0.3)).sum() >= 3


def test_batches_are_never_short():
    from daic.filters.assessor import _spans

    assert _spans(300, 128) == [(0, 128), (128, 300)]  # the tail of 44 joins the batch before it
    assert _spans(256, 128) == [(0, 128), (128, 256)]
    assert _spans(5, 128) == [(0, 5)] and _spans(0, 128) == []


def test_a_margin_of_zero_searches_every_input_and_stays_exact(networks):
    model, _ = networks
    net = _filter(model, margin=0.0)
    x = _inputs(60)
    assert np.array_equal(searched_filter(net, x), apply_filter(net, x))


def test_a_net_without_search_is_just_applied(networks):
    model, _ = networks
    x = _inputs(30)
    plain = FilterNet()  # no canonical form, no angles: nothing to search
    assert np.array_equal(searched_filter(plain, x), apply_filter(plain, x))
    detached = FilterNet(canonical=True, align_angles=(20.0,))  # a search but no classifier: not run
    assert np.array_equal(searched_filter(detached, x), apply_filter(detached, x))


@pytest.mark.parametrize("gate", ["gated", "always"])
def test_the_references_and_the_fitted_assessor_equal_the_old_builds(networks, gate):
    model, shadow = networks
    net = _filter(model)
    x = _inputs(300)
    # a residual threshold and an uncertainty bound that each send part of the inputs through the filter
    threshold = float(np.quantile(residual_score(x, apply_filter(net, x)), 0.7))
    with torch.inference_mode():
        net.gate_entropy.fill_(float(np.quantile(net.entropy(torch.from_numpy(x)).numpy(), 0.8)))
    kwargs = dict(val_limit=300, shift_per_condition=3)
    parts: dict[str, float] = {}
    old = wrapped_references(model, shadow, net, gate, threshold, search_all=True, batch_size=1024, **kwargs)
    new = wrapped_references(model, shadow, net, gate, threshold, timings=parts, **kwargs)
    assert REFERENCE_BATCH != 1024 and set(parts) == {"filter", "gate", "outputs", "corrupt"}
    for a, b in ((old[0], new[0]), (old[1].reference, new[1].reference)):
        for field in ("probs", "embeddings", "shadow_probs", "labels"):
            assert np.array_equal(getattr(a, field), getattr(b, field)), field
    assert np.array_equal(old[1].conditions, new[1].conditions)
    for field in ("self_agreement", "reference_self_agreement"):  # the served view, batched the same way
        assert np.array_equal(getattr(old[1], field), getattr(new[1], field)), field
    assert new[1].self_agreement_views == views_text(SERVED_VIEWS)
    raw = wrapped_references(model, shadow, net, "off", threshold, **kwargs)
    changed = ~np.all(raw[1].reference.probs == new[1].reference.probs, axis=1)
    assert changed.any() and (gate == "always" or not changed.all()), "the gate must split the shifted rows"
    fitted_old, fitted_new = assessor_store.fit(*old), assessor_store.fit(*new)
    assert fitted_new.uses_self_agreement and fitted_new.self_agreement_views == views_text(SERVED_VIEWS)
    for ref, sa in ((new[0], new[1].reference_self_agreement), (new[1].reference, new[1].self_agreement)):
        s_old = fitted_old.score(ref.probs, ref.embeddings, ref.shadow_probs, sa)
        s_new = fitted_new.score(ref.probs, ref.embeddings, ref.shadow_probs, sa)
        np.testing.assert_allclose(s_new.p_correct, s_old.p_correct, rtol=0, atol=1e-5)
        np.testing.assert_allclose(s_new.drift, s_old.drift, rtol=0, atol=1e-5)
