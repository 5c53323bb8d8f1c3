"""Render the SeldonDeployment (Seldon Core v1, ``machinelearning.seldon.io/v1``) as plain data.

The predictor pod holds two containers: the model server (``daic.serving.model.DaicModel`` under
``seldon-core-microservice``) and the pseudo-oracle sidecar (``daic oracle serve``). The graph's
``logger: {mode: all, url: http://localhost:<sidecar port>/}`` makes Seldon's executor post every
request and response to the sidecar as CloudEvents, inside the pod, so no daic code runs in the
executor. Built from typed parameters into a dict, never by importing seldon-core (which cannot
live in the main environment, DESIGN.md), and validated by pydantic before anything is rendered.

``render_seldon_deployment`` gives the one-predictor deployment; ``render_canary_deployment`` the
two-predictor variant used while a challenger takes a slice of the traffic before promotion.
"""
from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

API_VERSION = "machinelearning.seldon.io/v1"
KIND = "SeldonDeployment"
MODEL_CLASS = "daic.serving.model.DaicModel"
#: Ports the Seldon operator expects the Python wrapper on (it sets the same values in env).
MODEL_HTTP_PORT = 9000
MODEL_METRICS_PORT = 6000
DEFAULT_SIDECAR_PORT = 8300
#: Events, feedback and admin: the sidecar listens for them on 127.0.0.1 only (same pod as the executor).
DEFAULT_SIDECAR_INGEST_PORT = 8301
FEEDBACK_TOKEN_DIR = "/var/run/daic/feedback"
SIDECAR_STATE_DIR = "/var/lib/daic-sidecar"
#: The non-root user of the Seldon Python wrapper images.
RUN_AS_USER = 8888

GRAPH_MODEL_NODE = "classifier"
_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class Resources(BaseModel):
    """Requests and limits of one container, in Kubernetes quantity strings."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    cpu_request: str = "500m"
    memory_request: str = "512Mi"
    cpu_limit: str = "2"
    memory_limit: str = "1Gi"

    def render(self) -> dict[str, dict[str, str]]:
        return {
            "requests": {"cpu": self.cpu_request, "memory": self.memory_request},
            "limits": {"cpu": self.cpu_limit, "memory": self.memory_limit},
        }


class TransformerNode(BaseModel):
    """A ``TRANSFORMER`` node in front of the model (an input filter): its own container running
    ``model_class`` under ``seldon-core-microservice``; the graph's logger moves to it (the root),
    so the sidecar sees the client's input and the final answer (daic.serving.graph)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = "filter"
    model_class: str
    image: str | None = None  # None: the model image
    http_port: int = Field(MODEL_HTTP_PORT + 1, ge=1024, le=65535)
    metrics_port: int = Field(MODEL_METRICS_PORT + 1, ge=1024, le=65535)
    parameters: dict[str, str] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _dns_name(cls, value: str) -> str:
        if not _DNS1123.match(value) or len(value) > 63 or value == GRAPH_MODEL_NODE:
            raise ValueError(f"transformer name {value!r} must be a DNS-1123 label other than {GRAPH_MODEL_NODE!r}")
        return value


class DeploymentParams(BaseModel):
    """Everything the SeldonDeployment template needs; defaults are the cluster defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "mnist"
    namespace: str | None = None
    predictor: str = "default"
    model_name: str = "mnist"
    #: "champion" follows the registry's champion pointer (live reload); a version pins it.
    model_version: str = "champion"
    store_url: str = "s3://daic"
    #: Secret with MINIO_ENDPOINT / MINIO_ACCESS_KEY / MINIO_SECRET_KEY for the store.
    store_secret: str | None = "daic-store"
    # Endpoint settings (MINIO_ENDPOINT, DAIC_STORE...) from manifests/storage's ConfigMap.
    store_config_map: str | None = "daic-storage"
    model_image: str = "ghcr.io/daic-dev/daic-serving:0.1.0"
    sidecar_image: str = "ghcr.io/daic-dev/daic-oracle:0.1.0"
    replicas: int = Field(1, ge=1)
    traffic: int = Field(100, ge=0, le=100)
    sidecar_port: int = Field(DEFAULT_SIDECAR_PORT, ge=1024, le=65535)
    sidecar_ingest_port: int = Field(DEFAULT_SIDECAR_INGEST_PORT, ge=1024, le=65535)
    #: Secret (key ``token``) whose bearer token lets clients outside the pod post feedback to the
    #: sidecar's Service port; None: feedback only through the deployment (the executor logs it).
    feedback_token_secret: str | None = None
    reload_interval_s: float = Field(15.0, gt=0)
    max_batch: int = Field(256, ge=1)
    gunicorn_workers: int = Field(1, ge=1)
    gunicorn_threads: int = Field(4, ge=1)
    model_resources: Resources = Resources()
    sidecar_resources: Resources = Resources(
        cpu_request="250m", memory_request="384Mi", cpu_limit="1", memory_limit="768Mi"
    )
    transformer: TransformerNode | None = None

    @field_validator("name", "predictor")
    @classmethod
    def _dns_name(cls, value: str) -> str:
        if not _DNS1123.match(value) or len(value) > 63:
            raise ValueError(
                f"{value!r} is not a DNS-1123 label (lower-case letters, digits, '-', at most 63)"
            )
        return value

    @field_validator("store_url")
    @classmethod
    def _store_url(cls, value: str) -> str:
        if not value.startswith(("s3://", "file:///")):
            raise ValueError(f"store_url must be s3://bucket[/prefix] or file:///path, got {value!r}")
        return value

    @field_validator("model_version")
    @classmethod
    def _version(cls, value: str) -> str:
        return _check_version(value)


def _check_version(value: str) -> str:
    if not isinstance(value, str) or not re.match(r"^[A-Za-z0-9._-]{1,63}$", value):
        raise ValueError(f"model version must be 'champion' or a version name like v0003, got {value!r}")
    return value


def _http_probe(path: str, port: int, initial_delay: int, period: int, failures: int) -> dict:
    return {
        "httpGet": {"path": path, "port": port},
        "initialDelaySeconds": initial_delay,
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def _container_security() -> dict:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }


def _store_env(p: DeploymentParams) -> tuple[list[dict], list[dict]]:
    env = [{"name": "DAIC_STORE", "value": p.store_url}]
    env_from = [{"configMapRef": {"name": p.store_config_map}}] if p.store_config_map else []
    env_from += [{"secretRef": {"name": p.store_secret}}] if p.store_secret else []
    return env, env_from


def _model_container(p: DeploymentParams, graph_name: str) -> dict:
    env, env_from = _store_env(p)
    # Model name and version travel as graph parameters (PREDICTIVE_UNIT_PARAMETERS).
    env += [
        # gunicorn's worker heartbeat files and torch's caches need a writable /tmp.
        {"name": "HOME", "value": "/tmp"},
        # seldon-core 1.18 defaults to echoing custom metrics to clients; they belong on the
        # metrics port only.
        {"name": "INCLUDE_METRICS_IN_CLIENT_RESPONSE", "value": "false"},
    ]
    container = {
        "name": graph_name,
        "image": p.model_image,
        "command": [
            "seldon-core-microservice", MODEL_CLASS,
            "--service-type", "MODEL",
            "--http-port", str(MODEL_HTTP_PORT),
            "--metrics-port", str(MODEL_METRICS_PORT),
            "--grpc-workers", "0",
            "--workers", str(p.gunicorn_workers),
            "--threads", str(p.gunicorn_threads),
        ],
        "env": env,
        "ports": [
            {"name": "http", "containerPort": MODEL_HTTP_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": MODEL_METRICS_PORT, "protocol": "TCP"},
        ],
        "resources": p.model_resources.render(),
        # Ready only when a model version is loaded (health_status raises before that).
        "readinessProbe": _http_probe("/health/status", MODEL_HTTP_PORT, 5, 5, 3),
        "livenessProbe": _http_probe("/health/ping", MODEL_HTTP_PORT, 30, 10, 3),
        "securityContext": _container_security(),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    if env_from:
        container["envFrom"] = env_from
    return container


def _transformer_container(p: DeploymentParams, node: TransformerNode) -> dict:
    container = _model_container(p, node.name)
    container["image"] = node.image or p.model_image
    container["command"] = [
        "seldon-core-microservice", node.model_class,
        "--service-type", "TRANSFORMER",
        "--http-port", str(node.http_port),
        "--metrics-port", str(node.metrics_port),
        "--grpc-workers", "0",
        "--workers", str(p.gunicorn_workers),
        "--threads", str(p.gunicorn_threads),
    ]
    container["ports"] = [
        {"name": "filter-http", "containerPort": node.http_port, "protocol": "TCP"},
        {"name": "filter-metrics", "containerPort": node.metrics_port, "protocol": "TCP"},
    ]
    container["readinessProbe"] = _http_probe("/health/status", node.http_port, 5, 5, 3)
    container["livenessProbe"] = _http_probe("/health/ping", node.http_port, 30, 10, 3)
    return container


def graph_shape(graph: dict) -> dict:
    """What the sidecar needs of a rendered graph to join what the executor logs for it
    (daic.serving.graph): names, types, methods, loggers and children, nothing else."""
    shape = {k: graph[k] for k in ("name", "type", "methods") if k in graph}
    if graph.get("logger"):
        shape["logger"] = {"mode": graph["logger"].get("mode", "all")}
    shape["children"] = [graph_shape(c) for c in graph.get("children") or []]
    return shape


def _sidecar_container(p: DeploymentParams, deployment_label: str, graph: dict) -> dict:
    env, env_from = _store_env(p)
    container = {
        "name": "oracle-sidecar",
        "image": p.sidecar_image,
        "command": [
            "daic", "oracle", "serve",
            "--host", "0.0.0.0",
            "--port", str(p.sidecar_port),
            "--deployment", deployment_label,
            "--model-name", p.model_name,
            "--ingest-port", str(p.sidecar_ingest_port),
            "--state-dir", SIDECAR_STATE_DIR,
            # The graph it joins events for: which node's events are the client's input and answer.
            "--graph", json.dumps(graph_shape(graph), separators=(",", ":")),
        ],
        "env": env,
        "ports": [{"name": "oracle-http", "containerPort": p.sidecar_port, "protocol": "TCP"}],
        "resources": p.sidecar_resources.render(),
        "readinessProbe": _http_probe("/health/ready", p.sidecar_port, 5, 5, 3),
        "livenessProbe": _http_probe("/health/live", p.sidecar_port, 15, 10, 3),
        "securityContext": _container_security(),
        # The write-ahead log lives here: an emptyDir survives container restarts in the pod.
        "volumeMounts": [{"name": "sidecar-state", "mountPath": SIDECAR_STATE_DIR}],
    }
    if env_from:
        container["envFrom"] = env_from
    if p.feedback_token_secret:
        container["command"] += ["--feedback-token-file", f"{FEEDBACK_TOKEN_DIR}/token"]
        container["volumeMounts"].append({"name": "feedback-token", "mountPath": FEEDBACK_TOKEN_DIR, "readOnly": True})
    return container


def _predictor(p: DeploymentParams, *, predictor: str, version: str, traffic: int,
               deployment_label: str) -> dict:
    q = p.model_copy(update={"model_version": version})
    graph = _graph(q, version)
    containers = [_model_container(q, GRAPH_MODEL_NODE)]
    if q.transformer is not None:
        containers.insert(0, _transformer_container(q, q.transformer))
    return {
        "name": predictor,
        "replicas": q.replicas,
        "traffic": traffic,
        "labels": {"app.kubernetes.io/part-of": "daic", "daic.dev/model-version": version},
        "componentSpecs": [{
            "metadata": {
                "annotations": {
                    "prometheus.io/scrape": "true",
                    "prometheus.io/port": str(q.sidecar_port),
                    "prometheus.io/path": "/metrics",
                },
            },
            "spec": {
                "securityContext": {"runAsNonRoot": True, "runAsUser": RUN_AS_USER, "fsGroup": RUN_AS_USER,
                                    "seccompProfile": {"type": "RuntimeDefault"}},
                # The model, the sidecar and Seldon's executor call no Kubernetes API: no token.
                "automountServiceAccountToken": False,
                "terminationGracePeriodSeconds": 30,
                "containers": [*containers, _sidecar_container(q, deployment_label, graph)],
                "volumes": [
                    {"name": "tmp", "emptyDir": {}},
                    {"name": "sidecar-state", "emptyDir": {}},
                    *([{"name": "feedback-token", "secret": {"secretName": q.feedback_token_secret,
                                                             "items": [{"key": "token", "path": "token"}]}}]
                      if q.feedback_token_secret else []),
                ],
            },
        }],
        "graph": graph,
    }


def _graph(q: DeploymentParams, version: str) -> dict:
    """The inference graph: the MODEL node, behind a TRANSFORMER when one is given. The logger
    sits on the root only: the executor logs the client's input and the final answer there (and
    the transformer's stage in between), all the sidecar needs (daic.serving.graph)."""
    logger = {"mode": "all", "url": f"http://localhost:{q.sidecar_ingest_port}/"}
    model = {
        "name": GRAPH_MODEL_NODE,
        "type": "MODEL",
        "endpoint": {"type": "REST"},
        "children": [],
        "parameters": [
            {"name": "model_name", "type": "STRING", "value": q.model_name},
            {"name": "model_version", "type": "STRING", "value": version},
            {"name": "reload_interval_s", "type": "FLOAT", "value": str(q.reload_interval_s)},
            {"name": "max_batch", "type": "INT", "value": str(q.max_batch)},
        ],
    }
    if q.transformer is None:
        return {**model, "logger": logger}
    t = q.transformer
    if t.model_class == FILTER_MODEL_CLASS:  # the model keeps the filter's daic.filter* tags, no other
        model["parameters"].append(dict(BEHIND_FILTER_PARAM))
    model["endpoint"] = {"type": "REST", "httpPort": MODEL_HTTP_PORT}
    return {
        "name": t.name,
        "type": "TRANSFORMER",
        "endpoint": {"type": "REST", "httpPort": t.http_port},
        "children": [model],
        "parameters": [{"name": k, "type": "STRING", "value": v} for k, v in sorted(t.parameters.items())],
        "logger": logger,
    }


#: The input filter's Seldon class (daic.serving.filter.FILTER_CLASS; named here so the operator,
#: which has no torch, can render the node).
FILTER_MODEL_CLASS = "daic.serving.filter.InputFilter"
FILTER_NODE = "filter"
SIDECAR_CONTAINER = "oracle-sidecar"
#: The MODEL node's parameter saying the input filter stands in front (daic.serving.config): only then
#: does it keep the filter's ``daic.filter*`` tags from its request; without it (the default) it drops
#: every ``daic.*`` tag a request carries, so no client can name a filter or an abstain decision.
BEHIND_FILTER = "behind_filter"
BEHIND_FILTER_PARAM = {"name": BEHIND_FILTER, "type": "BOOL", "value": "true"}


def _containers(predictor: dict) -> list[dict]:
    specs = predictor.get("componentSpecs") or []
    if not specs:
        raise ValueError(f"predictor {predictor.get('name')!r} has no componentSpecs to hold a filter container")
    return specs[0].setdefault("spec", {}).setdefault("containers", [])


def filter_of(predictor: dict) -> tuple[str | None, str | None]:
    """(filter version, gate) of a predictor's graph: its root TRANSFORMER's ``filter_version`` and
    ``gate`` parameters; (None, None) when the graph has no filter in front of the model."""
    graph = predictor.get("graph") or {}
    if graph.get("type") != "TRANSFORMER":
        return None, None
    params = {p.get("name"): p.get("value") for p in graph.get("parameters") or []}
    return (str(params["filter_version"]) if params.get("filter_version") else None,
            str(params["gate"]) if params.get("gate") else None)


def set_filter(predictor: dict, version: str | None, gate: str = "gated", *, reload_interval_s: float = 15.0,
               node_name: str = FILTER_NODE, http_port: int = MODEL_HTTP_PORT + 1,
               metrics_port: int = MODEL_METRICS_PORT + 1) -> dict:
    """A copy of a live predictor with the input filter ``version`` (gate ``gate``) as a TRANSFORMER
    node in front of its MODEL node, or with none (``version`` None). The filter's container is the
    model container's (image, store settings, resources, security) running ``FILTER_MODEL_CLASS``
    as a TRANSFORMER; the logger moves to the root, the sidecar's ``--graph`` follows
    (daic.serving.graph) and the MODEL node gets ``behind_filter`` (dropped with the filter), as
    :func:`render_seldon_deployment` renders it. A pinned version (not the
    registry's service record) so a canary and the main predictor can differ."""
    import copy

    pred = copy.deepcopy(predictor)
    graph = pred.get("graph") or {}
    wrapped = graph.get("type") == "TRANSFORMER"
    model = (graph.get("children") or [{}])[0] if wrapped else graph
    if model.get("type") != "MODEL":
        raise ValueError(f"predictor {pred.get('name')!r}: expected a MODEL node (optionally behind one "
                         f"TRANSFORMER), got {graph.get('type')!r}")
    logger = graph.get("logger")
    containers = _containers(pred)
    containers[:] = [c for c in containers if c.get("name") != (graph.get("name") if wrapped else node_name)]
    model = {k: v for k, v in model.items() if k != "logger"}
    # Behind the filter the model keeps the filter's tags; without it, none (BEHIND_FILTER_PARAM).
    model["parameters"] = [p for p in model.get("parameters") or [] if p.get("name") != BEHIND_FILTER]
    if version is not None:
        model["parameters"].append(dict(BEHIND_FILTER_PARAM))
    if version is None:
        model.pop("endpoint", None)
        model["endpoint"] = {"type": "REST"}
        new_graph = {**model, **({"logger": logger} if logger else {})}
    else:
        _check_version(version)
        model_params = {p.get("name"): p.get("value") for p in model.get("parameters") or []}
        params = {"filter_version": version, "gate": gate, "model_name": str(model_params.get("model_name", "mnist")),
                  "reload_interval_s": str(reload_interval_s)}
        model["endpoint"] = {"type": "REST", "httpPort": MODEL_HTTP_PORT}
        new_graph = {"name": node_name, "type": "TRANSFORMER", "endpoint": {"type": "REST", "httpPort": http_port},
                     "children": [model],
                     "parameters": [{"name": k, "type": "STRING", "value": v} for k, v in sorted(params.items())],
                     **({"logger": logger} if logger else {})}
        source = next((c for c in containers if c.get("name") == model.get("name")), None)
        if source is None:
            raise ValueError(f"predictor {pred.get('name')!r} has no container named {model.get('name')!r}")
        container = copy.deepcopy(source)
        command = list(container.get("command") or [])
        if len(command) >= 2 and command[0] == "seldon-core-microservice":
            command[1] = FILTER_MODEL_CLASS
        for flag, value in (("--service-type", "TRANSFORMER"), ("--http-port", str(http_port)),
                            ("--metrics-port", str(metrics_port))):
            if flag in command and command.index(flag) + 1 < len(command):
                command[command.index(flag) + 1] = value
        container.update(name=node_name, command=command, ports=[
            {"name": "filter-http", "containerPort": http_port, "protocol": "TCP"},
            {"name": "filter-metrics", "containerPort": metrics_port, "protocol": "TCP"}],
            readinessProbe=_http_probe("/health/status", http_port, 5, 5, 3),
            livenessProbe=_http_probe("/health/ping", http_port, 30, 10, 3))
        containers.insert(0, container)
    pred["graph"] = new_graph
    for container in containers:
        argv = container.get("command")
        if container.get("name") == SIDECAR_CONTAINER and isinstance(argv, list) and "--graph" in argv:
            i = argv.index("--graph")
            if i + 1 < len(argv):
                argv[i + 1] = json.dumps(graph_shape(new_graph), separators=(",", ":"))
    return pred


def _document(p: DeploymentParams, predictors: list[dict]) -> dict:
    metadata: dict[str, Any] = {
        "name": p.name,
        "labels": {"app.kubernetes.io/name": p.name, "app.kubernetes.io/part-of": "daic"},
    }
    if p.namespace:
        metadata["namespace"] = p.namespace
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": metadata,
        "spec": {"name": p.name, "protocol": "seldon", "predictors": predictors},
    }


def render_seldon_deployment(params: DeploymentParams | None = None) -> dict:
    """One predictor taking all traffic; its sidecar logs under ``operational/<name>/``."""
    p = params or DeploymentParams()
    predictor = _predictor(p, predictor=p.predictor, version=p.model_version, traffic=p.traffic,
                           deployment_label=p.name)
    return _document(p, [predictor])


def render_canary_deployment(params: DeploymentParams, canary_version: str, canary_traffic: int) -> dict:
    """Main predictor plus a ``canary`` predictor pinned to ``canary_version`` taking
    ``canary_traffic`` percent. The canary's sidecar logs under ``operational/<name>-canary/`` so
    its estimate is never mixed with the champion's."""
    if not 0 < canary_traffic < 100:
        raise ValueError(f"canary_traffic must be between 1 and 99 percent, got {canary_traffic}")
    _check_version(canary_version)
    if canary_version == "champion":
        raise ValueError("the canary must pin a version (the challenger), not 'champion'")
    if params.predictor == "canary":
        raise ValueError("the main predictor cannot be named 'canary'")
    main = _predictor(params, predictor=params.predictor, version=params.model_version,
                      traffic=100 - canary_traffic, deployment_label=params.name)
    canary = _predictor(params, predictor="canary", version=canary_version,
                        traffic=canary_traffic, deployment_label=f"{params.name}-canary")
    return _document(params, [main, canary])


def to_yaml(document: dict) -> str:
    import yaml

    return yaml.safe_dump(document, sort_keys=False, default_flow_style=False)
