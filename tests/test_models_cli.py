"""`daic models list | lineage | show | promote | evaluate` on a registry filled without Ray."""
from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from daic.cli import main
from daic.models.card import DataLineage, LabeledBatchRef
from daic.models.networks import build
from daic.models.reference import ReferenceConfig
from daic.models.registry import ModelRegistry
from daic.storage import open_store

SMALL_REFERENCE = ReferenceConfig(val_limit=32, shift_per_condition=0)


@pytest.fixture
def store(tmp_path):
    store = open_store(f"file://{tmp_path}")
    registry = ModelRegistry(store, "mnist")
    for seed, parent, labeled in ((1, None, 0), (2, "v0001", 40), (3, "v0002", 80)):
        torch.manual_seed(seed)
        refs = [LabeledBatchRef(key=f"labels/c{seed}/batch-0.npz", count=labeled, sha256="0" * 64)] if labeled else []
        registry.register(model=build("small_cnn"), shadow=build("shadow_net"), parent=parent,
                          data=DataLineage(dataset="mnist", base_count=100, labeled_batches=refs),
                          metrics={"test_accuracy": 0.9 + seed / 100, "val_accuracy": 0.9}, reference_config=SMALL_REFERENCE)
    registry.promote("v0002")
    return store


def _run(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_list_and_lineage(store):
    out = _run("models", "list", "--store", store.url)
    assert out.exit_code == 0
    for version in ("v0001", "v0002", "v0003"):
        assert version in out.output
    assert "92.00%" in out.output and "93.00%" in out.output
    tree = _run("models", "lineage", "mnist", "--store", store.url)
    assert tree.exit_code == 0
    lines = tree.output.splitlines()
    assert lines[0].startswith("v0001") and lines[1].startswith("└── v0002") and lines[2].startswith("    └── v0003")
    assert "[champion]" in lines[1] and "+80 labeled" in lines[2]


def test_show_promote_and_errors(store):
    card = json.loads(_run("models", "show", "mnist", "champion", "--store", store.url).output)
    assert card["version"] == "v0002" and card["parent"] == "v0001"
    out = _run("models", "promote", "mnist", "v0003", "--expected", "v0001", "--store", store.url)
    assert out.exit_code != 0 and "expected champion 'v0001' but it is 'v0002'" in out.output
    out = _run("models", "promote", "mnist", "v0003", "--expected", "v0002", "--store", store.url)
    assert out.exit_code == 0 and "v0002 -> v0003 (generation 2)" in out.output
    assert ModelRegistry(store, "mnist").champion() == "v0003"
    out = _run("models", "show", "mnist", "v0042", "--store", store.url)
    assert out.exit_code == 2 and "no version 'v0042'" in out.output
    out = _run("models", "lineage", "other", "--store", store.url)
    assert out.exit_code == 1 and "has no versions" in out.output


def test_evaluate_on_a_corrupted_slice(store):
    out = _run("models", "evaluate", "mnist", "--version", "v0001", "--version", "champion", "--corruption", "fog",
               "--severity", "4", "--skip", "100", "--limit", "50", "--store", store.url)
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert lines[0].startswith("mnist v0001: accuracy") and lines[1].startswith("mnist v0002: accuracy")
    assert "test[100:150], fog/4" in lines[0]
    bad = _run("models", "evaluate", "mnist", "--corruption", "smudge", "--store", store.url)
    assert bad.exit_code == 2 and "unknown corruption 'smudge'" in bad.output


@pytest.mark.parametrize("args", [("list",), ("lineage", "mnist"), ("show", "mnist"), ("promote", "mnist", "v0003")])
def test_a_store_failing_after_it_opened_is_a_one_line_error(store, monkeypatch, args):
    """The store answers the open and then fails (unreachable, refusing, timing out): every
    subcommand exits 1 with an error naming the store's failure, never a traceback."""
    from daic.storage import StorageError

    def down(self, *a, **k):
        raise StorageError(f"{self.url}: connection refused")

    for method in ("get_bytes", "get_json", "list", "put_json", "put_bytes", "exists"):
        if hasattr(type(store), method):
            monkeypatch.setattr(type(store), method, down)
    res = CliRunner().invoke(main, ["models", *args, "--store", store.url])
    assert res.exit_code == 1, res.output
    assert res.output.startswith("Error: ") and f"{store.url}: connection refused" in res.output
    assert "Traceback" not in res.output and not isinstance(res.exception, StorageError)
