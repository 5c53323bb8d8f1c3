"""The two network families: shapes, embeddings, names, bad input."""
import numpy as np
import pytest
import torch

from daic.models.networks import ARCHS, ShadowNet, SmallCNN, build, count_parameters


@pytest.mark.parametrize("arch,cls,dim", [("small_cnn", SmallCNN, 128), ("shadow_net", ShadowNet, 64)])
def test_logits_and_embeddings_have_the_contract_shapes(arch, cls, dim):
    torch.manual_seed(0)
    net = build(arch).eval()
    assert isinstance(net, cls) and net.embedding_dim == dim
    x = torch.rand(5, 28, 28)
    emb, logits = net.embed_and_logits(x)
    assert emb.shape == (5, dim) and logits.shape == (5, 10)
    # (N, 28, 28) and (N, 1, 28, 28) are the same input; forward is the logits of embed_and_logits.
    assert torch.allclose(net(x.unsqueeze(1)), logits)


def test_the_shadow_is_a_different_architecture():
    a, b = build("small_cnn"), build("shadow_net")
    assert set(a.state_dict()) != set(b.state_dict())
    assert count_parameters(a) != count_parameters(b)
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in b.modules())


def test_the_main_embedding_is_the_penultimate_layer():
    net = build("small_cnn").eval()
    x = torch.rand(3, 28, 28)
    emb, logits = net.embed_and_logits(x)
    assert torch.allclose(net.head(emb), logits, atol=1e-6)
    assert (emb >= 0).all()  # after ReLU


def test_bad_names_and_shapes_are_errors():
    with pytest.raises(ValueError, match="unknown arch 'resnet'.*small_cnn"):
        build("resnet")
    with pytest.raises(ValueError, match=r"\(N, 28, 28\).*\(2, 3, 28, 28\)"):
        build("small_cnn")(torch.rand(2, 3, 28, 28))
    assert ARCHS == ("small_cnn", "shadow_net")


def test_models_are_small_enough_for_cpu_training():
    # The budget that makes `daic train` a few CPU minutes: well under a million parameters.
    assert count_parameters(build("small_cnn")) < 300_000
    assert count_parameters(build("shadow_net")) < 100_000
    assert np.isfinite(count_parameters(build("small_cnn")))
