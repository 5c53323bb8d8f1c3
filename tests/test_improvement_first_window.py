"""The new champion's first window is calibrated with the cycle's held-out labels.

Real file store, real registry versions (untrained networks with tiny references: what is tested is
the wiring, deploy -> ``first_window.npz`` -> the sidecar's assessor pool refitting with it), real
``OnlineAssessor``.
"""
from __future__ import annotations

import numpy as np
import pytest

from daic.oracles.self_agreement import SERVED_VIEWS, views_text


def _register(store, parents):
    """Untrained versions (seeded) with a clean reference big enough to fit an assessor on."""
    import torch

    from daic.models.card import DataLineage
    from daic.models.networks import build
    from daic.models.reference import ReferenceConfig
    from daic.models.registry import ModelRegistry

    registry = ModelRegistry(store, "mnist")
    for seed, parent in enumerate(parents, start=1):
        torch.manual_seed(seed)
        registry.register(model=build("small_cnn"), shadow=build("shadow_net"), parent=parent,
                          data=DataLineage(dataset="mnist", base_count=100),
                          reference_config=ReferenceConfig(val_limit=400, shift_per_condition=0),
                          metrics={"test_accuracy": 0.5})
    registry.promote("v0001")


@pytest.fixture
def promoted(tmp_path):
    from daic.components.deploy.logic import DeployConfig, run
    from daic.models.inference import predict
    from daic.models.registry import ModelRegistry
    from daic.storage import open_store

    store = open_store(f"file://{tmp_path / 'store'}")
    _register(store, [None, "v0001"])
    images = np.random.default_rng(0).random((40, 28, 28), dtype=np.float32)
    model, _ = ModelRegistry(store, "mnist").load_networks("v0002")
    truth = predict(model, images).predictions.copy()  # the new version is right on all but 4 of them
    truth[:4] = (truth[:4] + 1) % 10
    store.put_arrays("cycles/c1/holdout.npz", images=images, labels=truth,
                     ids=np.array([f"i{k}" for k in range(40)]))
    store.put_json("cycles/c1/evaluation.json", {"challenger_version": "v0002", "champion_version": "v0001",
                                                  "decision": {"promote": True, "reason": "test"}})
    result = run(store, "c1", "v0002", DeployConfig())
    return store, images, truth, result


def test_deploy_stores_the_new_versions_outputs_on_the_held_out_labels(promoted):
    from daic.models import first_window
    from daic.models.inference import predict
    from daic.models.registry import ModelRegistry

    store, images, truth, result = promoted
    assert result.steps[0] == {"step": "first-window labels", "count": 40}
    stored = store.get_arrays(first_window.key("mnist", "v0002"))
    model, shadow = ModelRegistry(store, "mnist").load_networks("v0002")
    np.testing.assert_array_equal(stored["labels"], truth)
    np.testing.assert_allclose(stored["probs"], predict(model, images).probs, atol=1e-6)
    np.testing.assert_allclose(stored["shadow_probs"], predict(shadow, images).probs, atol=1e-6)


def test_the_sidecars_assessor_for_the_new_champion_is_refitted_with_them(promoted):
    from daic.models import first_window
    from daic.models.registry import load_oracle_reference
    from daic.oracles.pipeline import OnlineAssessor
    from daic.sidecar.assessment import AssessorPool

    store, _images, _truth, _ = promoted
    calibrated = AssessorPool(store, "mnist", window=50).get("v0002")
    plain = AssessorPool(store, "mnist", window=50).get("v0001")  # no first-window file: as fitted
    assert calibrated.labels_used == plain.labels_used + 40
    stored = store.get_arrays(first_window.key("mnist", "v0002"))
    before = OnlineAssessor().fit(*load_oracle_reference(store, "mnist", "v0002"))
    assert str(stored["self_agreement_views"]) == views_text(SERVED_VIEWS) and stored["self_agreement"].shape == (40,)
    scores = lambda a: a.score(stored["probs"], stored["embeddings"], stored["shadow_probs"],  # noqa: E731
                               stored["self_agreement"]).p_correct
    # The model is right on 36 of 40: the refit moves P(correct) on them up, towards the truth (0.9).
    assert scores(calibrated).mean() > scores(before).mean()


def test_too_few_or_malformed_labels_leave_the_assessor_as_fitted(tmp_path):
    from daic.models import first_window
    from daic.storage import open_store

    class Assessor:
        def refit_with_labels(self, *args):
            raise AssertionError("must not refit")

    store = open_store(f"file://{tmp_path / 's'}")
    a = Assessor()
    assert first_window.calibrate(a, store, "mnist", "v0001") is a  # no file
    store.put_arrays(first_window.key("mnist", "v0001"), labels=np.zeros(5, np.int64))
    assert first_window.calibrate(a, store, "mnist", "v0001") is a  # too few
    store.put_arrays(first_window.key("mnist", "v0001"), labels=np.zeros(30, np.int64))
    assert first_window.calibrate(a, store, "mnist", "v0001") is a  # no outputs: logged, ignored


@pytest.mark.parametrize("stored", [None, "rotate:10"])
def test_first_window_labels_over_other_views_leave_the_assessor_as_fitted(tmp_path, caplog, stored):
    """A file without the self-agreement (written before it was served) or over other views than the
    assessor's: not refitted with it (the one rule, daic.oracles.self_agreement.for_assessor)."""
    from daic.models import first_window
    from daic.storage import open_store

    class Assessor:
        uses_self_agreement = True
        self_agreement_views = views_text(SERVED_VIEWS)
        refits = []

        def refit_with_labels(self, *args):
            self.refits.append(args)
            return "refitted"

    store = open_store(f"file://{tmp_path / 's'}")
    n = 30
    arrays = dict(probs=np.full((n, 10), 0.1), embeddings=np.zeros((n, 4)), shadow_probs=np.full((n, 10), 0.1),
                  labels=np.zeros(n, np.int64))
    if stored is not None:
        arrays.update(self_agreement=np.full(n, 0.5), self_agreement_views=np.array(stored))
    store.put_arrays(first_window.key("mnist", "v0001"), **arrays)
    a = Assessor()
    with caplog.at_level("WARNING"):
        assert first_window.calibrate(a, store, "mnist", "v0001") is a
    assert a.refits == []
    assert "the first-window file" in caplog.text
    # the same file over the assessor's own views is used, self-agreement included
    arrays.update(self_agreement=np.full(n, 0.5), self_agreement_views=np.array(views_text(SERVED_VIEWS)))
    store.put_arrays(first_window.key("mnist", "v0001"), **arrays)
    assert first_window.calibrate(a, store, "mnist", "v0001") == "refitted"
    np.testing.assert_array_equal(a.refits[0][4], np.full(n, 0.5))
