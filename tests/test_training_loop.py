"""The per-worker training loop in one process (no Ray): it learns, it is reproducible, warm
starts begin where the parent left off, and operational data is weighted in."""
import numpy as np
import pytest
import torch

from daic.data.mnist import load_split
from daic.models.inference import accuracy
from daic.models.networks import build
from daic.models.weights import state_dict_to_bytes
from daic.training.config import TrainConfig
from daic.training.loop import MAIN, SHADOW, EvalSet, WarmStart, fit

N = 1000
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def data():
    torch.set_num_threads(1)
    train, val = load_split("train"), load_split("val")
    return train.images[:N], train.labels[:N], EvalSet(val.images[:400], val.labels[:400])


def _config(**fields):
    return TrainConfig(**{"epochs": 2, "batch_size": 64, "num_workers": 1, "base_limit": N, **fields})


@pytest.fixture(scope="module")
def trained(data):
    images, labels, val = data
    history = []
    result = fit(_config(), images, labels, n_base=N, device=CPU, val=val, on_epoch=lambda m, nets: history.append(m))
    return result, history


def test_it_learns_both_networks_and_reports_every_epoch(trained):
    result, history = trained
    assert [h["epoch"] for h in history] == [1, 2]
    assert history[-1]["val_accuracy"] > 0.8, history
    assert history[-1]["shadow_val_accuracy"] > 0.4, history
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert history[-1]["samples_per_s"] > 0 and history[-1]["epoch_time_s"] > 0
    assert result.precision == "fp32" and set(result.nets) == {MAIN, SHADOW}


def test_same_seed_same_weights_other_seed_other_weights(data):
    images, labels, _ = data

    def run(seed):
        return fit(_config(epochs=1, seed=seed, base_limit=300), images[:300], labels[:300], n_base=300,
                   device=CPU).nets

    a, b, c = run(3), run(3), run(4)
    for name in (MAIN, SHADOW):
        sa, sb, sc = (r[name].state_dict() for r in (a, b, c))
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
        assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_a_warm_start_begins_from_the_parent(data, trained):
    images, labels, val = data
    parent = trained[0].nets
    parent_acc = accuracy(parent[MAIN], val.images, val.labels)
    warm = WarmStart({k: state_dict_to_bytes(n) for k, n in parent.items()})
    history = []
    # A tiny learning rate: after one short epoch the model must still be (almost) the parent.
    fit(_config(epochs=1, lr=1e-7, base_limit=200), images[:200], labels[:200], n_base=200, device=CPU, val=val,
        warm=warm, on_epoch=lambda m, nets: history.append(m))
    torch.manual_seed(0)
    fresh_acc = accuracy(build("small_cnn"), val.images, val.labels)
    assert history[0]["val_accuracy"] == pytest.approx(parent_acc, abs=0.02)
    assert fresh_acc < 0.3 < parent_acc


def test_operational_examples_are_oversampled_and_weighted(data):
    images, labels, _ = data
    # 20 "operational" images of one pattern (a thick vertical bar), all labeled 7, among 200 base.
    rng = np.random.default_rng(0)
    pattern = np.zeros((20, 28, 28), np.float32)
    pattern[:, 5:23, 12:16] = 1.0
    pattern = np.clip(pattern + rng.random(pattern.shape, dtype=np.float32) * 0.05, 0, 1)
    x = np.concatenate([images[:200], pattern])
    y = np.concatenate([labels[:200], np.full(20, 7)])

    def share_predicted_7(**fields):
        config = TrainConfig(epochs=1, batch_size=32, num_workers=1, base_limit=200, **fields)
        net = fit(config, x, y, n_base=200, device=CPU).nets[MAIN].eval()
        with torch.no_grad():
            return float((net(torch.from_numpy(pattern)).argmax(1) == 7).float().mean())

    assert share_predicted_7(operational_oversample=20) == 1.0
    assert share_predicted_7(operational_oversample=1, operational_weight=0.01) < 0.5
