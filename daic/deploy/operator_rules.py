"""What Seldon Core v1, KubeRay and the Prometheus Operator require of their custom resources.

Their CRDs are not installed here, and their schemas say little (Seldon's predictor pod specs
are free-form; KubeRay rejects most mistakes in its controller, not at admission). These rules
are written from the operators' own sources:

- SeldonDeployment (``machinelearning.seldon.io/v1``): seldon-core 1.x
  ``operator/apis/machinelearning.seldon.io/v1/seldondeployment_types.go`` (fields whose JSON tag
  has no ``omitempty`` are required: ``spec.predictors``, a predictor's ``name`` and ``graph``, a
  graph node's ``name``) and ``seldondeployment_webhook.go`` ``ValidateSeldonDeployment`` (at
  least one predictor, unique predictor names, a container for every graph node that names no
  prepackaged implementation, a logger ``mode``, traffic summing to 100 over several predictors,
  protocol/transport/serverType enums).
- RayCluster / RayJob (``ray.io/v1``): KubeRay ``ray-operator/apis/ray/v1/raycluster_types.go``
  and ``rayjob_types.go`` (KubeRay 1.1 still requires ``rayStartParams`` on every group and
  ``minReplicas``/``maxReplicas`` on worker groups; later versions default them, so requiring
  them fits both) and ``ray-operator/controllers/ray/utils/validation.go`` (names are DNS-1035
  labels of at most 53 characters for a RayCluster, 47 for a RayJob; every group has a
  container; resources not set both in ``rayStartParams`` and the group's ``resources``; a
  RayJob names ``rayClusterSpec`` or a ``clusterSelector`` with ``ray.io/cluster``; suspend needs
  ``shutdownAfterJobFinishes``; non-negative TTL and backoff).
- ServiceMonitor (``monitoring.coreos.com/v1``): prometheus-operator
  ``pkg/apis/monitoring/v1/servicemonitor_types.go`` (``selector`` and ``endpoints`` required;
  an endpoint names ``port`` or ``targetPort``; Prometheus duration syntax for intervals).
- PrometheusRule (``monitoring.coreos.com/v1``): prometheus-operator
  ``pkg/apis/monitoring/v1/prometheusrule_types.go`` (``spec.groups`` of uniquely named groups; a
  rule has ``expr`` and exactly one of ``record``/``alert``; ``for`` is a duration). The PromQL
  itself is checked by ``promtool`` (tests/test_manifests_monitoring.py).
"""
from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import yaml

from daic.deploy.problems import Problem, describe, join

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_PROM_DURATION = re.compile(r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$")


# --- Seldon Core v1 ----------------------------------------------------------------------------

SELDON_API = "machinelearning.seldon.io/v1"
_SELDON_PROTOCOLS = {"seldon", "tensorflow", "kfserving"}
_SELDON_TRANSPORTS = {"rest", "grpc"}
_SELDON_SERVER_TYPES = {"rpc", "kafka"}
_SELDON_LOGGER_MODES = {"all", "request", "response"}
_SELDON_UNIT_TYPES = {"UNKNOWN_TYPE", "ROUTER", "COMBINER", "MODEL", "TRANSFORMER", "OUTPUT_TRANSFORMER"}


def check_seldon_deployment(obj: dict[str, Any]) -> list[Problem]:
    where = describe(obj)
    out: list[Problem] = []

    def bad(path: str, message: str) -> None:
        out.append(Problem(where, path, message))

    name = (obj.get("metadata") or {}).get("name", "")
    if not _DNS1123_LABEL.match(name or "") or len(name) > 63:
        bad("metadata.name", f"{name!r} is not a DNS-1123 label")
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        bad("spec", "required")
        return out
    for field, allowed in (("protocol", _SELDON_PROTOCOLS), ("transport", _SELDON_TRANSPORTS),
                           ("serverType", _SELDON_SERVER_TYPES)):
        if field in spec and spec[field] not in allowed:
            bad(join("spec", field), f"{spec[field]!r} is not one of {sorted(allowed)}")
    predictors = spec.get("predictors")
    if not isinstance(predictors, list) or not predictors:
        bad("spec.predictors", "at least one predictor is required")
        return out
    seen: set[str] = set()
    traffic, non_shadow = 0, 0
    for i, p in enumerate(predictors):
        ppath = join("spec.predictors", i)
        if not isinstance(p, dict):
            bad(ppath, "must be a mapping")
            continue
        pname = p.get("name")
        if not pname:
            bad(join(ppath, "name"), "required")
        elif not _DNS1123_LABEL.match(pname):
            bad(join(ppath, "name"), f"{pname!r} is not a DNS-1123 label")
        elif pname in seen:
            bad(join(ppath, "name"), f"duplicate predictor name {pname!r}")
        seen.add(pname or "")
        if not p.get("shadow"):
            non_shadow += 1
            traffic += int(p.get("traffic", 0) or 0)
        containers = {c.get("name") for cs in p.get("componentSpecs") or []
                      for c in ((cs or {}).get("spec") or {}).get("containers") or [] if isinstance(c, dict)}
        graph = p.get("graph")
        if not isinstance(graph, dict):
            bad(join(ppath, "graph"), "required")
            continue
        _check_graph(graph, join(ppath, "graph"), containers, bad)
    if non_shadow > 1 and traffic != 100:
        bad("spec.predictors", f"traffic of the predictors must sum to 100, got {traffic}")
    if len(predictors) == 1 and 0 < traffic < 100:
        bad("spec.predictors[0].traffic", "a single predictor's traffic, when set, must be 100")
    return out


def _check_graph(unit: dict[str, Any], path: str, containers: set[str], bad: Callable[[str, str], None]) -> None:
    name = unit.get("name")
    if not name:
        bad(join(path, "name"), "required")
    implementation = unit.get("implementation")
    if not implementation or implementation == "UNKNOWN_IMPLEMENTATION":
        if name not in containers:
            bad(path, f"no container named {name!r} in the predictor's componentSpecs for this graph node")
    if "type" in unit and unit["type"] not in _SELDON_UNIT_TYPES:
        bad(join(path, "type"), f"{unit['type']!r} is not one of {sorted(_SELDON_UNIT_TYPES)}")
    logger = unit.get("logger")
    if logger is not None:
        mode = (logger or {}).get("mode")
        if mode not in _SELDON_LOGGER_MODES:
            bad(join(path, "logger.mode"), f"{mode!r}: the logger needs a mode, one of {sorted(_SELDON_LOGGER_MODES)}")
        url = (logger or {}).get("url")
        if url is not None and not re.match(r"^https?://", str(url)):
            bad(join(path, "logger.url"), f"{url!r} is not an http(s) URL")
    for i, child in enumerate(unit.get("children") or []):
        _check_graph(child, join(path, "children", i), containers, bad)


# --- KubeRay ------------------------------------------------------------------------------------

RAY_API = "ray.io/v1"
_RAY_RESOURCE_PARAMS = ("num-cpus", "num-gpus", "memory", "resources")
_RAY_SUBMISSION_MODES = {"K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode"}
_RAY_UPSCALING_MODES = {"Default", "Aggressive", "Conservative"}


def check_ray_cluster(obj: dict[str, Any]) -> list[Problem]:
    where = describe(obj)
    name = (obj.get("metadata") or {}).get("name", "")
    out = _ray_name(where, name, 53, "RayCluster")
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return out + [Problem(where, "spec", "required")]
    return out + check_ray_cluster_spec(spec, "spec", where)


def check_ray_cluster_spec(spec: dict[str, Any], path: str, where: str) -> list[Problem]:
    """Rules for a RayClusterSpec, standalone or inside a RayJob's ``rayClusterSpec``."""
    out: list[Problem] = []

    def bad(p: str, message: str) -> None:
        out.append(Problem(where, p, message))

    head = spec.get("headGroupSpec")
    if not isinstance(head, dict):
        bad(join(path, "headGroupSpec"), "required")
    else:
        _check_group(head, join(path, "headGroupSpec"), bad)
    autoscaling = bool(spec.get("enableInTreeAutoscaling"))
    names: set[str] = set()
    for i, group in enumerate(spec.get("workerGroupSpecs") or []):
        gpath = join(path, "workerGroupSpecs", i)
        gname = group.get("groupName")
        if not gname:
            bad(join(gpath, "groupName"), "required")
        elif gname in names:
            bad(join(gpath, "groupName"), f"duplicate worker group {gname!r}")
        names.add(gname or "")
        _check_group(group, gpath, bad)
        lo, hi = group.get("minReplicas"), group.get("maxReplicas")
        for field, value in (("minReplicas", lo), ("maxReplicas", hi)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                bad(join(gpath, field), f"required, a non-negative integer (got {value!r})")
        if isinstance(lo, int) and isinstance(hi, int) and lo > hi:
            bad(gpath, f"minReplicas {lo} exceeds maxReplicas {hi}")
        replicas = group.get("replicas")
        if replicas is not None and isinstance(lo, int) and isinstance(hi, int) and not lo <= replicas <= hi:
            bad(join(gpath, "replicas"), f"{replicas} is outside [minReplicas, maxReplicas] = [{lo}, {hi}]")
        if autoscaling and group.get("suspend"):
            bad(join(gpath, "suspend"), "a worker group cannot be suspended with the autoscaler enabled")
    options = spec.get("autoscalerOptions")
    if isinstance(options, dict):
        mode = options.get("upscalingMode")
        if mode is not None and mode not in _RAY_UPSCALING_MODES:
            bad(join(path, "autoscalerOptions.upscalingMode"), f"{mode!r} is not one of {sorted(_RAY_UPSCALING_MODES)}")
        idle = options.get("idleTimeoutSeconds")
        if idle is not None and (not isinstance(idle, int) or idle < 0):
            bad(join(path, "autoscalerOptions.idleTimeoutSeconds"), f"must be a non-negative integer, got {idle!r}")
    return out


def _check_group(group: dict[str, Any], path: str, bad: Callable[[str, str], None]) -> None:
    params = group.get("rayStartParams")
    if not isinstance(params, dict):
        bad(join(path, "rayStartParams"), "required (a mapping, {} when empty)")
        params = {}
    for key, value in params.items():
        if not isinstance(value, str):
            bad(join(path, "rayStartParams", key), f"values are strings in the CRD, got {value!r}; quote it")
    if "labels" in params:
        bad(join(path, "rayStartParams.labels"), "not supported; use the group's labels field")
    if group.get("resources") and any(params.get(k) for k in _RAY_RESOURCE_PARAMS):
        bad(path, "resources are set both in rayStartParams and in resources; use only one")
    containers = (((group.get("template") or {}).get("spec")) or {}).get("containers")
    if not isinstance(containers, list) or not containers:
        bad(join(path, "template.spec.containers"), "required: at least one container (the first is Ray's)")


def check_ray_job(obj: dict[str, Any]) -> list[Problem]:
    where = describe(obj)
    meta = obj.get("metadata") or {}
    # A template may use generateName; KubeRay appends 6 characters to name the cluster.
    name = meta.get("name") or (meta.get("generateName") or "").rstrip("-") + "-xxxxx"
    out = _ray_name(where, name, 47, "RayJob")
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return out + [Problem(where, "spec", "required")]

    def bad(p: str, message: str) -> None:
        out.append(Problem(where, p, message))

    mode = spec.get("submissionMode", "K8sJobMode")
    if mode not in _RAY_SUBMISSION_MODES:
        bad("spec.submissionMode", f"{mode!r} is not one of {sorted(_RAY_SUBMISSION_MODES)}")
    if mode != "InteractiveMode" and not spec.get("entrypoint"):
        bad("spec.entrypoint", f"required in {mode}")
    selector = spec.get("clusterSelector") or {}
    cluster_spec = spec.get("rayClusterSpec")
    if cluster_spec is None and not selector:
        bad("spec", "one of rayClusterSpec or clusterSelector must be set")
    if selector:
        if not selector.get("ray.io/cluster"):
            bad("spec.clusterSelector", "must name the cluster under the key ray.io/cluster")
        if spec.get("suspend"):
            bad("spec.suspend", "a RayJob with a clusterSelector cannot be suspended")
        if mode == "SidecarMode":
            bad("spec.clusterSelector", "not supported in SidecarMode")
    if spec.get("suspend") and not spec.get("shutdownAfterJobFinishes"):
        bad("spec.suspend", "needs shutdownAfterJobFinishes: true")
    for field in ("ttlSecondsAfterFinished", "backoffLimit"):
        value = spec.get(field)
        if value is not None and (not isinstance(value, int) or value < 0):
            bad(join("spec", field), f"must be a non-negative integer, got {value!r}")
    deadline = spec.get("activeDeadlineSeconds")
    if deadline is not None and (not isinstance(deadline, int) or deadline <= 0):
        bad("spec.activeDeadlineSeconds", f"must be a positive integer, got {deadline!r}")
    if mode == "InteractiveMode" and (spec.get("backoffLimit") or 0) > 0:
        bad("spec.backoffLimit", "incompatible with InteractiveMode")
    runtime_env = spec.get("runtimeEnvYAML")
    if runtime_env is not None:
        try:
            yaml.safe_load(runtime_env)
        except yaml.YAMLError as exc:
            bad("spec.runtimeEnvYAML", f"not valid YAML: {exc}")
    if isinstance(cluster_spec, dict):
        out.extend(check_ray_cluster_spec(cluster_spec, "spec.rayClusterSpec", where))
    return out


def _ray_name(where: str, name: str, limit: int, kind: str) -> list[Problem]:
    if not _DNS1035_LABEL.match(name or "") or len(name) > limit:
        return [Problem(where, "metadata.name", f"{name!r}: a {kind} name must be a DNS-1035 label "
                                                f"(starts with a letter) of at most {limit} characters")]
    return []


# --- Prometheus Operator ---------------------------------------------------------------------

MONITORING_API = "monitoring.coreos.com/v1"


def check_service_monitor(obj: dict[str, Any]) -> list[Problem]:
    where = describe(obj)
    out: list[Problem] = []
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return [Problem(where, "spec", "required")]
    selector = spec.get("selector")
    if not isinstance(selector, dict) or not (selector.get("matchLabels") or selector.get("matchExpressions")):
        out.append(Problem(where, "spec.selector", "required: matchLabels or matchExpressions selecting Services"))
    endpoints = spec.get("endpoints")
    if not isinstance(endpoints, list) or not endpoints:
        out.append(Problem(where, "spec.endpoints", "required: at least one endpoint"))
        endpoints = []
    for i, ep in enumerate(endpoints):
        path = join("spec.endpoints", i)
        if not (ep.get("port") or ep.get("targetPort")):
            out.append(Problem(where, path, "names neither port nor targetPort"))
        if ep.get("path") is not None and not str(ep["path"]).startswith("/"):
            out.append(Problem(where, join(path, "path"), f"{ep['path']!r} must start with /"))
        for field in ("interval", "scrapeTimeout"):
            value = ep.get(field)
            if value is not None and not _PROM_DURATION.match(str(value)):
                out.append(Problem(where, join(path, field), f"{value!r} is not a Prometheus duration (e.g. 30s)"))
        if ep.get("interval") and ep.get("scrapeTimeout") and _PROM_DURATION.match(str(ep["interval"])) \
                and _PROM_DURATION.match(str(ep["scrapeTimeout"])) \
                and _seconds(ep["scrapeTimeout"]) > _seconds(ep["interval"]):
            out.append(Problem(where, join(path, "scrapeTimeout"), "longer than the interval"))
    return out


def check_prometheus_rule(obj: dict[str, Any]) -> list[Problem]:
    where = describe(obj)
    spec = obj.get("spec")
    groups = spec.get("groups") if isinstance(spec, dict) else None
    if not isinstance(groups, list) or not groups:
        return [Problem(where, "spec.groups", "required: at least one rule group")]
    out: list[Problem] = []
    seen: set[str] = set()
    for i, group in enumerate(groups):
        path = join("spec.groups", i)
        name = group.get("name") if isinstance(group, dict) else None
        if not name or name in seen:
            out.append(Problem(where, join(path, "name"), f"{name!r}: required and unique"))
        seen.add(str(name))
        for j, rule in enumerate(group.get("rules") or [] if isinstance(group, dict) else []):
            rpath = join(join(path, "rules"), j)
            if not rule.get("expr"):
                out.append(Problem(where, join(rpath, "expr"), "required"))
            if bool(rule.get("record")) == bool(rule.get("alert")):
                out.append(Problem(where, rpath, "exactly one of record and alert"))
            if rule.get("for") is not None and not _PROM_DURATION.match(str(rule["for"])):
                out.append(Problem(where, join(rpath, "for"), f"{rule['for']!r} is not a Prometheus duration"))
    return out


def _seconds(duration: str) -> float:
    units = {"y": 365 * 86400, "w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1, "ms": 0.001}
    return sum(float(n) * units[u] for n, u in re.findall(r"([0-9]+)(ms|y|w|d|h|m|s)", str(duration)))


#: The custom kinds daic uses from other operators, and their rules.
RULES: dict[tuple[str, str], Callable[[dict[str, Any]], list[Problem]]] = {
    (SELDON_API, "SeldonDeployment"): check_seldon_deployment,
    (RAY_API, "RayCluster"): check_ray_cluster,
    (RAY_API, "RayJob"): check_ray_job,
    (MONITORING_API, "ServiceMonitor"): check_service_monitor,
    (MONITORING_API, "PrometheusRule"): check_prometheus_rule,
}


def rules_for(obj: dict[str, Any]) -> Callable[[dict[str, Any]], list[Problem]] | None:
    return RULES.get((obj.get("apiVersion", ""), obj.get("kind", "")))
