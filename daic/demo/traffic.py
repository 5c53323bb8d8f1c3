"""Operational traffic for the demo: scenario batches sent through the gateway, truth measured.

The scenario knows each input's true label, so the demo can show the true accuracy of whatever
version served each batch next to what the sidecar estimated without labels.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import requests

from daic.data.scenarios import OperationalBatch
from daic.serving import http_client


@dataclass(frozen=True)
class Served:
    """What one batch of traffic did: accuracy against the truth, and who served it."""

    accuracy: float
    model_version: str | None
    n: int
    filter_version: str | None = None  # the input filter in front of the model (meta tag daic.filter)


class TrafficClient:
    """Sends batches in the Seldon Core v1 protocol (``data.ndarray``) to the local gateway."""

    def __init__(self, gateway_url: str, timeout_s: float = 60.0) -> None:
        self.url = gateway_url.rstrip("/") + "/api/v1.0/predictions"
        self.session = requests.Session()
        self.timeout_s = timeout_s

    def send(self, batch: OperationalBatch) -> Served:
        payload = {"data": {"ndarray": np.round(batch.images, 6).tolist()}}
        # The answer holds a few rows of class probabilities per input (the model's, the shadow's in
        # the tags) and per-input tags: 4 KiB per input is several times what a row takes in JSON.
        resp = http_client.send(self.session, "POST", self.url, json=payload, timeout_s=self.timeout_s,
                                max_bytes=http_client.SMALL_ANSWER_BYTES + 4096 * batch.images.shape[0])
        if resp.status_code != 200:
            raise RuntimeError(f"gateway answered {resp.status_code}: {resp.text[:300]}")
        body = resp.json()
        probs = np.asarray(body["data"]["ndarray"], dtype=np.float64)
        predictions = probs.argmax(axis=1)
        tags = (body.get("meta") or {}).get("tags") or {}
        return Served(accuracy=float(np.mean(predictions == batch.labels)),
                      model_version=tags.get("daic.model_version"), n=len(predictions),
                      filter_version=tags.get("daic.filter") or None)

    def close(self) -> None:
        self.session.close()


def read_estimate(sidecar_url: str, timeout_s: float = 10.0) -> dict:
    """The sidecar's current window estimate (``GET /estimate``); {} when it cannot be read."""
    try:
        resp = http_client.send(None, "GET", sidecar_url.rstrip("/") + "/estimate", timeout_s=timeout_s,
                                max_bytes=http_client.SMALL_ANSWER_BYTES)
        return resp.json() if resp.status_code == 200 else {}
    except (requests.RequestException, ValueError):
        return {}
