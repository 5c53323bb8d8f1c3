"""Prometheus metrics of the sidecar (``prometheus_client``), one registry per service instance.

Counters and gauges of the event flow are updated as events move; the estimate gauges are
computed at scrape time by a custom collector, so ``/metrics`` never shows a stale estimate.

=========================================  =====================================================
``daic_sidecar_events_received_total``     accepted events, by ``type`` (request/response/feedback)
``daic_sidecar_events_joined_total``       predictions whose request and response were joined
``daic_sidecar_events_duplicate_total``    events ignored as already seen (idempotent by request id)
``daic_sidecar_events_skipped_total``      events of intermediate graph nodes (and feedback logged by a
                                           second node), acknowledged and not scored on purpose
``daic_sidecar_predictions_incomplete_total`` predictions given up on, by ``gap``:
                                           ``request_without_response`` (the model failed, or the
                                           executor dropped the response event) or
                                           ``response_without_request``; ``rate(...[1m])`` is the gap
                                           per second over the last minute
``daic_sidecar_feedback_total``            feedback messages, by ``link``: ``labels`` / ``reward``
                                           (linked to a stored prediction by request id) or
                                           ``unlinked`` (no stored prediction has that id)
``daic_sidecar_events_dropped_total``      events given up on, by ``reason``: ``backpressure`` (503),
                                           ``invalid`` (400), ``unanswered`` (request, no response in
                                           time), ``orphan_response``, ``overflow``, ``unreadable``,
                                           ``unwritable`` (the write-ahead log failed: 503),
                                           ``unknown_version`` (the response names a model version
                                           that is not in the registry: refused, not scored),
                                           ``too_large`` (a body over ``max_body_bytes``: 413)
``daic_sidecar_predictions_width_mismatch_total`` predictions refused as ``unreadable`` because a
                                           field's width is not their model version's, by ``field``:
                                           ``probs`` (classes), ``embeddings`` or ``shadow_probs``
``daic_sidecar_inputs_scored_total``       inputs scored by the pseudo-oracles, by ``model_version``
``daic_sidecar_inputs_unscored_total``     inputs recorded without scores (no oracle reference)
``daic_sidecar_queue_depth``               accepted events waiting to be scored
``daic_sidecar_pending_joins``             halves waiting for their partner
``daic_sidecar_records_written_total``     inputs written to the object store
``daic_sidecar_store_failures_total``      failed batch writes (retried at the next flush)
``daic_serving_info``                      1 per model version this sidecar serves, by ``model_version``
                                           and ``role`` (``champion`` or ``canary``)
``daic_estimated_accuracy``                windowed label-free accuracy
``daic_estimated_accuracy_lower/upper``    its band
``daic_estimate_error_sd``                 the estimate's error scale (sampling and model error)
``daic_estimate_timestamp_seconds``        Unix time of the newest input in the window: the reading's
                                           own time (it does not move while no traffic comes)
``daic_reference_accuracy``                the version's reference (validation) accuracy
``daic_drift_score``                       mean reference percentile of latent distances (0.5 = none)
``daic_drift_alarm``                       1 when the drift test alarms
``daic_change_alarm``                      1 when the sequential change detector alarms
``daic_estimate_trusted``                  0 when the window is too small or too far from the reference
``daic_window_size``                       inputs in the window
``daic_feedback_inputs``                   inputs with ground truth
``daic_feedback_accuracy``                 accuracy on inputs with ground truth
=========================================  =====================================================

Every series carries ``deployment``. The estimate gauges (``daic_serving_info`` down) carry
``model_version`` and ``role`` and exist only for the versions this sidecar serves now
(daic.sidecar.serving): one series per serving version and replica, by construction. Pooling
replicas weighs each by its window (``sum(acc * n) / sum(n)``; docs/operator.md, "Prometheus").
Counters exist from start-up at 0 for every known label value (per model version from the time
the version is first the champion or first scored), so ``increase()`` sees their first events.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

DROP_REASONS = ("backpressure", "invalid", "unanswered", "orphan_response", "overflow", "unreadable",
                "unwritable", "unknown_version", "too_large")
WIDTH_FIELDS = ("probs", "embeddings", "shadow_probs")


class SidecarMetrics:
    def __init__(self, deployment: str, estimates: Callable[[], dict[str, dict]]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.deployment = deployment
        d = ["deployment"]
        r = self.registry
        self.received = Counter("daic_sidecar_events_received", "Accepted events", d + ["type"], registry=r)
        self.joined = Counter("daic_sidecar_events_joined", "Joined predictions", d, registry=r)
        self.duplicate = Counter("daic_sidecar_events_duplicate", "Events ignored as duplicates", d, registry=r)
        self.skipped = Counter("daic_sidecar_events_skipped", "Events of intermediate graph nodes, not scored",
                               d, registry=r)
        self.gap = Counter("daic_sidecar_predictions_incomplete", "Predictions given up on, by the side missing",
                           d + ["gap"], registry=r)
        self.feedback_received = Counter("daic_sidecar_feedback", "Feedback messages, by how they were linked",
                                         d + ["link"], registry=r)
        self.dropped = Counter("daic_sidecar_events_dropped", "Events given up on", d + ["reason"], registry=r)
        self.width_mismatch = Counter("daic_sidecar_predictions_width_mismatch",
                                      "Predictions refused because a field's width is not their version's",
                                      d + ["field"], registry=r)
        self.scored = Counter("daic_sidecar_inputs_scored", "Inputs scored", d + ["model_version"], registry=r)
        self.unscored = Counter("daic_sidecar_inputs_unscored", "Inputs recorded without oracle scores",
                                d + ["model_version"], registry=r)
        self.replayed = Counter("daic_sidecar_events_replayed", "Events replayed from the write-ahead log",
                                d, registry=r)
        self.records_written = Counter("daic_sidecar_records_written", "Inputs written to the store", d, registry=r)
        self.store_failures = Counter("daic_sidecar_store_failures", "Failed batch writes", d, registry=r)
        self.queue_depth = Gauge("daic_sidecar_queue_depth", "Events waiting to be scored", d, registry=r)
        self.pending_joins = Gauge("daic_sidecar_pending_joins", "Halves waiting for a partner", d, registry=r)
        for reason in DROP_REASONS:  # export zeros, so "nothing dropped" is visible, not absent
            self.dropped.labels(deployment, reason)
        for kind in ("request", "response", "feedback"):
            self.received.labels(deployment, kind)
        self.joined.labels(deployment)
        self.skipped.labels(deployment)
        for gap in ("request_without_response", "response_without_request"):
            self.gap.labels(deployment, gap)
        for name in WIDTH_FIELDS:
            self.width_mismatch.labels(deployment, name)
        for link in ("labels", "reward", "unlinked"):
            self.feedback_received.labels(deployment, link)
        self.duplicate.labels(deployment)
        for metric in (self.replayed, self.records_written, self.store_failures, self.queue_depth,
                       self.pending_joins):
            metric.labels(deployment)
        r.register(_EstimateCollector(deployment, estimates))

    def drop(self, reason: str, n: int = 1) -> None:
        self.dropped.labels(self.deployment, reason).inc(n)

    def init_version(self, version: str) -> None:
        """Export the per-version counters at 0 before the version's first input."""
        self.scored.labels(self.deployment, version)
        self.unscored.labels(self.deployment, version)


_GAUGES = (
    ("daic_estimated_accuracy", "Windowed label-free accuracy estimate", "accuracy"),
    ("daic_estimated_accuracy_lower", "Lower end of the estimate's band", "lower"),
    ("daic_estimated_accuracy_upper", "Upper end of the estimate's band", "upper"),
    ("daic_estimate_error_sd", "The estimate's error scale (sampling and model error)", "error_sd"),
    ("daic_estimate_timestamp_seconds", "Unix time of the newest input in the estimate's window", "timestamp"),
    ("daic_reference_accuracy", "The model version's reference (validation) accuracy", "reference_accuracy"),
    ("daic_drift_score", "Mean reference percentile of latent distances (0.5 = no drift)", "drift_score"),
    ("daic_drift_alarm", "1 when the window's drift test alarms", "drift_alarm"),
    ("daic_change_alarm", "1 when the sequential change detector alarms", "change_alarm"),
    ("daic_estimate_trusted", "1 when the estimate is trusted", "trusted"),
    ("daic_window_size", "Inputs in the estimator's window", "n"),
    ("daic_feedback_inputs", "Inputs with ground truth", "feedback_n"),
    ("daic_feedback_accuracy", "Accuracy on inputs with ground truth", "feedback_accuracy"),
)


_LABELS = ["deployment", "model_version", "role"]


class _EstimateCollector(Collector):
    """Reads ``estimates()`` -> {model_version: {field: value, "role": ...}} at every scrape: the
    serving versions only, so a version that stops serving has no series from the next scrape on
    (Prometheus marks its series stale)."""

    def __init__(self, deployment: str, estimates: Callable[[], dict[str, dict]]) -> None:
        self.deployment = deployment
        self.estimates = estimates

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return [GaugeMetricFamily("daic_serving_info", _INFO_DOC, labels=_LABELS),
                *(GaugeMetricFamily(name, doc, labels=_LABELS) for name, doc, _ in _GAUGES)]

    def collect(self) -> Iterable[GaugeMetricFamily]:
        current = self.estimates()
        info = GaugeMetricFamily("daic_serving_info", _INFO_DOC, labels=_LABELS)
        for version, fields in sorted(current.items()):
            info.add_metric([self.deployment, version, str(fields.get("role", "champion"))], 1.0)
        yield info
        for name, doc, key in _GAUGES:
            family = GaugeMetricFamily(name, doc, labels=_LABELS)
            for version, fields in sorted(current.items()):
                value = fields.get(key)
                if value is None or (isinstance(value, float) and math.isnan(value)):
                    continue
                family.add_metric([self.deployment, version, str(fields.get("role", "champion"))], float(value))
            yield family


_INFO_DOC = "1 for each model version this sidecar serves, with its role (champion or canary)"
