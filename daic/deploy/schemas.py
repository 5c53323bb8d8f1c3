"""Schema validation: built-in kinds against Kubernetes' OpenAPI schemas, custom resources
against their CRD's ``openAPIV3Schema``.

Built-in kinds use ``kubernetes-validate`` (its schemas ship in the wheel, so no network), in
strict mode: an unknown field is an error, as it is for ``kubectl apply`` with server-side field
validation. Pod specs inside custom resources (RayCluster groups, SeldonDeployment
componentSpecs) are checked the same way by wrapping them in a ``v1/PodTemplate``.

CRD schemas are OpenAPI 3.0 with Kubernetes extensions; :func:`crd_json_schema` turns one into a
JSON Schema (nullable, int-or-string, and "no unknown fields" unless the schema preserves them,
since the API server silently prunes unknown fields: a misspelt field would be lost, not refused).
CEL rules (``x-kubernetes-validations``) are not evaluated here.
"""
from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import jsonschema

from daic.deploy.pods import as_pod_template, pod_sites
from daic.deploy.problems import Problem, describe, join

#: The Kubernetes versions whose schemas every built-in object must satisfy: the oldest release
#: docs/cluster.md supports and a current one.
KUBERNETES_VERSIONS: tuple[str, ...] = ("1.30.0", "1.33.0")


def _path(parts: Any) -> str:
    out = ""
    for p in parts:
        out = join(out, p)
    return out


def validate_builtin(obj: dict[str, Any], version: str) -> list[Problem]:
    """Problems of a built-in-kind object under Kubernetes ``version``'s strict schema."""
    import kubernetes_validate

    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [Problem(describe(obj), _path(exc.path), f"{exc.message} (Kubernetes {version} schema)")]
    except kubernetes_validate.SchemaNotFoundError as exc:
        return [Problem(describe(obj), "", f"no Kubernetes {version} schema for {obj.get('apiVersion')}/"
                                           f"{obj.get('kind')}: {exc.message}")]
    return []


def validate_embedded_pods(obj: dict[str, Any], version: str) -> list[Problem]:
    """Every pod spec inside ``obj`` checked as a ``v1/PodTemplate``'s template."""
    problems = []
    for site in pod_sites(obj):
        for p in validate_builtin(as_pod_template(site), version):
            inner = p.path.removeprefix("template.spec").removeprefix("template")
            problems.append(Problem(describe(obj), site.path + inner, p.message))
    return problems


# --- CRDs -----------------------------------------------------------------------------------


def crd_versions(crd: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{version name: openAPIV3Schema}`` of an apiextensions.k8s.io/v1 CRD."""
    out = {}
    for v in crd.get("spec", {}).get("versions", []):
        schema = (v.get("schema") or {}).get("openAPIV3Schema")
        if schema is None:
            raise ValueError(f"CRD {crd.get('metadata', {}).get('name')}: version {v.get('name')} has no openAPIV3Schema")
        out[v["name"]] = schema
    return out


def crd_json_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A JSON Schema (draft 7) equivalent of a CRD structural schema, closed to unknown fields."""
    return _convert(copy.deepcopy(schema), top=True)


def _convert(node: Any, top: bool = False) -> Any:
    if isinstance(node, list):
        return [_convert(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _convert(v) for k, v in node.items()}
    if out.pop("x-kubernetes-int-or-string", False):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}] + out.get("anyOf", [])
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"]
    preserve = out.pop("x-kubernetes-preserve-unknown-fields", False)
    for key in [k for k in out if k.startswith("x-kubernetes-")]:
        out.pop(key)
    if "properties" in out and "additionalProperties" not in out and not preserve:
        out["additionalProperties"] = False
    if top:
        # apiVersion/kind/metadata are the API server's; metadata is checked by name rules below.
        props = out.setdefault("properties", {})
        for key in ("apiVersion", "kind", "metadata"):
            props.setdefault(key, {})
        out["required"] = sorted(set(out.get("required", [])) | {"apiVersion", "kind", "metadata"})
    return out


def crd_validator(crd: dict[str, Any]) -> Callable[[dict[str, Any]], list[Problem]]:
    """A function giving the problems of an object of ``crd``'s kind (any served version)."""
    spec = crd["spec"]
    group, kind = spec["group"], spec["names"]["kind"]
    validators = {
        f"{group}/{name}": jsonschema.Draft7Validator(crd_json_schema(schema))
        for name, schema in crd_versions(crd).items()
    }

    def validate(obj: dict[str, Any]) -> list[Problem]:
        where = describe(obj)
        if obj.get("kind") != kind:
            return [Problem(where, "kind", f"expected {kind}, got {obj.get('kind')!r}")]
        validator = validators.get(obj.get("apiVersion"))
        if validator is None:
            return [Problem(where, "apiVersion", f"{obj.get('apiVersion')!r} is not served by CRD "
                                                 f"{crd['metadata']['name']} (served: {', '.join(sorted(validators))})")]
        problems = [Problem(where, _path(e.absolute_path), e.message)
                    for e in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))]
        problems += _name_problems(obj)
        return problems

    return validate


def _name_problems(obj: dict[str, Any]) -> list[Problem]:
    import re

    name = (obj.get("metadata") or {}).get("name", "")
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*", name or "") or len(name) > 253:
        return [Problem(describe(obj), "metadata.name", f"{name!r} is not a DNS-1123 subdomain")]
    return []
