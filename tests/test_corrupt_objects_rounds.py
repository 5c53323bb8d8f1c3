"""Labels in rounds when what the later rounds read back has the wrong *contents*.

A real cycle is drawn in rounds by sample-operational on logged operational records (as in
tests/test_corrupt_objects_cycle.py, with ``round_size``): it writes ``sample.json`` (whose
``rounds`` holds the plan) and the window's compact pool ``pool.npz``. Each is replaced by seeded
corrupted variants (tests/corrupt_variants.py) and collect-labels (simulated labeler) drives the
rounds from a fresh copy of the store; it must finish with every label a class or fail with one
StorageError naming the key: never a KeyError/IndexError/AttributeError/TypeError from inside.

The Label Studio backend's own record (``label-studio.json``) is planted the same way between a
submit and the next poll/submit, against the Label Studio stand-in over loopback HTTP
(daic.components.testing.label_studio_standin: the real server cannot run here).
"""
from __future__ import annotations

import io
import json
import re
import shutil

import numpy as np
import pytest

from corrupt_variants import json_variants, npz_bytes, npz_variants
from daic.components import cycle_store
from daic.components.collect_labels.label_studio import LabelStudioBackend, LabelStudioClient
from daic.components.collect_labels.logic import CollectConfig
from daic.components.collect_labels.logic import run as collect
from daic.components.collect_labels.request import LabelRequest
from daic.components.sample_operational.logic import SampleConfig, pool_key, read_pool
from daic.components.sample_operational.logic import run as sample
from daic.components.testing.label_studio_standin import StandInServer
from daic.components.testing.operational import write_operational
from daic.data.scenarios import build_scenario
from daic.storage import StorageError, open_store
from test_corrupt_objects_cycle import SPEC, _classifier

SEEDS = (0, 1, 2)
COLLECT = CollectConfig(backend="simulated", simulated_scenario=json.dumps(SPEC))


@pytest.fixture(scope="module")
def drawn(tmp_path_factory):
    """A store with the first round of cycle c1 drawn (nothing labeled yet)."""
    root = tmp_path_factory.mktemp("rounds") / "store"
    store = open_store(f"file://{root}")
    write_operational(store, "mnist", build_scenario(**SPEC), _classifier())
    sample(store, SampleConfig(sampler="stratified", budget=60, round_size=20, cycle="c1", seed=4))
    assert store.exists(pool_key("c1")) and store.get_json(cycle_store.key("c1", "sample.json"))["rounds"]
    return root


def _collect_from(drawn, tmp_path, key, data):
    """collect-labels on a fresh copy of the drawn store with ``key`` replaced by ``data``:
    None when it labeled every draw with a class or failed naming ``key``; else what went wrong."""
    root = tmp_path / "copy"
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(drawn, root)
    store = open_store(f"file://{root}")
    store.put_bytes(key, data)
    try:
        collect(store, "c1", COLLECT)
    except StorageError as exc:
        return None if key in str(exc) else f"StorageError without the key: {str(exc)[:200]}"
    except Exception as exc:  # noqa: BLE001 -- the failure being looked for
        return f"{type(exc).__name__}: {str(exc)[:200]}"
    labels = cycle_store.read_labels(store, "c1")
    if not labels or not all(0 <= v < 10 for v in labels.values()):
        return f"labels outside the classes: {sorted(set(labels.values()))}"
    return None


def _pool_variants(raw, seed):
    """npz_variants of the pool, whose ``keys`` are uint64 (which npz_variants cannot set to -7):
    drawn on the same bits viewed as int64 and viewed back, so "a negative value" is a key that
    is no input's (2**64 - 7)."""
    with np.load(io.BytesIO(raw)) as npz:
        arrays = {k: npz[k] for k in npz.files}
    assert arrays["keys"].dtype == np.uint64
    for what, data in npz_variants(npz_bytes(**{**arrays, "keys": arrays["keys"].view(np.int64)}), seed):
        try:
            with np.load(io.BytesIO(data)) as npz:
                variant = {k: npz[k] for k in npz.files}
        except Exception:  # noqa: BLE001 -- not an npz: planted as it is
            yield what, data
            continue
        if "keys" in variant and variant["keys"].dtype == np.int64:
            variant["keys"] = variant["keys"].view(np.uint64)
        yield what, npz_bytes(**variant)


@pytest.mark.parametrize("seed", SEEDS)
def test_pool_variants(drawn, tmp_path, seed):
    key = pool_key("c1")
    original = (drawn / key).read_bytes()
    failures = [f"{what}: {problem}" for what, data in _pool_variants(original, seed)
                if (problem := _collect_from(drawn, tmp_path, key, data))]
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("seed", SEEDS)
def test_rounds_plan_variants(drawn, tmp_path, seed):
    """The plan inside sample.json (the whole file's corruptions are tests/test_corrupt_objects_cycle.py's)."""
    key = cycle_store.key("c1", "sample.json")
    doc = json.loads((drawn / key).read_bytes())
    failures = []
    for what, data in json_variants(json.dumps(doc["rounds"]).encode(), seed):
        try:
            plan = json.loads(data)
        except ValueError:
            continue
        if plan is None:  # "rounds": null reads as "not in rounds" (collect_labels.logic): no plan to check
            continue
        problem = _collect_from(drawn, tmp_path, key, json.dumps({**doc, "rounds": plan}).encode())
        if problem:
            failures.append(f"rounds {what}: {problem}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("plan", [[], 0, {}, "", False], ids=repr)
def test_a_falsy_rounds_plan_is_refused_not_read_as_no_rounds(drawn, tmp_path, plan):
    """A cycle drawn for rounds draws its first round only: a plan corrupted to a falsy value must
    not send collect-labels down the single-round path, which would label that round as the
    whole budget. Only "rounds": null (or none) means no rounds."""
    key = cycle_store.key("c1", "sample.json")
    doc = json.loads((drawn / key).read_bytes())
    root = tmp_path / "falsy"
    shutil.copytree(drawn, root)
    store = open_store(f"file://{root}")
    store.put_bytes(key, json.dumps({**doc, "rounds": plan}).encode())
    with pytest.raises(StorageError, match=re.escape(key)):
        collect(store, "c1", COLLECT)


def test_a_pool_whose_parts_do_not_match_is_one_error_naming_the_key(drawn, tmp_path):
    key = pool_key("c1")
    with np.load(io.BytesIO((drawn / key).read_bytes())) as npz:
        arrays = {k: npz[k] for k in npz.files}
    buf = io.BytesIO()
    np.savez(buf, **{**arrays, "part_of": arrays["part_of"] + len(arrays["parts"])})
    copy = tmp_path / "one"
    shutil.copytree(drawn, copy)
    store = open_store(f"file://{copy}")
    store.put_bytes(key, buf.getvalue())
    with pytest.raises(StorageError, match=r"c1/pool\.npz.*part_of"):
        read_pool(store, "c1")


@pytest.fixture
def submitted(drawn, tmp_path):
    root = tmp_path / "ls"
    shutil.copytree(drawn, root)
    store = open_store(f"file://{root}")
    ids, inputs = cycle_store.read_sample_inputs(store, "c1")
    request = LabelRequest(cycle="c1", ids=ids, inputs=inputs, predictions=np.arange(len(ids)) % 10,
                           confidences=np.full(len(ids), 0.5))
    with StandInServer() as server:
        client = LabelStudioClient(server.url, server.standin.personal_token, "auto", sleep=lambda s: None)
        backend = LabelStudioBackend(store, client=client)
        backend.submit(request)
        yield store, backend, request


@pytest.mark.parametrize("seed", SEEDS)
def test_label_studio_record_variants(submitted, seed):
    store, backend, request = submitted
    key = cycle_store.key("c1", "label-studio.json")
    original = store.get_bytes(key)
    failures = []
    for what, data in json_variants(original, seed):
        for call in (backend.poll, backend.submit):
            store.put_bytes(key, data)
            try:
                call(request)
            except StorageError as exc:
                if key not in str(exc):
                    failures.append(f"{what} {call.__name__}: StorageError without the key: {exc}")
            except Exception as exc:  # noqa: BLE001 -- the failure being looked for
                failures.append(f"{what} {call.__name__}: {type(exc).__name__}: {str(exc)[:200]}")
    store.put_bytes(key, original)
    assert backend.poll(request) == {}  # whole again: the project is found, nothing answered yet
    assert not failures, "\n".join(failures)
