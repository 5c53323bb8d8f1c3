"""The input filter as a Seldon ``TRANSFORMER`` (issue 21; seldon-core 1.18 wrapper, ``.venv-serving``).

    seldon-core-microservice daic.serving.filter.InputFilter --service-type TRANSFORMER

It stands before the champion in the inference graph (``DeploymentParams(transformer=
TransformerNode(model_class="daic.serving.filter.InputFilter", parameters=...))``, and on the
embedded default ``StackConfig(transformer_class=..., transformer_parameters=...)``). Per request
(``transform_input_raw``): decode and validate the images as the model does (a bad input is a 400
naming the field), run the filter, keep each input's original or its filtered version by the gate
(:mod:`daic.filters.gate`), and hand the model the same Seldon message in the same encoding, with
``meta.tags`` ``daic.filter`` (the filter version), ``daic.filter.gate`` (its gate mode) and
``daic.filtered`` (per input), which the model echoes into its response (a model rendered behind
this node, ``behind_filter``; daic.serving.protocol). Every ``daic.*`` tag is reserved: the
client's are dropped here before these are set, so a client cannot name a filter (nor any other
daic tag) for the sidecar. The sidecar still sees
the client's input and the final answer (the root's logger; daic.serving.graph), and the tags tell
it to score the answer with the wrapped model's assessor (daic.filters.assessor), so its estimate
covers the wrapped model.

Which filter: ``filter_version="service"`` (default) follows the registry's service record
(:class:`daic.filters.registry.FilterService`), re-read every ``reload_interval_s`` by a daemon
thread and swapped in with one reference assignment; no filter in service means pass-through, so
the filter is put in and removed without restarting anything. A pinned version serves that one.

============================  ============================  ====================================
parameter                     environment                   meaning
============================  ============================  ====================================
``store_url``                 ``DAIC_STORE``                object store holding the registry
``model_name``                ``DAIC_MODEL_NAME``           the classifier the filter wraps
``filter_version``            ``DAIC_FILTER_VERSION``       ``service`` or a filter version
``gate``                      ``DAIC_FILTER_GATE``          ``gated``/``always``/``off`` (default:
                                                            the service record's)
``threshold``                 ``DAIC_FILTER_THRESHOLD``     gate threshold (default: the card's)
``reload_interval_s``         ``DAIC_RELOAD_INTERVAL_S``    service record check interval
``max_batch``                 ``DAIC_MAX_BATCH``            most inputs per request
``torch_threads``             ``DAIC_TORCH_THREADS``        intra-op threads per worker
============================  ============================  ====================================
"""
from __future__ import annotations

import logging
import os
import re
import threading
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch

from daic.serving.inputs import DEFAULT_MAX_BATCH, InputError, decode_request
from daic.serving.protocol import TAG_FILTER, TAG_FILTERED, without_reserved
from daic.serving.protocol import TAG_FILTER_GATE as TAG_GATE  # with TAG_FILTER: the assessor the sidecar uses

logger = logging.getLogger(__name__)
_NAME = re.compile(r"^[A-Za-z0-9._-]{1,63}$")
_ENV: dict[str, tuple[str, type]] = {
    "store_url": ("DAIC_STORE", str), "model_name": ("DAIC_MODEL_NAME", str),
    "filter_version": ("DAIC_FILTER_VERSION", str), "gate": ("DAIC_FILTER_GATE", str),
    "threshold": ("DAIC_FILTER_THRESHOLD", float), "reload_interval_s": ("DAIC_RELOAD_INTERVAL_S", float),
    "max_batch": ("DAIC_MAX_BATCH", int), "torch_threads": ("DAIC_TORCH_THREADS", int),
}


@dataclass(frozen=True)
class FilterServerConfig:
    store_url: Optional[str] = None
    model_name: str = "mnist"
    filter_version: str = "service"
    gate: Optional[str] = None
    threshold: Optional[float] = None
    reload_interval_s: float = 15.0
    max_batch: int = DEFAULT_MAX_BATCH
    torch_threads: int = 1

    def __post_init__(self) -> None:
        from daic.filters.gate import GATE_MODES

        for name in ("model_name", "filter_version"):
            if not _NAME.match(str(getattr(self, name))):
                raise ValueError(f"{name} must be letters, digits and ._- (at most 63), got {getattr(self, name)!r}")
        if self.gate is not None and self.gate not in GATE_MODES:
            raise ValueError(f"gate must be one of {', '.join(GATE_MODES)}, got {self.gate!r}")
        if self.threshold is not None and not (np.isfinite(self.threshold) and self.threshold >= 0):
            raise ValueError(f"threshold must be a finite number >= 0, got {self.threshold!r}")
        if not self.reload_interval_s > 0:
            raise ValueError(f"reload_interval_s must be > 0, got {self.reload_interval_s!r}")
        if self.max_batch < 1 or self.torch_threads < 1:
            raise ValueError("max_batch and torch_threads must be >= 1")

    @classmethod
    def resolve(cls, params: dict[str, Any], env=None) -> "FilterServerConfig":
        env = os.environ if env is None else env
        unknown = set(params) - set(_ENV)
        if unknown:
            raise ValueError(f"unknown filter parameter(s) {', '.join(sorted(unknown))}; valid: {', '.join(sorted(_ENV))}")
        values: dict[str, Any] = {}
        for name, (var, kind) in _ENV.items():
            raw = params.get(name) if params.get(name) is not None else env.get(var) or None
            if raw is None:
                continue
            try:
                values[name] = kind(raw)
            except (TypeError, ValueError):
                raise ValueError(f"{name} ({var}) must be {kind.__name__}, got {raw!r}") from None
        return cls(**values)


@dataclass(frozen=True)
class ServedFilter:
    version: Optional[str]  # None: pass-through
    net: Any
    gate: str
    threshold: float


def _seldon_error(message: str, status: int, reason: str) -> Exception:
    from seldon_core.flask_utils import SeldonMicroserviceException

    return SeldonMicroserviceException(message, status_code=status, reason=reason)


def encode_like(images: np.ndarray, encoding: str, request: dict) -> dict:
    """The request with its images replaced, in the client's encoding; other fields kept."""
    values = np.round(images.astype(np.float64), 5)
    data = dict(request.get("data") or {})
    data.pop("ndarray", None)
    data.pop("tensor", None)
    if encoding == "tensor":
        data["tensor"] = {"shape": list(images.shape), "values": values.ravel().tolist()}
    else:
        data["ndarray"] = values.tolist()
    return {**request, "data": data}


class InputFilter:
    """A Seldon TRANSFORMER serving a registry filter (see the module docstring)."""

    def __init__(self, **parameters: Any) -> None:
        self.config = FilterServerConfig.resolve(parameters)
        self._served: Optional[ServedFilter] = None
        self._store_handle = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._watcher: Optional[threading.Thread] = None
        self.last_reload_error: Optional[str] = None

    def _store(self):
        if self._store_handle is None:
            from daic.storage import open_store

            self._store_handle = open_store(self.config.store_url)
        return self._store_handle

    def _wanted(self) -> tuple[Optional[str], str]:
        from daic.filters.registry import read_service

        c = self.config
        if c.filter_version != "service":
            return c.filter_version, c.gate or "gated"
        service = read_service(self._store(), c.model_name)
        return service.version, c.gate or service.gate

    def refresh(self) -> bool:
        """Load what the service record (or the pinned version) asks for; True when it changed."""
        from daic.filters.registry import FilterRegistry

        with self._lock:
            version, gate = self._wanted()
            current = self._served
            if current is not None and (current.version, current.gate) == (version, gate):
                return False
            if version is None:
                self._served = ServedFilter(None, None, "off", 0.0)
            else:
                registry = FilterRegistry(self._store(), self.config.model_name)
                threshold = self.config.threshold
                if threshold is None:
                    threshold = float(registry.card(version).metrics.get("gate_threshold", 0.0))
                self._served = ServedFilter(version, registry.load_filter(version), gate, threshold)
            logger.info("daic filter: %s -> %s (%s)", current.version if current else None, version, gate)
            return True

    def load(self) -> None:
        try:
            torch.set_num_threads(self.config.torch_threads)
            self.refresh()
            if self.config.filter_version == "service" and self._watcher is None:
                self._watcher = threading.Thread(target=self._watch, name="daic-filter-watch", daemon=True)
                self._watcher.start()
        except Exception as exc:  # noqa: BLE001 - the wrapper swallows AttributeError from load
            raise RuntimeError(f"daic filter could not load for {self.config.model_name!r} "
                               f"({self.config.filter_version}): {type(exc).__name__}: {exc}") from exc

    def _watch(self) -> None:
        while not self._stop.wait(self.config.reload_interval_s):
            try:
                self.refresh()
                self.last_reload_error = None
            except Exception as exc:  # noqa: BLE001 - keep serving what is loaded
                self.last_reload_error = f"{type(exc).__name__}: {exc}"
                logger.warning("daic filter: service check failed: %s", self.last_reload_error)

    def close(self) -> None:
        self._stop.set()

    def transform(self, request: Any) -> dict:
        """The transformed Seldon message (JSON form); InputError for a bad request."""
        from daic.filters.gate import select

        served = self._served
        decoded = decode_request(request, max_batch=self.config.max_batch)
        if served is None or served.version is None or served.gate == "off":
            images, mask = decoded.images, np.zeros(len(decoded.images), bool)
        else:
            with torch.inference_mode():
                x = torch.from_numpy(decoded.images)
                if served.gate == "gated" and hasattr(served.net, "forward_gated"):
                    filtered, uncertain = served.net.forward_gated(x)  # one classifier pass for both
                else:
                    filtered, uncertain = served.net(x), None
                filtered = filtered.numpy()
            images, mask = select(decoded.images, filtered, served.gate, served.threshold,
                                  None if uncertain is None else uncertain.numpy())
        out = encode_like(images, decoded.encoding, request)
        meta = dict(request.get("meta") or {}) if isinstance(request.get("meta"), dict) else {}
        tags = without_reserved(meta.get("tags"))  # the client's daic.* tags: never handed on
        tags[TAG_FILTER] = served.version if served else None
        tags[TAG_GATE] = served.gate if served else None
        tags[TAG_FILTERED] = mask.astype(int).tolist()
        out["meta"] = {**meta, "tags": tags}
        return out

    def transform_input_raw(self, request: Any) -> Any:
        if self._served is None:
            raise _seldon_error("the filter is not loaded yet", 503, "MICROSERVICE_NOT_READY")
        from seldon_core.proto import prediction_pb2

        if isinstance(request, prediction_pb2.SeldonMessage):  # gRPC: same logic on the JSON form
            from seldon_core.utils import json_to_seldon_message, seldon_message_to_json

            return json_to_seldon_message(self.transform_input_raw(seldon_message_to_json(request)))
        try:
            return self.transform(request)
        except InputError as exc:
            raise _seldon_error(str(exc), 400, "MICROSERVICE_BAD_DATA") from None

    def health_status_raw(self) -> dict:
        served = self._served
        if served is None:
            raise _seldon_error("the filter is not loaded yet", 503, "MICROSERVICE_NOT_READY")
        return {"filter": served.version, "gate": served.gate, "threshold": served.threshold,
                "last_reload_error": self.last_reload_error}


FILTER_CLASS = "daic.serving.filter.InputFilter"


def filter_node(model_name: str = "mnist", *, filter_version: str = "service", gate: Optional[str] = None,
                reload_interval_s: float = 15.0):
    """The TRANSFORMER node that puts :class:`InputFilter` in front of the model
    (``DeploymentParams(transformer=filter_node())``); plain data, no seldon-core import."""
    from daic.serving.manifest import TransformerNode

    params = {"model_name": model_name, "filter_version": filter_version, "reload_interval_s": str(reload_interval_s)}
    if gate is not None:
        params["gate"] = gate
    FilterServerConfig.resolve(params, env={})  # a bad setting fails at render time, named
    return TransformerNode(model_class=FILTER_CLASS, parameters=params)
