"""Where ``make control-plane`` puts kube-apiserver and etcd, and at which versions.

The versions are read from the two wrapper modules' go.mod files (the one place they are pinned),
so the Makefile and the tests cannot disagree: ``.cache/k8s/kube-apiserver-v1.37.2`` and
``.cache/k8s/etcd-v3.7.3``.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CACHE = REPO / ".cache" / "k8s"


def required_version(gomod: Path, module: str) -> str:
    """The version ``gomod`` requires of ``module`` (``require MODULE vX`` or inside a block)."""
    match = re.search(rf"^\s*(?:require\s+)?{re.escape(module)}\s+(v\S+)", gomod.read_text(), re.M)
    if not match:
        raise ValueError(f"{gomod} does not require {module}")
    return match.group(1)


KUBERNETES_VERSION = required_version(HERE / "k8sbin" / "go.mod", "k8s.io/kubernetes")
ETCD_VERSION = required_version(HERE / "etcdbin" / "go.mod", "go.etcd.io/etcd/server/v3")


@dataclass(frozen=True)
class Binaries:
    kube_apiserver: Path
    etcd: Path

    @classmethod
    def default(cls) -> "Binaries":
        cache = Path(os.environ.get("DAIC_K8S_CACHE", CACHE))
        return cls(kube_apiserver=cache / f"kube-apiserver-{KUBERNETES_VERSION}",
                   etcd=cache / f"etcd-{ETCD_VERSION}")

    def missing(self) -> list[Path]:
        return [p for p in (self.kube_apiserver, self.etcd) if not os.access(p, os.X_OK)]


KUBERAY_VERSION = required_version(HERE / "kuberaybin" / "go.mod", "github.com/ray-project/kuberay/ray-operator")


def ray_operator() -> Path:
    """KubeRay's operator, built by ``make kuberay-operator`` (optional: make test does not build it)."""
    return Path(os.environ.get("DAIC_K8S_CACHE", CACHE)) / f"ray-operator-{KUBERAY_VERSION}"
