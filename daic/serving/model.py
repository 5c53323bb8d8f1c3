"""The model class for the seldon-core 1.18 Python wrapper (runs in ``.venv-serving``).

    seldon-core-microservice daic.serving.model.DaicModel --service-type MODEL --grpc-workers 0

What it does per request (``predict_raw``, so every part of the payload is validated by daic
and any bad input is an HTTP 400 naming the field, never a 500 from a numpy reshape):

* decode and validate the images (:mod:`daic.serving.inputs`);
* run the champion and its shadow model, and the champion once more on each self-agreement view
  (``self_agreement_views``, daic.oracles.self_agreement); answer class probabilities (N, 10) in
  ``data`` and the model version, the embeddings, the shadow's probabilities and the
  self-agreement in ``meta.tags``
  (:mod:`daic.serving.protocol`), which the executor's request logger hands to the sidecar; of the
  request's tags it echoes the client's own, never a ``daic.*`` one except the input filter's
  (``daic.filter*``) when rendered behind it (``behind_filter``): every ``daic.*`` tag is reserved;
* with abstaining on (issue 21, item 4; :mod:`daic.serving.abstainer`), tag each input whose
  P(correct) -- asked of the sidecar, behind the filter when one serves -- is below the bound
  (``daic.abstain`` and the tags of :mod:`daic.serving.abstain`);
* report Seldon custom metrics (``meta.metrics``: inputs served, inference time, batch size,
  reloads), which the wrapper exports on its metrics port and strips from the response.

Live reload: with ``model_version=champion`` a daemon thread in each gunicorn worker checks the
registry's champion pointer every ``reload_interval_s``; a new version is loaded next to the
serving one and swapped in with one reference assignment, so requests in flight finish on the
old version and none fails or waits during the switch.

Imports only what the serving environment has: torch, numpy, seldon-core, daic's storage,
models and serving modules (no kfp, kopf or ray).
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any

import torch  # imported in the gunicorn master, before workers fork: workers boot fast

from daic.serving.config import ServerConfig
from daic.serving.inputs import InputError, decode_request
from daic.serving.loading import ServedModel, load_served_model, resolve_version
from daic.serving.protocol import CLASS_NAMES, TRANSFORMER_TAGS, build_response

logger = logging.getLogger(__name__)


def _seldon_error(message: str, status: int, reason: str) -> Exception:
    from seldon_core.flask_utils import SeldonMicroserviceException

    return SeldonMicroserviceException(message, status_code=status, reason=reason)


class DaicModel:
    """A Seldon MODEL component serving one registry model (see the module docstring)."""

    def __init__(self, **parameters: Any) -> None:
        self.config = ServerConfig.resolve(parameters)
        self._served: ServedModel | None = None
        self._store_handle = None  # opened in the worker (after fork), not in the gunicorn master
        self._reload_lock = threading.Lock()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self.reloads = 0
        self.last_reload_error: str | None = None
        self._abstainer = self.config.abstainer(self._abstain_policy)
        #: The reserved tags taken from a request: the filter's, and only behind the filter.
        self._trusted_tags = TRANSFORMER_TAGS if self.config.behind_filter else frozenset()
        #: The champion's self-agreement views (daic.oracles.self_agreement), sent with every answer.
        self._views = self.config.views

    def _abstain_policy(self):
        from daic.serving.abstain_policy import read_policy

        return read_policy(self._store(), self.config.model_name)

    # -- lifecycle ----------------------------------------------------------------------------
    def load(self) -> None:
        """Called by the wrapper once per worker after fork. The wrapper ignores AttributeError
        from ``load`` (it takes it for "no load method"), so every failure is re-raised as a
        RuntimeError: a model that cannot load must stop the worker, loudly."""
        try:
            torch.set_num_threads(self.config.torch_threads)
            self._served = self._load(self._target_version())
            logger.info("daic: serving %s %s", self._served.name, self._served.version)
            self._refresh_abstain()
            if (self.config.follows_champion or self._abstainer.follows_record) and self._watcher is None:
                self._watcher = threading.Thread(target=self._watch_champion, name="daic-champion-watch",
                                                 daemon=True)
                self._watcher.start()
        except Exception as exc:  # noqa: BLE001 - re-raised with context, see docstring
            raise RuntimeError(f"daic model server could not load {self.config.model_name!r} "
                               f"({self.config.model_version}) from {self.config.store_url or 'the default store'}: "
                               f"{type(exc).__name__}: {exc}") from exc

    def _store(self):
        if self._store_handle is None:
            from daic.storage import open_store

            self._store_handle = open_store(self.config.store_url)
        return self._store_handle

    def _target_version(self) -> str:
        if self.config.follows_champion:
            return resolve_version(self._store(), self.config.model_name)
        return self.config.model_version

    def _load(self, version: str) -> ServedModel:
        return load_served_model(self._store(), self.config.model_name, version)

    def check_for_new_version(self) -> bool:
        """Load and swap in the champion if the pointer moved; True when it swapped."""
        with self._reload_lock:
            target = self._target_version()
            current = self._served
            if current is not None and current.version == target:
                return False
            fresh = self._load(target)
            self._served = fresh  # atomic: in-flight requests keep their reference to the old one
            self.reloads += 1
            logger.info("daic: reloaded %s: %s -> %s", fresh.name,
                        current.version if current else None, fresh.version)
            return True

    def _refresh_abstain(self) -> None:
        try:
            self._abstainer.refresh()
        except Exception as exc:  # noqa: BLE001 - keep the bound in force
            logger.warning("daic: abstain policy check failed: %s: %s", type(exc).__name__, exc)

    def _watch_champion(self) -> None:
        while not self._stop.wait(self.config.reload_interval_s):
            self._refresh_abstain()
            if not self.config.follows_champion:
                continue
            try:
                self.check_for_new_version()
                self.last_reload_error = None
            except Exception as exc:  # noqa: BLE001 - keep serving the loaded version
                self.last_reload_error = f"{type(exc).__name__}: {exc}"
                logger.warning("daic: champion check failed, still serving %s: %s",
                               self._served.version if self._served else None, self.last_reload_error)

    def close(self) -> None:
        self._stop.set()

    # -- serving ------------------------------------------------------------------------------
    def predict_raw(self, request: Any) -> Any:
        from seldon_core.proto import prediction_pb2

        if isinstance(request, prediction_pb2.SeldonMessage):  # gRPC: same logic on the JSON form
            from seldon_core.utils import json_to_seldon_message, seldon_message_to_json

            return json_to_seldon_message(self._predict_json(seldon_message_to_json(request)))
        return self._predict_json(request)

    def _predict_json(self, request: Any) -> dict:
        served = self._served
        if served is None:
            raise _seldon_error("the model is not loaded yet", 503, "MICROSERVICE_NOT_READY")
        try:
            decoded = decode_request(request, max_batch=self.config.max_batch)
        except InputError as exc:
            raise _seldon_error(str(exc), 400, "MICROSERVICE_BAD_DATA") from None
        start = time.perf_counter()
        # the champion, its shadow and the champion once more per self-agreement view (issue 17)
        outputs = served.outputs(decoded.images, self._views)
        elapsed_ms = (time.perf_counter() - start) * 1000.0
        n = int(decoded.images.shape[0])
        # Seldon's own "model_version" label (the image tag) would overwrite a label of that name.
        labels = {"daic_model_version": served.version}
        metrics = [
            {"type": "COUNTER", "key": "daic_model_inputs_total", "value": n, "tags": labels},
            {"type": "TIMER", "key": "daic_model_inference_ms", "value": elapsed_ms, "tags": labels},
            {"type": "GAUGE", "key": "daic_model_batch_size", "value": n, "tags": labels},
            {"type": "GAUGE", "key": "daic_model_reloads", "value": self.reloads},
        ]
        response = build_response(**outputs, model=served.name, version=served.version, encoding=decoded.encoding,
                                  request_meta=request.get("meta"), metrics=metrics, trusted_tags=self._trusted_tags)
        return self._abstainer.tag(response, n)

    def health_status_raw(self) -> dict:
        """``GET /health/status`` (the readiness probe): 503 until a version is loaded, then the
        served version as plain JSON."""
        served = self._served
        if served is None:
            raise _seldon_error("the model is not loaded yet", 503, "MICROSERVICE_NOT_READY")
        return {"model": served.name, "version": served.version, "reloads": self.reloads,
                "last_reload_error": self.last_reload_error}

    def init_metadata(self) -> dict:
        """Static (the wrapper reads it before the model loads): name and tensor contracts."""
        return {
            "name": self.config.model_name,
            "versions": [self.config.model_version],
            "platform": "pytorch",
            "inputs": [{"messagetype": "tensor", "schema": {"names": ["image"], "shape": [28, 28]}}],
            "outputs": [{"messagetype": "tensor", "schema": {"names": list(CLASS_NAMES), "shape": [10]}}],
            "custom": {"tags": "daic.model, daic.model_version, daic.embeddings, daic.shadow_probs, "
                                "daic.self_agreement, daic.self_agreement.views"},
        }

    def send_feedback(self, features, feature_names, reward, truth, routing=None) -> list:
        """Feedback is for the sidecar (the executor logs it there); the model learns nothing
        online, so it only acknowledges."""
        return []

    def class_names(self) -> list[str]:
        return list(CLASS_NAMES)

