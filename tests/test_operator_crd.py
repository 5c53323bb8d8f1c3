"""The AssessmentCycle CRD (manifests/crd) and the typed models (operators/spec.py, status.py) say
the same thing; the CRD schema accepts the examples and rejects bad resources, as the API server
would (defaults first, then OpenAPI v3 validation; jsonschema's draft-4 validator because OpenAPI
3.0 uses draft-4 style ``exclusiveMinimum: true``); the models reject the same resources with a
message that names the field.
"""
from __future__ import annotations

import copy
import enum
import types
import typing
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from daic.deploy.check import USER_CREATED, check_objects
from daic.operators.spec import (
    GROUP,
    KIND,
    PLURAL,
    SHORT_NAME,
    VERSION,
    CycleSpec,
    InvalidSpec,
    parse_spec,
)
from daic.operators.status import CycleStatus
from fakes.crd_schema import (
    CRD_PATH, REPO, apply_defaults, crd_schema, load_crd, minimal_spec, spec_with, validate)

CRD = load_crd()
SCHEMA = crd_schema(CRD)
EXAMPLES = sorted((REPO / "manifests" / "examples").glob("*.yaml"))
EXAMPLES = [p for p in EXAMPLES if p.name != "kustomization.yaml"]


def resource(spec: dict) -> dict:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "metadata": {"name": "x"}, "spec": spec}




# -- the CRD object itself -------------------------------------------------------------------------


def test_crd_names_printer_columns_and_status_subresource():
    spec = CRD["spec"]
    assert CRD["metadata"]["name"] == f"{PLURAL}.{GROUP}"
    assert (spec["group"], spec["names"]["kind"], spec["names"]["plural"]) == (GROUP, KIND, PLURAL)
    assert spec["names"]["shortNames"] == [SHORT_NAME]
    (version,) = spec["versions"]
    assert version["name"] == VERSION and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns == {"Deployment": ".spec.deployment.name", "Estimate": ".status.estimate.accuracy",
                       "Threshold": ".status.effectiveThreshold", "Phase": ".status.phase",
                       "Last cycle": ".status.lastCycleTime", "Age": ".metadata.creationTimestamp"}
    # every printer column points at a field the schema has
    for path in columns.values():
        node = SCHEMA
        for part in path.strip(".").split(".")[: -1 if path.startswith(".metadata") else None]:
            node = node["properties"][part]


def test_crd_passes_the_api_servers_rules_for_crds_and_status_allows_kopf():
    problems = check_objects([CRD], external=USER_CREATED)
    assert not problems, "\n".join(map(str, problems))
    kopf = SCHEMA["properties"]["status"]["properties"]["kopf"]
    assert kopf.get("x-kubernetes-preserve-unknown-fields") is True
    status = {"kopf": {"progress": {"h": {"started": "2025-01-01T00:00:00Z", "retries": 1}}}, "phase": "Monitoring"}
    assert validate({**resource(minimal_spec()), "status": status}) == []


# -- examples and bad resources ---------------------------------------------------------------------


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_validate_against_the_crd_and_the_models_with_the_same_defaults(path):
    doc = yaml.safe_load(path.read_text())
    assert validate(doc, SCHEMA) == []
    defaulted = apply_defaults(doc, SCHEMA)["spec"]
    parsed = parse_spec(doc["spec"]).model_dump(mode="json", by_alias=True, exclude_none=True)
    assert parsed == defaulted, "the API server's defaults and the models' defaults differ"


BAD = [
    ("negative threshold", {"trigger": {"threshold": -0.1}}, "trigger.threshold"),
    ("threshold above 1", {"trigger": {"threshold": 1.5}}, "trigger.threshold"),
    ("unknown sampler", {"labeling": {"sampler": "magic"}}, "labeling.sampler"),
    ("unknown promotion mode", {"promotion": {"mode": "yolo"}}, "promotion.mode"),
    ("missing deployment", {"deployment": None}, "deployment"),
    ("deployment without a name", {"deployment": {"name": None, "predictor": "default"}}, "deployment.name"),
    ("upper-case deployment name", {"deployment": {"name": "MNIST"}}, "deployment.name"),
    ("drop mode without maxDrop", {"trigger": {"mode": "drop", "threshold": None}}, "trigger"),
    ("sidecar without url", {"estimate": {"url": None}}, "estimate"),
    ("prometheus without a query", {"estimate": {"url": None, "source": "prometheus",
                                                  "prometheusUrl": "http://p:9090"}}, "estimate"),
    ("url without a scheme", {"estimate": {"url": "sidecar:8300/estimate"}}, "estimate.url"),
    ("canary share 100", {"promotion": {"canaryShare": 100}}, "promotion.canaryShare"),
    ("zero budget", {"labeling": {"budget": 0}}, "labeling.budget"),
    ("zero half width", {"labeling": {"targetHalfWidth": 0}}, "labeling.targetHalfWidth"),
    ("bad memory quantity", {"resources": {"memoryPerWorker": "lots"}}, "resources.memoryPerWorker"),
    ("negative gpus", {"resources": {"gpusPerWorker": -1}}, "resources.gpusPerWorker"),
    ("string where a number goes", {"cooldownSeconds": "an hour"}, "cooldownSeconds"),
    ("unknown field", {"trigger": {"threshhold": 0.9}}, "trigger.threshhold"),
]




@pytest.mark.parametrize("name,change,field", BAD, ids=[b[0] for b in BAD])
def test_bad_resources_are_rejected_by_the_crd_and_the_models(name, change, field):
    spec = spec_with(change)
    problems = validate(resource(spec), SCHEMA)
    assert problems, f"the CRD schema accepts: {name}"
    assert any(f"spec.{field}".split(".")[-1] in p for p in problems), problems
    with pytest.raises(InvalidSpec) as err:
        parse_spec(spec)
    assert f"spec.{field}" in str(err.value), str(err.value)


def test_model_only_rules_are_rejected_with_clear_messages():
    cases = [
        ({"pipeline": {"parameters": {"budget": 5, "epochs": 2}}}, "pipeline.parameters may not set budget"),
        ({"pipeline": {"versionId": "v"}}, "pipeline.versionId needs pipeline.pipelineId"),
        ({"estimate": {"url": "http://s/e", "canaryQuery": "q"}}, "canaryQuery applies to source 'prometheus'"),
    ]
    for change, message in cases:
        with pytest.raises(InvalidSpec, match=message):
            parse_spec(spec_with(change))
    with pytest.raises(InvalidSpec, match="spec must be a mapping"):
        parse_spec(["not", "a", "mapping"])


# -- models and schema in sync ----------------------------------------------------------------------


def _unwrap(annotation):
    """(base annotation, optional?) for X | None."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return (args[0] if len(args) == 1 else annotation), True
    return annotation, False


_TYPES = {int: "integer", float: "number", bool: "boolean", str: "string"}


def _crd_type(annotation) -> str:
    origin = typing.get_origin(annotation)
    if annotation in _TYPES:
        return _TYPES[annotation]
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum) or origin is typing.Literal:
        return "string"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "object"
    if origin is dict:
        return "object"
    if origin is list:
        return "array"
    if getattr(annotation, "__name__", "") == "datetime":
        return "string"
    raise AssertionError(f"no CRD type for {annotation!r}")


def _constraints(model: type[BaseModel]) -> dict[str, dict]:
    """Per alias: minimum/maximum/exclusive*/pattern/min-max length from pydantic's JSON schema."""
    js = model.model_json_schema(by_alias=True)
    out = {}
    for alias, prop in js.get("properties", {}).items():
        options = prop.get("anyOf", [prop])
        merged: dict = {}
        for opt in options:
            if opt.get("type") != "null":
                merged.update(opt)
        c = {}
        for key in ("minimum", "maximum", "pattern", "minLength", "maxLength"):
            if key in merged:
                c[key] = merged[key]
        if "exclusiveMinimum" in merged:
            c.update(minimum=merged["exclusiveMinimum"], exclusiveMinimum=True)
        if "exclusiveMaximum" in merged:
            c.update(maximum=merged["exclusiveMaximum"], exclusiveMaximum=True)
        out[alias] = c
    return out


def _compare(model: type[BaseModel], node: dict, path: str, defaults: bool, problems: list[str]) -> None:
    props = node.get("properties", {})
    fields = {(info.alias or name): info for name, info in model.model_fields.items()}
    extra_crd = set(props) - set(fields) - ({"kopf"} if path == "status" else set())
    if extra_crd:
        problems.append(f"{path}: in the CRD only: {sorted(extra_crd)}")
    if set(fields) - set(props):
        problems.append(f"{path}: in the models only: {sorted(set(fields) - set(props))}")
    required = {alias for alias, info in fields.items() if info.is_required()}
    if required != set(node.get("required", [])):
        problems.append(f"{path}: required differs: models {sorted(required)}, CRD {sorted(node.get('required', []))}")
    constraints = _constraints(model)
    for alias, info in fields.items():
        if alias not in props:
            continue
        sub, where = props[alias], f"{path}.{alias}"
        base, _ = _unwrap(info.annotation)
        if sub.get("type") != _crd_type(base):
            problems.append(f"{where}: type {sub.get('type')} in the CRD, {_crd_type(base)} in the models")
        if isinstance(base, type) and issubclass(base, enum.Enum) or typing.get_origin(base) is typing.Literal:
            values = [e.value for e in base] if typing.get_origin(base) is None else list(typing.get_args(base))
            if sorted(sub.get("enum", [])) != sorted(values):
                problems.append(f"{where}: enum {sub.get('enum')} vs {values}")
        elif "enum" in sub:
            problems.append(f"{where}: enum in the CRD only")
        for key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "pattern", "minLength", "maxLength"):
            if sub.get(key) != constraints[alias].get(key) and defaults:
                problems.append(f"{where}: {key} {sub.get(key)!r} in the CRD, {constraints[alias].get(key)!r} "
                                "in the models")
        if defaults:
            if info.is_required() or (info.default is None and info.default_factory is None):
                if "default" in sub:
                    problems.append(f"{where}: default {sub['default']!r} in the CRD only")
            else:
                value = info.default_factory() if info.default_factory else info.default
                if isinstance(value, BaseModel):
                    value = {}  # the CRD defaults the object to {} and then its fields
                elif isinstance(value, enum.Enum):
                    value = value.value
                if sub.get("default") != value:
                    problems.append(f"{where}: default {sub.get('default')!r} in the CRD, {value!r} in the models")
        if isinstance(base, type) and issubclass(base, BaseModel):
            _compare(base, sub, where, defaults, problems)
        elif typing.get_origin(base) is list:
            (item,) = typing.get_args(base)
            if isinstance(item, type) and issubclass(item, BaseModel):
                _compare(item, sub["items"], f"{where}[]", defaults, problems)
        elif typing.get_origin(base) is dict:
            if not sub.get("x-kubernetes-preserve-unknown-fields"):
                problems.append(f"{where}: a free-form mapping needs x-kubernetes-preserve-unknown-fields")


def test_spec_models_and_crd_schema_agree_on_fields_types_enums_bounds_and_defaults():
    problems: list[str] = []
    _compare(CycleSpec, SCHEMA["properties"]["spec"], "spec", True, problems)
    assert not problems, "\n".join(problems)


def test_status_models_and_crd_schema_agree_on_fields_types_and_enums():
    problems: list[str] = []
    # Status models keep Python-side defaults for a fresh status; the CRD gives the status none.
    _compare(CycleStatus, SCHEMA["properties"]["status"], "status", False, problems)
    assert not problems, "\n".join(problems)


def test_the_sync_check_notices_a_difference():
    """The comparison above would catch a drift (here: a removed enum value and a changed default)."""
    schema = copy.deepcopy(SCHEMA)
    sampler = schema["properties"]["spec"]["properties"]["labeling"]["properties"]["sampler"]
    sampler["enum"].remove("active")
    schema["properties"]["spec"]["properties"]["cooldownSeconds"]["default"] = 60
    problems: list[str] = []
    _compare(CycleSpec, schema["properties"]["spec"], "spec", True, problems)
    assert any("labeling.sampler: enum" in p for p in problems)
    assert any("cooldownSeconds: default" in p for p in problems)


def test_samplers_and_pipeline_parameters_match_the_pipeline():
    """The spec's sampler names are the pipeline's designs, and every parameter the operator passes
    is one the assess-and-improve pipeline declares (kfp.local refuses unknown ones)."""
    from daic.components.sample_operational.designs import DESIGNS
    from daic.operators.reconcile import CycleIdentity, pipeline_params
    from daic.operators.spec import RESERVED_PARAMETERS, Sampler
    from daic.operators.observations import EstimateReading
    from daic.pipelines.local_run import pipeline_parameters

    assert {s.value for s in Sampler} == set(DESIGNS)
    spec = parse_spec({**minimal_spec(), "pipeline": {"parameters": {"epochs": 1}}})
    reading = EstimateReading(accuracy=0.8, n=500, observed_at=__import__("datetime").datetime.now())
    params = pipeline_params(spec, CycleIdentity("x", "0123abcd"), "x-c1-0123abcd", 0.9, reading)
    declared = pipeline_parameters()
    assert set(params) <= set(declared), sorted(set(params) - set(declared))
    assert RESERVED_PARAMETERS == set(params) - {"epochs"}
    assert params["promote_by"] == "operator"


def test_crd_file_is_what_the_kustomization_installs():
    kustomization = yaml.safe_load((CRD_PATH.parent / "kustomization.yaml").read_text())
    assert kustomization["resources"] == [CRD_PATH.name]
    assert Path(CRD_PATH).exists()
