"""A window per cycle: the operator passes each run ``since``/``until`` (since the previous cycle
started, at most ``sampling.windowHours`` back), and the sampling step reads only that window.

Pure functions and the real sampling step on a file store; no fakes."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import zlib

import numpy as np
import pytest
import yaml

from daic.components.sample_operational.logic import SampleConfig, run
from daic.components.sample_operational.operational import parse_time
from daic.operators.observations import EstimateReading
from daic.operators.reconcile import CycleIdentity, pipeline_params, sampling_window
from daic.operators.spec import InvalidSpec, parse_spec
from daic.sidecar.records import OperationalRecords, write_batch
from daic.storage import open_store

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=timezone.utc)


def _spec(**extra):
    raw = yaml.safe_load(open("manifests/examples/assessmentcycle-mnist.yaml"))["spec"]
    raw.update(extra)
    return parse_spec(raw)


def test_window_starts_at_the_previous_cycle_but_never_further_back_than_window_hours():
    assert sampling_window(24, None, NOW) == (NOW - timedelta(hours=24), NOW)
    recent = NOW - timedelta(hours=3)
    assert sampling_window(24, recent, NOW) == (recent, NOW)
    assert sampling_window(24, NOW - timedelta(days=9), NOW) == (NOW - timedelta(hours=24), NOW)
    assert sampling_window(1.5, None, NOW)[0] == NOW - timedelta(minutes=90)
    # a previous start at or after now (clock skew) does not give an empty window
    assert sampling_window(24, NOW + timedelta(seconds=5), NOW)[0] == NOW - timedelta(hours=24)


def test_the_spec_field_has_a_documented_default_and_bounds():
    assert _spec().sampling.window_hours == 24.0
    assert _spec(sampling={"windowHours": 6}).sampling.window_hours == 6.0
    for bad in (0, -1, 9000):
        with pytest.raises(InvalidSpec, match="sampling.windowHours"):
            _spec(sampling={"windowHours": bad})


def test_every_run_gets_since_and_until_and_a_spec_parameter_still_wins():
    reading = EstimateReading(accuracy=0.7, n=500, observed_at=NOW, model_version="v0001")
    ident = CycleIdentity(name="mnist", uid="1234")
    window = sampling_window(24, NOW - timedelta(hours=2), NOW)
    params = pipeline_params(_spec(), ident, "run-1", 0.8, reading, window)
    assert parse_time(params["since"], "since") == (NOW - timedelta(hours=2)).timestamp()
    assert parse_time(params["until"], "until") == NOW.timestamp()
    pinned = _spec(pipeline={"parameters": {"since": "1700000000"}})
    assert pipeline_params(pinned, ident, "run-1", 0.8, reading, window)["since"] == "1700000000"


def _records(n, t0, rid, step=60.0):
    rng = np.random.default_rng(zlib.crc32(rid.encode()))
    probs = rng.dirichlet(np.ones(10), size=n)
    return OperationalRecords(
        ids=[f"{rid}:{i}" for i in range(n)], request_ids=[rid] * n, times=t0 + np.arange(n) * step,
        inputs=rng.random((n, 28, 28)), predictions=probs.argmax(1), probs=probs, embeddings=rng.random((n, 4)),
        shadow_probs=probs, p_correct=rng.random(n), drift=rng.random(n), model_version=["v1"] * n)


def test_the_step_reads_only_the_window_and_by_default_only_the_last_window_hours(tmp_path):
    """Three days of records, one part per hour: a cycle's window opens only its own partitions,
    and a run given no window reads the last 24 hours before the newest record, not the history."""
    store = open_store(f"file://{tmp_path}")
    t0 = datetime(2026, 12, 1, tzinfo=timezone.utc).timestamp()
    for h in range(72):
        write_batch(store, "mnist", _records(20, t0 + h * 3600, f"h{h}", step=60.0), seq=h)
    since, until = t0 + 10 * 3600 + 600, t0 + 13 * 3600
    result = run(store, SampleConfig(sampler="srs", budget=8, cycle="w", since=str(since), until=str(until)))
    sample = store.get_json("cycles/w/sample.json")
    assert result.pool_size == 20 - 10 + 20 + 20  # hour 10 from minute 10, hours 11 and 12
    assert sample["scan"]["parts_read"] == 3 and sample["parts"] == 3
    default = run(store, SampleConfig(sampler="srs", budget=8, cycle="d"))
    assert default.pool_size == 24 * 20
    assert store.get_json("cycles/d/sample.json")["scan"]["parts_read"] == 24
    everything = run(store, SampleConfig(sampler="srs", budget=8, cycle="all", since="0"))
    assert everything.pool_size == 72 * 20
