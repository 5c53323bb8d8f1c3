"""What the API server does with a CRD's OpenAPI schema, for tests: defaulting and validation.

Kubernetes applies ``default`` values (objects first defaulted to ``{}`` where the schema says so,
then their properties), validates with OpenAPI v3 (JSON Schema draft 4 keywords: ``minimum`` with
a boolean ``exclusiveMinimum``) and prunes unknown fields. This fake is stricter on the last point:
it *reports* unknown fields instead of dropping them, so a status the operator (or kopf) writes
that the schema would silently lose fails a test instead.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import yaml

REPO = Path(__file__).resolve().parents[2]
CRD_PATH = REPO / "manifests" / "crd" / "assessmentcycles.daic.dev.yaml"


def load_crd(path: Path = CRD_PATH) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def crd_schema(crd: dict[str, Any] | None = None, version: str = "v1alpha1") -> dict[str, Any]:
    crd = crd or load_crd()
    for v in crd["spec"]["versions"]:
        if v["name"] == version:
            return v["schema"]["openAPIV3Schema"]
    raise KeyError(version)


def apply_defaults(obj: Any, schema: dict[str, Any]) -> Any:
    """A copy of ``obj`` with the schema's defaults filled in, as the API server does."""
    obj = copy.deepcopy(obj)
    _default(obj, schema)
    return obj


def _default(obj: Any, schema: dict[str, Any]) -> None:
    if isinstance(obj, dict) and schema.get("type") == "object":
        for key, sub in (schema.get("properties") or {}).items():
            if key not in obj and "default" in sub:
                obj[key] = copy.deepcopy(sub["default"])
            if key in obj:
                _default(obj[key], sub)
    elif isinstance(obj, list) and "items" in schema:
        for item in obj:
            _default(item, schema["items"])


def unknown_fields(obj: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Paths in ``obj`` the schema does not declare (what Kubernetes would prune)."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    found: list[str] = []
    if isinstance(obj, dict) and schema.get("type") == "object":
        props = schema.get("properties")
        if props is None:  # a free-form object such as metadata
            return []
        for key, value in obj.items():
            if key not in props:
                found.append(f"{path}.{key}")
            else:
                found += unknown_fields(value, props[key], f"{path}.{key}")
    elif isinstance(obj, list) and "items" in schema:
        for i, item in enumerate(obj):
            found += unknown_fields(item, schema["items"], f"{path}[{i}]")
    return found


def validate(obj: Any, schema: dict[str, Any] | None = None) -> list[str]:
    """All problems with ``obj`` (defaults applied first): schema violations and unknown fields."""
    schema = schema or crd_schema()
    full = apply_defaults(obj, schema)
    validator = jsonschema.Draft4Validator(schema)
    problems = [f"{'.'.join(str(p) for p in err.absolute_path) or '<root>'}: {err.message}"
                for err in sorted(validator.iter_errors(full), key=lambda e: list(e.absolute_path))]
    problems += [f"{p}: unknown field (Kubernetes would prune it)" for p in unknown_fields(full, schema)]
    return problems


_MINIMAL_SPEC = {"deployment": {"name": "mnist"}, "estimate": {"url": "http://s/estimate"},
                 "trigger": {"threshold": 0.9}}


def minimal_spec() -> dict:
    """The smallest valid AssessmentCycle spec, a fresh copy each call: defaulting and validation
    work in place, so one shared dict would carry one test's defaults into the next."""
    return copy.deepcopy(_MINIMAL_SPEC)


def spec_with(change: dict) -> dict:
    """The minimal spec with ``change`` merged one level deep; a None value removes the key."""
    spec = minimal_spec()
    for key, value in change.items():
        if value is None:
            spec.pop(key, None)
        elif isinstance(value, dict) and isinstance(spec.get(key), dict):
            for k, v in value.items():
                if v is None:
                    spec[key].pop(k, None)
                else:
                    spec[key][k] = v
        else:
            spec[key] = value
    return spec
