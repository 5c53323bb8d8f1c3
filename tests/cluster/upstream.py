"""The CRDs daic's manifests need, fetched at test time from the Go module proxy at pinned versions.

``go mod download -json MODULE@VERSION`` puts the module in Go's module cache (checked against the
checksum database) and prints its folder; the CRD files are read from there. Nothing upstream is
committed to this repository.

Seldon Core v1's module (``github.com/seldonio/seldon-core/operator``) is refused by the module
proxy these machines reach ("403 This module version is not available", for every version tried:
v1.17.1, v1.18.0, v1.18.1, v1.18.2; the executor and root modules too). Until it is served,
:func:`seldon_standin_crd` registers the SeldonDeployment type with Seldon's group, version,
names, scope and subresources but an open schema: the real server then stores, patches,
authorises, watches and versions SeldonDeployments (what the operator and RBAC tests need), but
does not check their spec; daic's own check (``daic.deploy``) still does. When the module is
served, the real CRD is used instead, without a change here.
"""
from __future__ import annotations

import json
import os
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

GO_TIMEOUT_S = 300.0


class UpstreamUnavailable(RuntimeError):
    """The module proxy does not serve the module (or Go is missing); the message says which."""


@dataclass(frozen=True)
class CrdSource:
    module: str
    version: str
    folder: str
    files: tuple[str, ...]


KUBERAY = CrdSource("github.com/ray-project/kuberay/ray-operator", "v1.5.0", "config/crd/bases",
                    ("ray.io_rayclusters.yaml", "ray.io_rayjobs.yaml"))
# The version manifests/monitoring is written against (docs/cluster.md).
PROMETHEUS_OPERATOR = CrdSource("github.com/prometheus-operator/prometheus-operator", "v0.93.0",
                                "example/prometheus-operator-crd",
                                ("monitoring.coreos.com_servicemonitors.yaml",
                                 "monitoring.coreos.com_podmonitors.yaml",
                                 "monitoring.coreos.com_prometheusrules.yaml"))
SELDON = CrdSource("github.com/seldonio/seldon-core/operator", "v1.18.2", "config/crd/bases",
                   ("machinelearning.seldon.io_seldondeployments.yaml",))


@lru_cache(maxsize=None)
def module_dir(module: str, version: str) -> Path:
    """The folder of ``module@version`` in Go's module cache, downloading it if needed."""
    env = {**os.environ, "GOFLAGS": "-mod=mod"}
    with tempfile.TemporaryDirectory() as outside_any_module:
        try:
            proc = subprocess.run(["go", "mod", "download", "-json", f"{module}@{version}"],
                                  cwd=outside_any_module, env=env, capture_output=True, text=True,
                                  timeout=GO_TIMEOUT_S, check=False)
        except FileNotFoundError as exc:
            raise UpstreamUnavailable(f"go is not on PATH: cannot fetch {module}@{version}") from exc
    try:
        info = json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise UpstreamUnavailable(f"go mod download {module}@{version} failed: {proc.stderr.strip()}") from None
    if info.get("Error") or not info.get("Dir"):
        raise UpstreamUnavailable(f"{module}@{version}: {info.get('Error') or proc.stderr.strip()}")
    return Path(info["Dir"])


def crds(source: CrdSource) -> list[dict[str, Any]]:
    folder = module_dir(source.module, source.version) / source.folder
    return [yaml.safe_load((folder / name).read_text()) for name in source.files]


def seldon_standin_crd() -> dict[str, Any]:
    """SeldonDeployment's identity as Seldon Core 1.18 registers it, without its schema."""
    open_object = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    return {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "seldondeployments.machinelearning.seldon.io",
                     "annotations": {"daic.dev/stand-in": "Seldon's Go module is not served; open schema"}},
        "spec": {
            "group": "machinelearning.seldon.io", "scope": "Namespaced",
            "names": {"kind": "SeldonDeployment", "listKind": "SeldonDeploymentList",
                      "plural": "seldondeployments", "singular": "seldondeployment",
                      "shortNames": ["sdep"]},
            "versions": [{
                "name": "v1", "served": True, "storage": True,
                "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.replicas",
                                                         "statusReplicasPath": ".status.replicas"}},
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "apiVersion": {"type": "string"}, "kind": {"type": "string"},
                    "metadata": {"type": "object"}, "spec": open_object, "status": open_object}}},
            }],
        },
    }


def all_crds() -> tuple[list[dict[str, Any]], list[str]]:
    """Every upstream CRD daic's objects need, and notes on the ones that are stand-ins."""
    with ThreadPoolExecutor(3) as pool:  # three downloads at once
        kuberay, prometheus, seldon = (pool.submit(crds, s) for s in (KUBERAY, PROMETHEUS_OPERATOR, SELDON))
        docs = kuberay.result() + prometheus.result()
        notes = []
        try:
            docs += seldon.result()
        except UpstreamUnavailable as exc:
            docs.append(seldon_standin_crd())
            notes.append(f"SeldonDeployment CRD is a stand-in with an open schema: {exc}")
    return docs, notes
