"""Pseudo-oracles on hand-made inputs with answers worked out by hand."""
import math

import numpy as np
import pytest

from daic.oracles.base import NotFittedError
from daic.oracles.baselines import ATCOracle, DoCOracle
from daic.oracles.batch import OracleBatch
from daic.oracles.confidence import ConfidenceOracle, confidence_signal, margin, normalised_entropy
from daic.oracles.disagreement import ShadowDisagreementOracle, agreement, shadow_support
from daic.oracles.distance import KNNDistanceOracle, MahalanobisOracle
from daic.oracles.reference import OracleReference


def _ref(probs, labels, emb=None, shadow=None):
    probs = np.asarray(probs, dtype=float)
    n = len(probs)
    emb = np.zeros((n, 2)) if emb is None else emb
    shadow = probs if shadow is None else shadow
    return OracleReference(probs, emb, np.asarray(labels), shadow)


def test_confidence_signals_exact():
    p = np.array([[0.7, 0.2, 0.1], [1 / 3, 1 / 3, 1 / 3], [1.0, 0.0, 0.0]])
    np.testing.assert_allclose(margin(p), [0.5, 0.0, 1.0])
    np.testing.assert_allclose(normalised_entropy(p), [
        -(0.7 * math.log(0.7) + 0.2 * math.log(0.2) + 0.1 * math.log(0.1)) / math.log(3), 1.0, 0.0,
    ], atol=1e-9)
    np.testing.assert_allclose(confidence_signal(p, "entropy"), 1 - normalised_entropy(p))
    np.testing.assert_allclose(confidence_signal(p, "max_softmax"), [0.7, 1 / 3, 1.0])
    with pytest.raises(ValueError, match="kind"):
        confidence_signal(p, "bogus")


def test_confidence_oracle_isotonic_map_learns_step():
    # Confident inputs are all correct, unconfident ones all wrong: the map is a step 0 -> 1.
    conf = np.array([0.95, 0.9, 0.92, 0.55, 0.6, 0.5])
    probs = np.column_stack([conf, 1 - conf])
    labels = np.array([0, 0, 0, 1, 1, 1])
    oracle = ConfidenceOracle("max_softmax").fit(_ref(probs, labels))
    out = oracle.score(OracleBatch(np.array([[0.99, 0.01], [0.52, 0.48]])))
    np.testing.assert_allclose(out, [1.0, 0.0])


def test_unfitted_oracles_refuse():
    batch = OracleBatch(np.array([[0.6, 0.4]]), np.zeros((1, 2)), np.array([[0.6, 0.4]]))
    for oracle in (ConfidenceOracle(), KNNDistanceOracle(1), MahalanobisOracle(), ATCOracle(), DoCOracle()):
        with pytest.raises(NotFittedError):
            oracle.score(batch)


def test_shadow_support_and_agreement():
    p = np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    s = np.array([[0.1, 0.9], [0.2, 0.8], [0.55, 0.45]])
    np.testing.assert_allclose(shadow_support(p, s), [0.1, 0.8, 0.55])
    np.testing.assert_array_equal(agreement(p, s), [0, 1, 1])
    oracle = ShadowDisagreementOracle()
    with pytest.raises(ValueError, match="shadow_probs"):
        oracle.signal(OracleBatch(p))


def test_knn_distance_on_hand_made_embeddings():
    # Four unit vectors at 0, 90, 180, 270 degrees; k = 2.
    bank = np.array([[1.0, 0], [0, 1], [-1, 0], [0, -1]])
    probs = np.tile([[0.9, 0.1]], (4, 1))
    oracle = KNNDistanceOracle(k=2).fit(_ref(probs, [0, 0, 0, 1], emb=bank * 5))  # scale is normalised away
    # Query at 45 degrees: nearest two are (1,0) and (0,1), both at distance sqrt(2 - sqrt(2)).
    q = np.array([[3.0, 3.0], [2.0, 0.0]])
    d = oracle.signal(OracleBatch(np.tile([[0.9, 0.1]], (2, 1)), q))
    np.testing.assert_allclose(d, [math.sqrt(2 - math.sqrt(2)), math.sqrt(2)])
    # Leave-one-out on the reference: each point's 2nd neighbour (self excluded) is at 90 degrees.
    np.testing.assert_allclose(oracle.reference_distances, [math.sqrt(2)] * 4)
    # Percentile: below all reference distances, tied with all, above all.
    np.testing.assert_allclose(oracle.percentile(np.array([0.0, math.sqrt(2), 3.0])),
                               [0.5 / 5, 2.5 / 5, 4.5 / 5])
    with pytest.raises(ValueError, match="dimensions"):
        oracle.signal(OracleBatch(np.array([[0.9, 0.1]]), np.zeros((1, 3))))
    with pytest.raises(ValueError, match="k must"):
        KNNDistanceOracle(k=0)


def test_mahalanobis_matches_direct_formula():
    rng = np.random.default_rng(3)
    emb = np.vstack([rng.normal([0, 0, 0], 1, size=(200, 3)), rng.normal([6, 0, 0], 1, size=(200, 3))])
    labels = np.r_[np.zeros(200, int), np.ones(200, int)]
    probs = np.tile([[0.5, 0.5]], (400, 1))
    oracle = MahalanobisOracle().fit(_ref(probs, labels, emb=emb))
    q = np.array([[0.0, 0, 0], [6, 0, 0], [3, 4, -1]])
    got = oracle.signal(OracleBatch(np.tile([[0.5, 0.5]], (3, 1)), q))
    prec, means = oracle._precision, oracle._means
    want = [min(math.sqrt((x - m) @ prec @ (x - m)) for m in means) for x in q]
    np.testing.assert_allclose(got, want, rtol=1e-9)
    np.testing.assert_allclose(means, [emb[:200].mean(0), emb[200:].mean(0)])
    assert got[2] > 3 * max(got[0], got[1])  # far from both class means


def test_atc_threshold_and_estimate_exact():
    # Max-softmax 0.6..0.95; 6 of 8 correct -> exactly 6 reference inputs above the threshold.
    conf = np.array([0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95])
    probs = np.column_stack([conf, 1 - conf])
    labels = np.array([1, 0, 0, 0, 0, 0, 0, 1])  # two errors: 0.6 and 0.95
    atc = ATCOracle("max_softmax").fit(_ref(probs, labels))
    assert atc.threshold == 0.65
    assert atc.estimate(OracleBatch(probs)) == 0.75
    target = np.column_stack([[0.62, 0.66, 0.9, 0.99], [0.38, 0.34, 0.1, 0.01]])
    np.testing.assert_array_equal(atc.score(OracleBatch(target)), [0, 1, 1, 1])


def test_doc_is_confidence_minus_reference_gap():
    conf = np.array([0.9, 0.9, 0.8, 0.8])
    probs = np.column_stack([conf, 1 - conf])
    doc = DoCOracle().fit(_ref(probs, [0, 0, 0, 1]))  # acc 0.75, mean conf 0.85 -> gap 0.10
    assert doc.gap == pytest.approx(0.10)
    target = np.column_stack([[0.7, 0.6], [0.3, 0.4]])
    assert doc.estimate(OracleBatch(target)) == pytest.approx(0.55)


def test_batch_validation_names_fields():
    with pytest.raises(ValueError, match="shadow_probs"):
        OracleBatch(np.array([[0.5, 0.5]]), None, np.array([[0.5, 0.5], [0.5, 0.5]]))
    with pytest.raises(ValueError, match="embeddings"):
        OracleBatch(np.array([[0.5, 0.5]]), np.zeros((2, 3)))
