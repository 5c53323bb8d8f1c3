"""`daic report` on records whose *contents* are wrong (daic.report).

The run's timeline is written by ``Timeline.save`` and the cycle's records in the shapes the steps
write (as tests/test_report.py does); each is then replaced by seeded corrupted variants
(tests/corrupt_variants.py). Reading the run for the report must give a valid summary or a
StorageError naming the key, never a TypeError/KeyError from inside or a 'nan%' line; through the
CLI it is one line and exit status 1.
"""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from corrupt_variants import check_planted, json_variants, npz_variants
from daic.cli import main
from daic.report.build import summarise
from daic.report.cycles import load_cycle
from daic.report.timeline import Timeline
from daic.storage import open_store
from test_report import _timeline, _write_cycle

SEEDS = (0, 1, 2)


@pytest.fixture
def store(tmp_path):
    store = open_store(f"file://{tmp_path / 'store'}")
    _write_cycle(store)
    _timeline().save(store)
    return store


def _read(store):
    lines = summarise(Timeline.load(store, "r1"), [load_cycle(store, "c1")]).lines
    assert not any("nan" in line.lower() or "inf%" in line for line in lines), lines


def _check(store, key, variants):
    check_planted(store, key, variants, lambda: _read(store))


@pytest.mark.parametrize("seed", SEEDS)
def test_record_variants(store, seed):
    for key in ("runs/r1/timeline.json", "cycles/c1/estimate.json", "cycles/c1/evaluation.json"):
        _check(store, key, json_variants(store.get_bytes(key), seed, n_fields=10))
    for key in ("cycles/c1/sample.npz", "cycles/c1/labels.npz", "cycles/c1/sample-inputs.npz"):
        _check(store, key, npz_variants(store.get_bytes(key), seed))


def test_cli_names_the_key(store, tmp_path):
    key = "cycles/c1/estimate.json"
    doc = json.loads(store.get_bytes(key))
    doc["estimate"]["accuracy"] = "0.7x"
    store.put_bytes(key, json.dumps(doc).encode())
    out = CliRunner().invoke(main, ["report", "--store", store.url, "--out", str(tmp_path / "out")])
    assert out.exit_code == 1 and key in out.output and "estimate.accuracy" in out.output, out.output
    store.put_bytes("runs/r1/timeline.json", b'{"run": "r1", "points": [{"step": "x"}]}')
    out = CliRunner().invoke(main, ["report", "--store", store.url, "--out", str(tmp_path / "out")])
    assert out.exit_code == 1 and "runs/r1/timeline.json" in out.output and "Traceback" not in out.output, out.output
