"""Storage wiring: the bucket Job really creates the bucket (run here against a real S3 server,
SeaweedFS), every pod that reaches the store gets the endpoint and the credentials, and the
Secret docs/cluster.md tells the user to create holds exactly the keys daic.storage reads.
"""
from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from minio import Minio

from daic.deploy.pods import container_sites
from daic.deploy.render import kustomize

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "manifests"
DOCS = ROOT / "docs" / "cluster.md"
CREDENTIALS = {"MINIO_ACCESS_KEY", "MINIO_SECRET_KEY"}


@functools.cache
def render(overlay: str) -> tuple:
    return tuple(kustomize(MANIFESTS / "overlays" / overlay))


def named(kind: str, name: str) -> dict:
    return next(o for o in render("gpu") if o["kind"] == kind and o["metadata"]["name"] == name)


def run_job_command(container: dict, env: dict[str, str]) -> subprocess.CompletedProcess:
    command = list(container["command"]) + list(container.get("args", []))
    assert command[0] == "python", "the bucket Job runs python in the daic-pipelines image"
    return subprocess.run([sys.executable, *command[1:]], env={"PATH": os.environ["PATH"], **env},
                          capture_output=True, text=True, timeout=60, check=False)


def test_bucket_job_creates_the_bucket(seaweed):
    job = named("Job", "daic-create-bucket")
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["envFrom"] == [{"configMapRef": {"name": "daic-storage"}},
                                                 {"secretRef": {"name": "daic-store"}}]
    settings = dict(named("ConfigMap", "daic-storage")["data"])
    # What differs on a cluster: the endpoint (here the test server) and the Secret's values.
    settings.update(seaweed.env())
    bucket = f"daic-job-{uuid.uuid4().hex[:8]}"
    fresh = {**settings, "DAIC_STORE": f"s3://{bucket}"}
    client = Minio(seaweed.endpoint.split("://")[-1], access_key=seaweed.access_key,
                   secret_key=seaweed.secret_key, secure=False)
    assert not client.bucket_exists(bucket)
    for _ in range(2):  # a rerun (kubectl apply after the TTL) is harmless
        proc = run_job_command(container, fresh)
        assert proc.returncode == 0, proc.stderr
        assert f"bucket ready: s3://{bucket}" in proc.stdout
    assert client.bucket_exists(bucket)
    proc = run_job_command(container, settings)  # the rendered bucket name, unchanged
    assert proc.returncode == 0, proc.stderr
    assert client.bucket_exists(settings["DAIC_STORE"].removeprefix("s3://").split("/")[0])


def test_bucket_job_fails_clearly_without_credentials(seaweed):
    container = named("Job", "daic-create-bucket")["spec"]["template"]["spec"]["containers"][0]
    settings = {**named("ConfigMap", "daic-storage")["data"], "MINIO_ENDPOINT": seaweed.endpoint}
    proc = run_job_command(container, settings)
    assert proc.returncode != 0
    assert "MINIO_ACCESS_KEY" in proc.stderr


def _env_names(container: dict, config_maps: dict[str, dict]) -> tuple[set[str], set[str]]:
    """(names from ConfigMaps or literals, names from the daic-store Secret) a container gets."""
    plain, secret = set(), set()
    for src in container.get("envFrom") or []:
        if "configMapRef" in src:
            plain |= set(config_maps[src["configMapRef"]["name"]].get("data", {}))
        if "secretRef" in src and src["secretRef"]["name"] == "daic-store":
            secret |= CREDENTIALS
    for env in container.get("env") or []:
        ref = (env.get("valueFrom") or {}).get("secretKeyRef")
        if ref and ref["name"] == "daic-store" and ref["key"] in CREDENTIALS:
            secret.add(env["name"])
        elif "value" in env:
            plain.add(env["name"])
    return plain, secret


@pytest.mark.parametrize("overlay", ["dev", "gpu"])
def test_every_pod_that_uses_the_store_gets_endpoint_and_credentials(overlay):
    objects = render(overlay)
    config_maps = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ConfigMap"}
    problems = []
    for obj in objects:
        for site in container_sites(obj):
            plain, secret = _env_names(site.container, config_maps)
            if "DAIC_STORE" not in plain and not secret:
                continue
            missing = ({"DAIC_STORE", "MINIO_ENDPOINT"} - plain) | (CREDENTIALS - secret)
            if missing:
                problems.append(f"{obj['kind']}/{obj['metadata']['name']} {site.path}: no {sorted(missing)} "
                                "(envFrom the daic-storage ConfigMap and the daic-store Secret)")
    assert not problems, "\n".join(problems)


def test_docs_create_the_secret_with_the_keys_daic_reads():
    text = DOCS.read_text()
    commands = re.findall(r"kubectl -n daic create secret generic daic-store(?:[^\n]*\\\n)*[^\n]*", text)
    assert commands, "docs/cluster.md must show the command that creates the daic-store Secret"
    keys = set(re.findall(r"--from-literal=([A-Z_]+)=", commands[0]))
    assert keys == CREDENTIALS
