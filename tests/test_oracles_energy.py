"""The energy signal: logits recomputed from the embedding with the champion's linear head."""
import numpy as np
import pytest
import torch
from scipy.special import logsumexp, softmax

from daic.models.inference import predict
from daic.models.networks import build
from daic.models.reference import linear_head
from daic.oracles.combiner import FEATURES, neg_energy
from daic.oracles.pipeline import AssessorConfig, OnlineAssessor, ShiftedReference
from daic.oracles.reference import OracleReference
from daic.oracles.window_model import WindowSynthesis


def test_linear_head_recomputes_the_networks_logits_from_its_embedding():
    torch.manual_seed(0)
    model = build("small_cnn").eval()
    images = np.random.default_rng(0).uniform(size=(64, 28, 28)).astype(np.float32)
    out = predict(model, images)
    head = linear_head(model, out.embeddings.shape[1])
    assert head is not None and head[0].shape == (10, out.embeddings.shape[1])
    logits = out.embeddings.astype(np.float64) @ head[0].T + head[1]
    assert np.allclose(softmax(logits, axis=1), out.probs, atol=1e-5)
    assert np.allclose(neg_energy(out.embeddings, head), logsumexp(logits, axis=1))
    assert linear_head(model, 7) is None  # not a head on that embedding
    assert linear_head(torch.nn.Sequential(), 128) is None


def _ref(n, rng, head):
    w, b = head
    labels = rng.integers(0, 3, size=n)
    emb = rng.normal(size=(n, 4)) + np.eye(3, 4)[labels] * 3
    probs = softmax(emb @ w.T + b, axis=1)
    return OracleReference(probs, emb, labels, probs.copy())


def test_shifted_reference_carries_the_head_and_the_assessor_uses_it():
    rng = np.random.default_rng(1)
    head = (np.eye(3, 4) * 2.0, np.zeros(3))
    ref = _ref(2000, rng, head)
    parts = [_ref(300, rng, head) for _ in range(3)]
    sref = OracleReference(*(np.concatenate([getattr(r, f) for r in parts])
                             for f in ("probs", "embeddings", "labels", "shadow_probs")))
    plain = ShiftedReference(sref, np.repeat(["a/1", "b/1", "c/1"], 300))
    with_head = plain.with_head(*head)
    back = ShiftedReference.from_arrays(with_head.to_arrays())
    assert np.array_equal(back.head_weight, head[0]) and np.array_equal(back.head_bias, head[1])
    assert np.array_equal(with_head.without_types(["a"]).head_weight, head[0])
    with pytest.raises(ValueError, match="both head_weight and head_bias"):
        ShiftedReference(sref, plain.conditions, head_weight=head[0])
    with pytest.raises(ValueError, match="must have shape"):
        plain.with_head(np.eye(3, 5), np.zeros(3))
    cfg = AssessorConfig(k=5, cv_folds=3, synthesis=WindowSynthesis(n_windows=90, min_size=50, max_size=100))
    a = OnlineAssessor(cfg).fit(ref, with_head)
    test = _ref(300, rng, head)
    from daic.oracles.batch import OracleBatch

    x = a.features(OracleBatch(test.probs, test.embeddings, test.shadow_probs))
    assert x.shape[1] == len(FEATURES) + 1
    assert np.allclose(x[:, -1], neg_energy(test.embeddings, head))
    s = a.score(test.probs, test.embeddings, test.shadow_probs)
    assert np.allclose(s.components["neg_energy"], neg_energy(test.embeddings, head))
    off = OnlineAssessor(AssessorConfig(k=5, cv_folds=3, energy=False, synthesis=cfg.synthesis)).fit(ref, with_head)
    assert off.features(OracleBatch(test.probs, test.embeddings, test.shadow_probs)).shape[1] == len(FEATURES)
    assert "neg_energy" not in off.score(test.probs, test.embeddings, test.shadow_probs).components
