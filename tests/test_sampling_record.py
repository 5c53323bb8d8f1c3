"""The assessment record and the label batches, written to a real file:// object store."""
import json

import numpy as np
import pytest

from daic.sampling.active import ActiveModelAssisted
from daic.sampling.intervals import wilson_required_n
from daic.sampling.record import (
    AssessmentRecord,
    build_record,
    check_label_batch,
    load_assessment,
    save_assessment,
    save_label_batches,
)
from daic.sampling.sequential import SequentialConfig, run_assessment
from daic.sampling.simulate import simulate_pool
from daic.storage import open_store

SIM = simulate_pool("drifted", n=3000, seed=2)
IMAGES = np.random.default_rng(0).random((SIM.pool.size, 28, 28), dtype=np.float32)
POS = {i: k for k, i in enumerate(SIM.pool.ids)}


def images_of(ids):
    return IMAGES[[POS[i] for i in ids]]


@pytest.fixture(scope="module")
def assessed():
    design = ActiveModelAssisted()
    cfg = SequentialConfig(budget=150, batch_size=50)
    run = run_assessment(design, SIM.pool, SIM.labeler, cfg, np.random.default_rng(4))
    return design, cfg, run


def test_record_fields_and_json_round_trip(assessed, tmp_path):
    design, cfg, run = assessed
    rec = build_record("c-test-1", design, SIM.pool, run, cfg)
    e = run.estimate
    assert (rec.accuracy, rec.lower, rec.upper, rec.n_labels) == (e.accuracy, e.lower, e.upper, e.n_labels)
    assert rec.n_failures_found == len({i for i, ok in zip(SIM.pool.ids[run.sample.indices], run.correct) if not ok})
    assert rec.srs_labels_needed == wilson_required_n(e.accuracy, e.half_width, 0.95)
    assert rec.sampled_ids == SIM.pool.ids[run.sample.indices].tolist() and len(rec.sampled_ids) == 150
    assert rec.design == {"name": "active", "params": {k: v for k, v in design.__dict__.items() if k != "name"}}
    assert [t["n_draws"] for t in rec.trace] == [50, 100, 150]
    store = open_store(f"file://{tmp_path}/store")
    key = save_assessment(store, rec)
    assert key == "cycles/c-test-1/assessment.json"
    assert json.loads((tmp_path / "store" / key).read_text())["srs_labels_needed"] == rec.srs_labels_needed
    assert load_assessment(store, "c-test-1") == rec


def test_label_batches_follow_the_contract(assessed, tmp_path):
    _, _, run = assessed
    store = open_store(f"file://{tmp_path}/store")
    keys = save_label_batches(store, "c-test-1", run, images_of)
    assert keys == [f"labels/c-test-1/batch-{n}.npz" for n in range(3)]
    got_ids, got_labels = [], []
    for k in keys:
        a = store.get_arrays(k)
        assert a["images"].dtype == np.float32 and a["images"].shape[1:] == (28, 28)
        assert a["labels"].dtype == np.int64 and a["ids"].dtype.kind == "U"
        assert np.array_equal(a["images"], images_of(a["ids"]))
        got_ids += a["ids"].tolist()
        got_labels += a["labels"].tolist()
    # Every labeled input exactly once, with its true class.
    assert sorted(got_ids) == sorted(run.labeled_ids.tolist()) and len(set(got_ids)) == len(got_ids)
    assert got_labels == SIM.labeler(np.array(got_ids)).tolist()
    with pytest.raises(ValueError, match="already holds label batches"):
        save_label_batches(store, "c-test-1", run, images_of)


def test_bad_records_and_batches_are_refused(assessed):
    design, cfg, run = assessed
    with pytest.raises(ValueError, match="cycle id"):
        build_record("../escape", design, SIM.pool, run, cfg)
    with pytest.raises(ValueError, match="lacks field"):
        AssessmentRecord.from_json({"cycle": "x"})
    ok = (np.zeros((2, 28, 28), np.float32), np.array([1, 2]), np.array(["a", "b"]))
    check_label_batch(*ok)
    with pytest.raises(ValueError, match="images must have shape"):
        check_label_batch(np.zeros((2, 28, 27)), ok[1], ok[2])
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        check_label_batch(ok[0] + 2, ok[1], ok[2])
    with pytest.raises(ValueError, match="non-negative integer"):
        check_label_batch(ok[0], np.array([1.0, 2.0]), ok[2])
