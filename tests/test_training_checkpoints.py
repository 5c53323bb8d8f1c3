"""Where Ray Train persists checkpoints: inside the object store, for both backends."""
from __future__ import annotations

import pytest

from daic.storage import open_store
from daic.training.checkpoints import checkpoint_location


def test_file_store_checkpoints_live_under_the_store_root(tmp_path):
    store = open_store(f"file://{tmp_path}")
    path, filesystem = checkpoint_location(store, "mnist")
    assert path == f"{tmp_path}/checkpoints/mnist" and filesystem is None


def test_s3_store_checkpoints_go_through_pyarrow_to_the_same_bucket(s3_env):
    pytest.importorskip("pyarrow")
    store = open_store("s3://daic/ckpt-test", create_bucket=True)
    path, filesystem = checkpoint_location(store, "mnist")
    assert path == "daic/ckpt-test/checkpoints/mnist"
    # Write the way Ray Train does (through the pyarrow filesystem) and read back with the store.
    with filesystem.open_output_stream(f"{path}/run-1/checkpoint_000/model.pt") as fh:
        fh.write(b"weights")
    assert store.get_bytes("checkpoints/mnist/run-1/checkpoint_000/model.pt") == b"weights"
