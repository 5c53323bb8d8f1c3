"""Read and switch a SeldonDeployment's traffic split (canary, promotion, rollback).

The layout is the one ``daic.serving.manifest`` renders: the main predictor (``spec.deployment.
predictor``) and, during a canary, a predictor named ``canary``; each names its model version in
the graph parameter ``model_version`` and the label ``daic.dev/model-version``. The canary is
derived from the live main predictor (same images, resources, sidecar), pinned to the challenger,
with its sidecar logging under ``<deployment>-canary`` so its estimate never mixes with the
champion's. Pure functions build the new predictor list; ``SeldonTarget`` does one read-modify-write
with the object's resourceVersion (a concurrent edit makes the patch fail with 409 and the next
reconcile pass tries again).

The input filter (issue 21) is a ``TRANSFORMER`` node in front of a predictor's ``MODEL`` node,
pinned to a filter version (graph parameter ``filter_version``), added or removed per predictor
by :func:`daic.serving.manifest.set_filter`: a filter's canary is the champion behind the filter.
"""
from __future__ import annotations

import copy
from datetime import datetime
from typing import Any

from daic.operators.actions import PatchDeployment
from daic.operators.observations import DeploymentReading
from daic.serving.manifest import filter_of, set_filter

GROUP, VERSION, PLURAL = "machinelearning.seldon.io", "v1", "seldondeployments"
CANARY = "canary"
VERSION_PARAM = "model_version"
VERSION_LABEL = "daic.dev/model-version"


class SeldonLayoutError(ValueError):
    """The SeldonDeployment does not have the shape the operator can switch."""


def _predictors(sdep: dict[str, Any]) -> list[dict[str, Any]]:
    preds = (sdep.get("spec") or {}).get("predictors")
    if not isinstance(preds, list) or not preds:
        raise SeldonLayoutError(f"SeldonDeployment {sdep.get('metadata', {}).get('name')!r} has no spec.predictors")
    return preds


def _find(preds: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    return next((p for p in preds if p.get("name") == name), None)


def _model_node(predictor: dict[str, Any]) -> dict[str, Any]:
    graph = predictor.get("graph") or {}
    return (graph.get("children") or [{}])[0] if graph.get("type") == "TRANSFORMER" else graph


def model_version(predictor: dict[str, Any]) -> str | None:
    for param in _model_node(predictor).get("parameters") or []:
        if param.get("name") == VERSION_PARAM:
            return str(param.get("value"))
    return None


def _set_version(predictor: dict[str, Any], version: str) -> None:
    graph = predictor.setdefault("graph", {})
    node = (graph.get("children") or [{}])[0] if graph.get("type") == "TRANSFORMER" else graph
    params = node.setdefault("parameters", [])
    for param in params:
        if param.get("name") == VERSION_PARAM:
            param["value"] = version
            break
    else:
        params.append({"name": VERSION_PARAM, "type": "STRING", "value": version})
    predictor.setdefault("labels", {})[VERSION_LABEL] = version


def read_split(sdep: dict[str, Any], predictor: str) -> tuple[str | None, str | None, int]:
    """(champion version, canary version or None, canary share in percent)."""
    preds = _predictors(sdep)
    main = _find(preds, predictor)
    if main is None:
        names = ", ".join(str(p.get("name")) for p in preds)
        raise SeldonLayoutError(f"no predictor named {predictor!r} (has: {names}); set spec.deployment.predictor")
    canary = _find(preds, CANARY)
    if canary is None:
        return model_version(main), None, 0
    return model_version(main), model_version(canary), int(canary.get("traffic") or 0)


def read_filters(sdep: dict[str, Any], predictor: str) -> tuple[str | None, str | None]:
    """(filter version in front of the main predictor's model, the canary's), None for none."""
    preds = _predictors(sdep)
    main, canary = _find(preds, predictor), _find(preds, CANARY)
    return (filter_of(main)[0] if main else None), (filter_of(canary)[0] if canary else None)


def main_filter(sdep: dict[str, Any], predictor: str) -> tuple[str | None, str | None]:
    """(version, gate) of the filter in front of the main predictor's model, (None, None) for none."""
    main = _find(_predictors(sdep), predictor)
    return filter_of(main) if main else (None, None)


def _with_filter(predictor: dict[str, Any], version: str | None, gate: str) -> dict[str, Any]:
    """The predictor with that filter (unchanged, so no pod restarts, when it has it already)."""
    if filter_of(predictor) == ((version, gate) if version else (None, None)):
        return predictor
    return set_filter(predictor, version, gate)


def _canary_sidecar_label(predictor: dict[str, Any]) -> None:
    """Point the canary's sidecar at its own log prefix (``--deployment <name>-canary``)."""
    for comp in predictor.get("componentSpecs") or []:
        for container in ((comp.get("spec") or {}).get("containers") or []):
            for field in ("command", "args"):
                argv = container.get(field)
                if isinstance(argv, list) and "--deployment" in argv:
                    i = argv.index("--deployment")
                    if i + 1 < len(argv) and not str(argv[i + 1]).endswith("-canary"):
                        argv[i + 1] = f"{argv[i + 1]}-canary"


def desired_predictors(sdep: dict[str, Any], want: PatchDeployment) -> list[dict[str, Any]]:
    """The predictor list that serves ``want``; other predictors (shadows) are kept as they are."""
    if want.predictor == CANARY:
        raise SeldonLayoutError("the main predictor cannot be named 'canary'")
    preds = _predictors(sdep)
    main = _find(preds, want.predictor)
    if main is None:
        raise SeldonLayoutError(f"no predictor named {want.predictor!r}")
    new_main = copy.deepcopy(main)
    _set_version(new_main, want.champion_version)
    new_main["traffic"] = 100 - (want.canary_share if want.canary_version else 0)
    new_main = _with_filter(new_main, want.filter_version, want.filter_gate)
    result = [new_main]
    if want.canary_version:
        canary = copy.deepcopy(main)
        canary["name"] = CANARY
        _set_version(canary, want.canary_version)
        canary = _with_filter(canary, want.canary_filter_version, want.canary_filter_gate)
        canary["traffic"] = want.canary_share
        _canary_sidecar_label(canary)
        result.append(canary)
    others = [copy.deepcopy(p) for p in preds if p.get("name") not in (want.predictor, CANARY)]
    return result + others


class SeldonTarget:
    """The SeldonDeployment behind one AssessmentCycle, through the ``kubernetes`` client; every
    call bounded by ``timeout`` (connect, read seconds)."""

    def __init__(self, api: Any, namespace: str, name: str, predictor: str,
                 timeout: tuple[float, float] = (5.0, 30.0)):
        """``api``: a ``kubernetes.client.CustomObjectsApi``."""
        self.api, self.namespace, self.name, self.predictor = api, namespace, name, predictor
        self.timeout = timeout

    def _get(self) -> dict[str, Any]:
        return self.api.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, self.name,
                                                     _request_timeout=self.timeout)

    def observe(self, now: datetime) -> DeploymentReading:
        sdep = self._get()
        champion, canary, share = read_split(sdep, self.predictor)
        main_filter, canary_filter = read_filters(sdep, self.predictor)
        return DeploymentReading(champion, canary, share, now, main_filter, canary_filter)

    def apply(self, want: PatchDeployment) -> None:
        sdep = self._get()
        body = {"metadata": {"resourceVersion": sdep["metadata"]["resourceVersion"]},
                "spec": {"predictors": desired_predictors(sdep, want)}}
        self.api.patch_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, self.name, body,
                                                _request_timeout=self.timeout)
