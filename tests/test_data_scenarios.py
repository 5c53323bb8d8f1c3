"""Operational scenarios: the recorded truth follows the spec, streams are reproducible."""
from __future__ import annotations

import numpy as np
import pytest

from daic.data.corruptions import CORRUPTIONS
from daic.data.mnist import load_split
from daic.data.scenarios import (
    SCENARIOS,
    OperationalBatch,
    Scenario,
    ScenarioSpec,
    build_scenario,
    make_spec,
    materialise,
    sparkline,
)


@pytest.fixture(scope="module")
def test_split():
    return load_split("test")


def _share_per_step(stream, n_steps: int) -> np.ndarray:
    return np.array([stream.meta["corrupted"][stream.meta["step"] == s].mean()
                     for s in range(n_steps)])


def test_registry_has_the_named_scenarios():
    assert {"stationary", "sudden", "gradual", "recurring", "label-shift", "mixture"} <= set(SCENARIOS)


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_every_scenario_yields_well_formed_batches(name):
    sc = build_scenario(name, seed=0, n_steps=6, batch_size=20, drift_start=2, period=2)
    assert len(sc) == 6 and sc.spec.source == "test"
    batches = list(sc)
    assert [b.step for b in batches] == list(range(6))
    for b in batches:
        assert isinstance(b, OperationalBatch)
        assert b.images.shape == (20, 28, 28) and b.images.dtype == np.float32
        assert b.images.min() >= 0 and b.images.max() <= 1
        assert b.labels.shape == (20,) and b.labels.dtype == np.int64
        assert b.ids.shape == (20,)
        for key in ("corruption", "severity", "corrupted", "source_index", "step"):
            assert b.meta[key].shape == (20,), key
        assert b.ids[3] == f"{name}-0-{b.step}-3"


def test_stationary_is_clean_and_matches_the_source(test_split):
    stream = materialise(build_scenario("stationary", seed=4, n_steps=5, batch_size=50))
    assert not stream.meta["corrupted"].any()
    assert set(stream.meta["corruption"]) == {"identity"}
    assert (stream.meta["severity"] == 0).all()
    idx = stream.meta["source_index"]
    assert np.array_equal(stream.images, test_split.images[idx])
    assert np.array_equal(stream.labels, test_split.labels[idx])
    # a shuffled pass over the source: no input repeats before the source is used up
    assert len(np.unique(idx)) == len(idx)


def test_sudden_drift_truth(test_split):
    spec = dict(n_steps=8, batch_size=40, corruption="contrast", severity=4, drift_start=3,
                share=0.75)
    sc = build_scenario("sudden", seed=1, **spec)
    stream = materialise(sc)
    share = _share_per_step(stream, 8)
    assert share.tolist() == [0, 0, 0] + [0.75] * 5
    assert np.array_equal(share, sc.planned_share())
    hit = stream.meta["corrupted"]
    assert set(stream.meta["corruption"][hit]) == {"contrast"}
    assert set(stream.meta["severity"][hit]) == {4}
    src = test_split.images[stream.meta["source_index"]]
    assert np.array_equal(stream.images[~hit], src[~hit])
    # corrupted inputs carry the corruption: low contrast shrinks each image's spread by 0.16
    ratio = stream.images[hit].std(axis=(1, 2)) / src[hit].std(axis=(1, 2))
    assert np.allclose(ratio, 0.16, atol=1e-3)


def test_gradual_drift_share_rises_linearly():
    sc = build_scenario("gradual", seed=0, n_steps=12, batch_size=50, drift_start=2, drift_end=9,
                        corruption="gaussian_noise")
    share = _share_per_step(materialise(sc), 12)
    expected = [0, 0] + [round(50 * k / 8) / 50 for k in range(1, 9)] + [1.0, 1.0]
    assert np.allclose(share, expected)
    assert np.all(np.diff(share) >= 0)


def test_gradual_default_end_is_the_last_step():
    sc = build_scenario("gradual", n_steps=10, batch_size=10, drift_start=0)
    assert sc.planned_share().tolist() == pytest.approx([k / 10 for k in range(1, 11)])


def test_recurring_drift_alternates():
    sc = build_scenario("recurring", seed=2, n_steps=14, batch_size=10, drift_start=2, period=3,
                        corruption="rotate", severity=2)
    share = _share_per_step(materialise(sc), 14)
    expected = [0, 0] + [1] * 3 + [0] * 3 + [1] * 3 + [0] * 3
    assert share.tolist() == expected


def test_label_shift_follows_class_proportions(test_split):
    props = (0.4, 0.3, 0.1, 0.1, 0.1, 0, 0, 0, 0, 0)
    sc = build_scenario("label-shift", seed=3, n_steps=44, batch_size=100, drift_start=4,
                        class_proportions=props)
    stream = materialise(sc)
    assert not stream.meta["corrupted"].any()
    before = stream.labels[stream.meta["step"] < 4]
    after = stream.labels[stream.meta["step"] >= 4]
    observed = np.bincount(after, minlength=10) / len(after)
    assert np.abs(observed - np.array(props)).max() < 0.03  # 4,000 draws: sd <= 0.008
    assert observed[5:].sum() == 0
    # before the shift the mix is the source's own (every class present, none dominant)
    natural = np.bincount(before, minlength=10) / len(before)
    assert natural.min() > 0.03 and natural.max() < 0.2
    assert np.array_equal(stream.labels, test_split.labels[stream.meta["source_index"]])


def test_mixture_spreads_evenly_over_components():
    mix = (("translate", 2), ("fog", 5), ("shot_noise", 1))
    sc = build_scenario("mixture", seed=5, n_steps=4, batch_size=31, drift_start=1, share=0.9,
                        mixture=mix)
    for b in sc:
        names = b.meta["corruption"][b.meta["corrupted"]]
        if b.step == 0:
            assert names.size == 0
            continue
        assert names.size == round(0.9 * 31)
        counts = [int((names == n).sum()) for n, _ in mix]
        assert max(counts) - min(counts) <= 1
        for n, sev in mix:
            assert set(b.meta["severity"][b.meta["corruption"] == n]) == {sev}


def test_deterministic_under_seed_and_different_across_seeds():
    a = materialise(build_scenario("mixture", seed=11, n_steps=3, batch_size=16, drift_start=1))
    b = materialise(build_scenario("mixture", seed=11, n_steps=3, batch_size=16, drift_start=1))
    c = materialise(build_scenario("mixture", seed=12, n_steps=3, batch_size=16, drift_start=1))
    assert np.array_equal(a.images, b.images) and np.array_equal(a.ids, b.ids)
    for key in a.meta:
        assert np.array_equal(a.meta[key], b.meta[key])
    assert not np.array_equal(a.meta["source_index"], c.meta["source_index"])
    assert not set(a.ids) & set(c.ids)


def test_random_access_equals_iteration():
    sc = build_scenario("sudden", seed=0, n_steps=5, batch_size=8, drift_start=1,
                        corruption="elastic")
    batches = list(sc)
    again = sc.batch(3)
    assert np.array_equal(again.images, batches[3].images)
    assert np.array_equal(again.ids, batches[3].ids)


def test_ids_unique_over_a_long_stream_that_reuses_inputs():
    small = load_split("val")
    sub = type(small)(images=small.images[:50], labels=small.labels[:50])
    stream = materialise(build_scenario("stationary", n_steps=7, batch_size=20, data=sub))
    assert len(set(stream.ids)) == 140
    counts = np.bincount(stream.meta["source_index"], minlength=50)
    assert counts.min() >= 2 and counts.max() <= 3  # 140 draws over 50 inputs, evenly cycled


def test_materialise_shapes():
    stream = materialise(build_scenario("recurring", n_steps=4, batch_size=5, drift_start=1,
                                        period=1))
    images, labels, ids, meta = stream
    assert images.shape == (20, 28, 28) and labels.shape == (20,) and ids.shape == (20,)
    assert meta["step"].tolist() == [s for s in range(4) for _ in range(5)]
    with pytest.raises(ValueError, match="expects a Scenario"):
        materialise("recurring")


@pytest.mark.parametrize("overrides,match", [
    (dict(batch_size=0), "batch_size must be an integer >= 1"),
    (dict(n_steps=2.5), "n_steps must be an integer >= 1"),
    (dict(drift_start=60), r"drift_start must be an integer in \[0, n_steps=60\)"),
    (dict(drift_start=-1), "drift_start"),
    (dict(drift_end=5, drift_start=10), "drift_end must be None or an integer"),
    (dict(share=0.0), r"share must be in \(0, 1\]"),
    (dict(share=1.5), r"share must be in \(0, 1\]"),
    (dict(severity=6), r"severity must be one of \(1, 2, 3, 4, 5\)"),
    (dict(corruption="snow"), "corruption must be one of"),
    (dict(period=0), "period must be an integer >= 1"),
    (dict(seed=-2), "seed must be a non-negative integer"),
    (dict(mixture=()), "at least one"),
    (dict(mixture=(("fog", 9),)), "mixture severity for 'fog'"),
    (dict(mixture=(("snow", 1),)), "mixture corruption 'snow' unknown"),
    (dict(class_proportions=(0.5, 0.5)), "class_proportions must be 10"),
    (dict(class_proportions=(0.2,) * 10), "summing to 1"),
    (dict(source="training"), "source must be one of train, val, test"),
    (dict(dataset="cifar"), "dataset must be one of"),
    (dict(colour="red"), r"unknown scenario field\(s\) \['colour'\]"),
])
def test_bad_specs_are_rejected(overrides, match):
    with pytest.raises(ValueError, match=match):
        make_spec("sudden", **overrides)


def test_unknown_scenario_names_valid_ones():
    with pytest.raises(ValueError) as err:
        build_scenario("tsunami")
    for name in SCENARIOS:
        assert name in str(err.value)
    with pytest.raises(ValueError, match="unknown scenario"):
        ScenarioSpec(name="tsunami")


def test_bad_step_and_missing_classes():
    sc = build_scenario("stationary", n_steps=3, batch_size=2)
    with pytest.raises(ValueError, match=r"step must be an integer in \[0, 3\)"):
        sc.batch(3)
    val = load_split("val")
    only_ones = type(val)(images=val.images[val.labels == 1][:20],
                          labels=val.labels[val.labels == 1][:20])
    with pytest.raises(ValueError, match="absent from the source data"):
        build_scenario("label-shift", n_steps=3, batch_size=4, drift_start=1, data=only_ones)


def test_specs_from_lists_are_normalised_and_hashable():
    spec = make_spec("mixture", mixture=[["fog", 1], ["rotate", 2]],
                     class_proportions=[0.1] * 10)
    assert spec.mixture == (("fog", 1), ("rotate", 2))
    assert hash(spec) == hash(make_spec("mixture", mixture=(("fog", 1), ("rotate", 2)),
                                        class_proportions=(0.1,) * 10))
    assert Scenario(spec).spec is spec


def test_summary_and_sparkline():
    row = build_scenario("sudden", n_steps=10, batch_size=4, drift_start=5).summary()
    assert row["mean_share"] == 0.5 and row["share_over_time"] == "·····█████"
    assert sparkline(np.linspace(0, 1, 9)) == "·▁▂▃▄▅▆▇█"
    assert set(CORRUPTIONS) >= {c for c, _ in make_spec("mixture").mixture}
