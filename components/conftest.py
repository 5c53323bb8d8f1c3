"""Fixtures for the component tests: a real (small) classifier and operational records it logged.

The classifier is a nearest-centroid classifier on 5,000 MNIST training images with a softmax over
negative squared distances (about 80 % clean accuracy, 10 % on translated digits, fitted in well
under a second); the stream is the ``sudden`` scenario (translated digits from
step 4), logged in the sidecar's record format by :mod:`daic.components.testing.operational`.
"""
from __future__ import annotations

import numpy as np
import pytest

from daic.data.mnist import load_split
from daic.data.scenarios import build_scenario
from daic.storage import open_store
from daic.components.testing.operational import write_operational

DEPLOYMENT = "mnist"


@pytest.fixture(scope="session")
def small_classifier():
    train = load_split("train")
    x, y = train.images[:5000].reshape(5000, -1), train.labels[:5000]
    centroids = np.stack([x[y == c].mean(axis=0) for c in range(10)])

    def predict(images: np.ndarray) -> dict[str, np.ndarray]:
        flat = images.reshape(len(images), -1)
        logits = -0.5 * ((flat[:, None, :] - centroids[None]) ** 2).sum(axis=-1)
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        return {"probs": probs / probs.sum(axis=1, keepdims=True)}

    return predict


@pytest.fixture(scope="session")
def drifted_scenario():
    return build_scenario("sudden", seed=3, batch_size=50, n_steps=8, drift_start=4,
                          corruption="translate", severity=3)


@pytest.fixture
def operational_store(tmp_path, small_classifier, drifted_scenario):
    """A file store holding 8 logged batches of 50 inputs (the last 4 drifted); returns (store, stream)."""
    store = open_store(f"file://{tmp_path / 'store'}")
    stream = write_operational(store, DEPLOYMENT, drifted_scenario, small_classifier)
    return store, stream


#: abstain bound of :func:`abstaining_store`'s stream (P(correct) is the classifier's max softmax there)
ABSTAIN_BOUND = 0.5


@pytest.fixture
def abstaining_store(tmp_path, small_classifier, drifted_scenario):
    """A logged operational stream whose records flag as abstained the inputs with max softmax below
    ``ABSTAIN_BOUND`` (issue 21, item 4): (store, stream)."""
    def predict(images):
        out = small_classifier(images)
        out["abstained"] = out["probs"].max(axis=1) < ABSTAIN_BOUND
        return out

    store = open_store(f"file://{tmp_path / 'store'}")
    stream = write_operational(store, DEPLOYMENT, drifted_scenario, predict)
    return store, stream
