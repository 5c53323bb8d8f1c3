"""Shared fixtures. The S3 server (SeaweedFS) and the Kubernetes control plane are real, each started
once per test session."""
from __future__ import annotations

import os

import pytest

from daic.storage.seaweedfs import SeaweedS3

# `kube` (the real control plane) is defined in the repository's root conftest.py, for components/ too.


@pytest.fixture(scope="session")
def seaweed():
    """A running SeaweedFS S3 gateway on a free loopback port, stopped after the session."""
    with SeaweedS3() as server:
        yield server


@pytest.fixture
def s3_env(seaweed, monkeypatch):
    """Point daic.storage's S3 settings at the test server."""
    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MINIO_SECURE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in seaweed.env().items():
        monkeypatch.setenv(name, value)
    return seaweed


@pytest.fixture(autouse=True)
def _no_ambient_store(monkeypatch):
    """Tests never write to a developer's real store by accident."""
    if "DAIC_STORE" in os.environ:
        monkeypatch.delenv("DAIC_STORE")
