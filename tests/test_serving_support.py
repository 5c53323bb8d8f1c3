"""Shared helpers of the serving and sidecar tests (no tests here).

A small real model: SmallCNN and ShadowNet trained for one pass over 1,500 MNIST training images
(about 85 % accurate, so the oracle reference holds errors to learn from), registered with
``daic.models.registry`` into a temporary ``file://`` store with a small oracle reference. The
trained weights are cached under ``.daic/test-cache`` so reruns skip the ~10 s of training.
"""
from __future__ import annotations

import functools
import hashlib
import json
import socket
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".daic" / "test-cache"
SERVING_PYTHON = ROOT / ".venv-serving" / "bin" / "python"
TRAIN_N = 1500
SEED = 0


@functools.lru_cache(maxsize=None)
def trained_weights() -> tuple[bytes, bytes]:
    """(model, shadow) state-dict bytes, trained once and cached on disk."""
    from daic.models.weights import state_dict_to_bytes

    tag = hashlib.sha256(f"small_cnn+shadow_net/{TRAIN_N}/{SEED}/v1".encode()).hexdigest()[:12]
    paths = [CACHE / f"serving-{tag}-{part}.pt" for part in ("model", "shadow")]
    if all(p.exists() for p in paths):
        return paths[0].read_bytes(), paths[1].read_bytes()
    import torch
    from torch.nn import functional as F

    from daic.data.mnist import load_split
    from daic.models.networks import build

    train = load_split("train")
    x = torch.from_numpy(np.ascontiguousarray(train.images[:TRAIN_N]))
    y = torch.from_numpy(np.ascontiguousarray(train.labels[:TRAIN_N]))
    blobs = []
    for arch in ("small_cnn", "shadow_net"):
        torch.manual_seed(SEED)
        net = build(arch)
        opt = torch.optim.Adam(net.parameters(), lr=2e-3)
        net.train()
        for i in range(0, TRAIN_N, 50):
            loss = F.cross_entropy(net(x[i:i + 50]), y[i:i + 50])
            opt.zero_grad()
            loss.backward()
            opt.step()
        blobs.append(state_dict_to_bytes(net.eval()))
    CACHE.mkdir(parents=True, exist_ok=True)
    for path, blob in zip(paths, blobs):
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(blob)
        tmp.replace(path)
    return blobs[0], blobs[1]


def register_version(store, promote: bool = True, name: str = "mnist") -> str:
    """Register the small model as a new version of ``name`` (and make it champion)."""
    from daic.models.card import DataLineage
    from daic.models.reference import ReferenceConfig
    from daic.models.registry import ModelRegistry
    from daic.models.weights import network_from_bytes

    model_bytes, shadow_bytes = trained_weights()
    model = network_from_bytes("small_cnn", model_bytes)
    shadow = network_from_bytes("shadow_net", shadow_bytes)
    registry = ModelRegistry(store, name)
    card = registry.register(
        model=model, shadow=shadow, data=DataLineage(dataset="mnist", base_count=TRAIN_N),
        reference_config=ReferenceConfig(val_limit=800, shift_per_condition=20,
                                         corruptions=("gaussian_noise", "contrast", "translate")),
    )
    if promote:
        registry.promote(card.version)
    return card.version


@functools.lru_cache(maxsize=None)
def _template_store() -> Path:
    """A store with one registered champion version, built once per test session."""
    import tempfile

    from daic.storage import open_store

    import atexit
    import shutil

    root = Path(tempfile.mkdtemp(prefix="daic-serving-template-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    path = root / "store"
    register_version(open_store(f"file://{path}"))
    return path


def registered_store(path: Path):
    """A fresh file:// store at ``path`` holding the small model as champion ``v0001`` (a copy of
    a session template: registering builds oracle references, copying is cheaper)."""
    import shutil

    from daic.storage import open_store

    shutil.copytree(_template_store(), path)
    return open_store(f"file://{path}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mnist_test_images(n: int, start: int = 0) -> tuple[np.ndarray, np.ndarray]:
    from daic.data.mnist import load_split

    test = load_split("test")
    return test.images[start:start + n], test.labels[start:start + n]


def seldon_request(images: np.ndarray) -> bytes:
    return json.dumps({"data": {"ndarray": np.round(images.astype(np.float64), 4).tolist()}}).encode()


def wait_until(predicate, timeout_s: float, what: str, interval_s: float = 0.1):
    """Poll ``predicate`` until it returns a truthy value (returned) or fail naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(interval_s)


def wait_http_ready(proc, url: str, log: Path, timeout_s: float, what: str) -> None:
    """Wait until ``url`` answers 200, failing at once with the log's tail if ``proc`` exits."""
    import requests

    def ready():
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            return requests.get(url, timeout=2).status_code == 200
        except requests.RequestException:
            return False

    wait_until(ready, timeout_s, what)
