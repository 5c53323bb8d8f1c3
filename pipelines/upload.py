"""Upload the compiled pipeline to Kubeflow Pipelines as a named version (``daic pipeline upload``).

Idempotent, so the cluster's upload Job (manifests/base/pipeline-upload-job.yaml) can run on every
``kubectl apply`` and retry freely: the pipeline is created when no pipeline of that name exists
(KFP gives it a first version named after the pipeline), then the version is uploaded unless a
version of that name exists already, in which case nothing is written. A version that exists with
a *different* spec is reported (``UploadResult.differs``) but left alone: a published version is
immutable, and a changed pipeline needs a new version name. Two uploaders racing are fine: KFP
refuses the second create (409), which is read as "exists".
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from daic.pipelines.submit import PACKAGE

_EQUALS = 1  # kfp's filter operation code for EQUALS (kfp.client.client._FILTER_OPERATIONS)


@dataclass(frozen=True)
class UploadResult:
    pipeline_id: str
    version_id: str
    created_pipeline: bool
    created_version: bool
    differs: bool = False  # an existing version whose spec is not the package's


def _name_filter(name: str) -> str:
    return json.dumps({"predicates": [{"operation": _EQUALS, "key": "display_name", "stringValue": name}]})


def package_spec(path: Path) -> dict[str, Any]:
    """The pipeline spec (first YAML document) of a compiled package; ValueError if it is not one."""
    try:
        docs = list(yaml.safe_load_all(path.read_text()))
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"--package {path}: cannot read a compiled pipeline: {exc}") from None
    if not docs or not isinstance(docs[0], dict) or "pipelineInfo" not in docs[0]:
        raise ValueError(f"--package {path}: not a compiled KFP pipeline (no pipelineInfo)")
    return docs[0]


def _stored_spec(version) -> dict[str, Any] | None:
    spec = getattr(version, "pipeline_spec", None)
    if isinstance(spec, dict) and "pipeline_spec" in spec:  # stored together with its platform spec
        spec = spec["pipeline_spec"]
    return spec if isinstance(spec, dict) else None


def _find_version(client, pipeline_id: str, version: str):
    found = client.list_pipeline_versions(pipeline_id, page_size=2, filter=_name_filter(version))
    versions = found.pipeline_versions or []
    return versions[0] if versions else None


def _is_conflict(exc: Exception) -> bool:
    return getattr(exc, "status", None) == 409


def upload(host: str, package: str | Path | None, name: str, version: str, *, description: str = "",
           namespace: str | None = None, client=None) -> UploadResult:
    """Make sure pipeline ``name`` has version ``version`` holding ``package``."""
    from daic.pipelines.kfp_client import bounded_kfp_client

    if not name or not version:
        raise ValueError("--name and --version must not be empty")
    path = Path(package or PACKAGE)
    spec = package_spec(path)
    if client is None:
        client = bounded_kfp_client(host, namespace)
    created_pipeline = False
    pipeline_id = client.get_pipeline_id(name)
    if pipeline_id is None:
        try:
            pipeline_id = client.upload_pipeline(str(path), pipeline_name=name, description=description or None,
                                                 namespace=namespace).pipeline_id
            created_pipeline = True
        except Exception as exc:  # noqa: BLE001 - only a lost race is expected; anything else re-raises
            if not _is_conflict(exc) or (pipeline_id := client.get_pipeline_id(name)) is None:
                raise
    existing = _find_version(client, pipeline_id, version)
    if existing is None:
        try:
            made = client.upload_pipeline_version(str(path), pipeline_version_name=version, pipeline_id=pipeline_id,
                                                  description=description or None)
            return UploadResult(pipeline_id, made.pipeline_version_id, created_pipeline, True)
        except Exception as exc:  # noqa: BLE001 - as above
            if not _is_conflict(exc) or (existing := _find_version(client, pipeline_id, version)) is None:
                raise
    full = client.get_pipeline_version(pipeline_id, existing.pipeline_version_id)
    stored = _stored_spec(full)
    return UploadResult(pipeline_id, existing.pipeline_version_id, created_pipeline, False,
                        differs=stored is not None and stored != spec)
