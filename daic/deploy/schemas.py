"""Schema validation: built-in kinds against Kubernetes' OpenAPI schemas, custom resources
against their CRD's ``openAPIV3Schema``.

Built-in kinds use ``kubernetes-validate`` (its schemas ship in the wheel, so no network), in
strict mode: an unknown field is an error, as it is for ``kubectl apply`` with server-side field
validation. Pod specs inside custom resources (RayCluster groups, SeldonDeployment
componentSpecs) are checked the same way by wrapping them in a ``v1/PodTemplate``.

CRD schemas are OpenAPI 3.0 with Kubernetes extensions; :func:`crd_json_schema` turns one into a
JSON Schema (nullable, int-or-string, and "no unknown fields" unless the schema preserves them,
since the API server silently prunes unknown fields: a misspelt field would be lost, not refused).
Defaults are applied before validation, as the API server does. CEL rules
(``x-kubernetes-validations``) are not evaluated here.
"""
from __future__ import annotations

import copy
import functools
import re
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
    """Every problem of a built-in-kind object under Kubernetes ``version``'s strict schema."""
    validator = _builtin_validator(obj.get("apiVersion", ""), obj.get("kind", ""), version)
    if validator is None:
        return [Problem(describe(obj), "", f"no Kubernetes {version} schema for "
                                           f"{obj.get('apiVersion')}/{obj.get('kind')} (a custom resource "
                                           "without a CRD or rules in daic.deploy?)")]
    errors = sorted(validator.iter_errors(obj), key=lambda e: [str(p) for p in e.absolute_path])
    return [Problem(describe(obj), _path(e.absolute_path), f"{e.message} (Kubernetes {version} schema)")
            for e in errors]


@functools.lru_cache(maxsize=256)
def _builtin_validator(api_version: str, kind: str, version: str) -> jsonschema.Validator | None:
    """The strict schema kubernetes-validate ships for ``kind`` at ``version``, as a validator that
    reports every error (``kubernetes_validate.validate`` stops at the first). File layout and
    reference resolution as in kubernetes_validate.utils.validate (version 1.37.0)."""
    from kubernetes_validate import utils
    from referencing import Registry, Resource

    wanted = utils.major_minor(version)
    known = [v for v in utils.all_versions() if _vkey(utils.major_minor(v)) <= _vkey(wanted)]
    if not known:
        raise ValueError(f"kubernetes-validate has no schemas for Kubernetes {version}")
    folder = f"kubernetes-json-schema/v{known[-1]}-local-strict"
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    try:
        schema = utils.schema_contents(f"{folder}/{kind.lower()}-{group_version}.json", version)
    except FileNotFoundError:
        return None
    definitions = utils.schema_contents(f"{folder}/_definitions.json", version)
    registry = Resource.from_contents(definitions) @ (Resource.from_contents(schema) @ Registry())
    return jsonschema.Draft202012Validator(schema, registry=registry)


def _vkey(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split("."))


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


_JUNCTORS = ("anyOf", "allOf", "oneOf", "not")


def _convert(node: Any, top: bool = False, in_junctor: bool = False) -> Any:
    """Nested schemas under anyOf/allOf/oneOf/not are value validations only (structural schemas
    declare fields outside them), so they are never closed to other fields."""
    if isinstance(node, list):
        return [_convert(n, in_junctor=in_junctor) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _convert(v, in_junctor=in_junctor or k in _JUNCTORS) if k != "default" else v
           for k, v in node.items()}
    if out.pop("x-kubernetes-int-or-string", False):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}] + out.get("anyOf", [])
    for bound, exclusive in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
        if out.get(exclusive) is True and bound in out:  # OpenAPI 3.0's boolean form -> draft 7's number
            out[exclusive] = out.pop(bound)
        elif out.get(exclusive) is False:
            out.pop(exclusive)
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"]
    preserve = out.pop("x-kubernetes-preserve-unknown-fields", False)
    for key in [k for k in out if k.startswith("x-kubernetes-")]:
        out.pop(key)
    if "properties" in out and "additionalProperties" not in out and not preserve and not in_junctor:
        out["additionalProperties"] = False
    if top:
        # apiVersion/kind/metadata are the API server's; metadata is checked by name rules below.
        props = out.setdefault("properties", {})
        for key in ("apiVersion", "kind", "metadata"):
            props.setdefault(key, {})
        out["required"] = sorted(set(out.get("required", [])) | {"apiVersion", "kind", "metadata"})
    return out


def apply_defaults(value: Any, schema: dict[str, Any]) -> Any:
    """``value`` with the schema's ``default``s filled in where a field is absent, as the API
    server does before it validates (structural schema defaulting: a default applies inside an
    object that is present, never creates the object around it)."""
    if isinstance(value, dict) and isinstance(schema.get("properties"), dict):
        out = dict(value)
        for key, sub in schema["properties"].items():
            if key not in out and "default" in sub:
                out[key] = copy.deepcopy(sub["default"])
            if key in out:
                out[key] = apply_defaults(out[key], sub)
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [apply_defaults(v, schema["items"]) for v in value]
    return value


def crd_validator(crd: dict[str, Any]) -> Callable[[dict[str, Any]], list[Problem]]:
    """A function giving the problems of an object of ``crd``'s kind (any served version)."""
    spec = crd["spec"]
    group, kind = spec["group"], spec["names"]["kind"]
    schemas = crd_versions(crd)
    validators = {f"{group}/{name}": jsonschema.Draft7Validator(crd_json_schema(schema))
                  for name, schema in schemas.items()}

    def validate(obj: dict[str, Any]) -> list[Problem]:
        where = describe(obj)
        if obj.get("kind") != kind:
            return [Problem(where, "kind", f"expected {kind}, got {obj.get('kind')!r}")]
        validator = validators.get(obj.get("apiVersion"))
        if validator is None:
            return [Problem(where, "apiVersion", f"{obj.get('apiVersion')!r} is not served by CRD "
                                                 f"{crd['metadata']['name']} (served: {', '.join(sorted(validators))})")]
        defaulted = apply_defaults(obj, schemas[obj["apiVersion"].split("/", 1)[1]])
        problems = [Problem(where, _path(e.absolute_path), e.message)
                    for e in sorted(validator.iter_errors(defaulted), key=lambda e: list(map(str, e.absolute_path)))]
        problems += _name_problems(obj)
        return problems

    return validate


def _name_problems(obj: dict[str, Any]) -> list[Problem]:
    name = (obj.get("metadata") or {}).get("name", "")
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*", name or "") or len(name) > 253:
        return [Problem(describe(obj), "metadata.name", f"{name!r} is not a DNS-1123 subdomain")]
    return []
