"""Typed spec of an ``AssessmentCycle`` (``assessmentcycles.daic.dev/v1alpha1``).

These models are the one place where the spec's fields, defaults, enums and cross-field rules live
in Python; ``manifests/crd/assessmentcycles.daic.dev.yaml`` states the same schema for the API
server, and ``tests/test_operator_crd.py`` keeps the two in sync (same fields, enums, defaults and
bounds). The CRD cannot express every rule the models check (a reserved pipeline parameter, for
instance), so the operator validates the spec again and reports a clear message on the resource.

Field names are camelCase on the wire (Kubernetes convention) and snake_case in Python.
"""
from __future__ import annotations

import enum
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

GROUP = "daic.dev"
VERSION = "v1alpha1"
KIND = "AssessmentCycle"
PLURAL = "assessmentcycles"
SHORT_NAME = "acyc"

# DNS-1123 label: what Kubernetes accepts as a SeldonDeployment / predictor name.
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# A Kubernetes resource quantity, e.g. 2Gi, 512Mi, 1.5G.
QUANTITY = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$"

# Pipeline parameters the operator sets itself (see pipeline_params in reconcile.py); a spec may not
# override them, because the operator's records and run names depend on them.
RESERVED_PARAMETERS = frozenset({
    "cycle_id", "run_name", "deployment", "namespace", "model_name", "champion_version",
    "threshold", "trigger_estimate", "budget", "sampler", "target_half_width", "labeling_backend",
    "labeling_timeout_s", "ray_workers", "cpus_per_worker", "gpus_per_worker", "memory_per_worker",
    "labels_prefix", "record_prefix", "predictor", "promote_by",
    "train_batch_size", "train_precision", "ray_cluster", "train_node_selector", "train_tolerations",
    "remedy",
})


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid",
                              frozen=True, use_enum_values=False)


class EstimateSource(str, enum.Enum):
    sidecar = "sidecar"
    prometheus = "prometheus"


class TriggerMode(str, enum.Enum):
    absolute = "absolute"  # fire when the estimate falls below `threshold`
    drop = "drop"          # fire when it falls more than `maxDrop` below the reference accuracy


class TriggerMethod(str, enum.Enum):
    window = "window"          # the windowed estimate's rules only (threshold, untrusted + drift)
    sequential = "sequential"  # those, or the sidecar's sequential change alarm (CUSUM, daic.oracles.change)


class LabelingBackend(str, enum.Enum):
    simulated = "simulated"        # ground truth from the data set: benchmarks and the demo only
    web = "web"                    # daic's labeling web page
    label_studio = "label-studio"


class Sampler(str, enum.Enum):
    """The pipeline's sampling designs (components/sample_operational/designs.py)."""

    srs = "srs"
    stratified = "stratified"
    failure_seeking = "failure-seeking"
    active = "active"
    dual = "dual"                  # teach and measure (daic.sampling.dual)


class PromotionMode(str, enum.Enum):
    auto = "auto"
    manual = "manual"


class Remedy(str, enum.Enum):
    """What a confirmed drop gets (issue 21; Scanflow's two remedies): a retrained challenger, an
    input filter in front of the champion (no labels, in service at once), or both."""
    retrain = "retrain"
    filter = "filter"
    both = "both"


class DeploymentRef(_Model):
    """The SeldonDeployment whose accuracy the cycle watches and whose traffic it switches."""

    name: str = Field(pattern=DNS_LABEL, max_length=63)
    namespace: str | None = Field(default=None, pattern=DNS_LABEL, max_length=63)
    predictor: str = Field(default="default", pattern=DNS_LABEL, max_length=50)
    model_name: str = Field(default="mnist", pattern=r"^[A-Za-z0-9._-]+$", max_length=63)


class EstimateSpec(_Model):
    """Where the online accuracy estimate is read: the sidecar's REST endpoint or a PromQL query.

    ``canaryUrl`` / ``canaryQuery`` (optional) read the canary's own estimate during a canary (its
    sidecar logs apart from the champion's); a canary estimate below the threshold rolls back.

    Prometheus (daic.operators.estimates.PrometheusEstimate): ``selector`` names the sidecars'
    series by label matchers, and the source reads the serving version's estimate, window, time,
    trust, error scale and version from them, pooling replicas by window (a ``query`` that is only
    ``daic_estimated_accuracy{...}`` is read the same way); any other ``query`` is custom PromQL
    and needs ``countQuery`` (and ``canaryCountQuery`` with ``canaryQuery``).
    """

    source: EstimateSource = EstimateSource.sidecar
    url: str | None = Field(default=None, pattern=r"^https?://")
    canary_url: str | None = Field(default=None, pattern=r"^https?://")
    prometheus_url: str | None = Field(default=None, pattern=r"^https?://")
    selector: str | None = Field(default=None, pattern=r"^\{.*\}$")  # label matchers of the sidecars' series
    query: str | None = Field(default=None, min_length=1)
    count_query: str | None = Field(default=None, min_length=1)
    drift_query: str | None = Field(default=None, min_length=1)
    canary_query: str | None = Field(default=None, min_length=1)
    canary_count_query: str | None = Field(default=None, min_length=1)
    stale_after_seconds: int = Field(default=600, ge=1)
    timeout_seconds: float = Field(default=5.0, gt=0, le=60)

    @model_validator(mode="after")
    def _source_fields(self) -> "EstimateSpec":
        if self.source is EstimateSource.sidecar and not self.url:
            raise ValueError("estimate.url is required when estimate.source is 'sidecar'")
        if self.source is EstimateSource.prometheus and not (self.prometheus_url and (self.query or self.selector)):
            raise ValueError("estimate.prometheusUrl and estimate.selector (or a custom estimate.query) are "
                             "required when estimate.source is 'prometheus'")
        if self.source is EstimateSource.sidecar and self.canary_query:
            raise ValueError("estimate.canaryQuery applies to source 'prometheus'; use estimate.canaryUrl")
        if self.source is EstimateSource.prometheus and self.canary_url:
            raise ValueError("estimate.canaryUrl applies to source 'sidecar'; use estimate.canaryQuery")
        if self.selector and self.query:
            raise ValueError("estimate.selector and estimate.query exclude each other: the selector form reads "
                             "every series itself")
        selector = self.selector or selector_of(self.query)
        if selector and "role" in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*[=!]", selector):
            raise ValueError("estimate.selector may not match on role: the operator reads role=\"champion\" "
                             "and, during a canary, role=\"canary\"")
        custom = self.query is not None and selector_of(self.query) is None
        if custom and not self.count_query:
            raise ValueError("estimate.countQuery (the window size) is required with a custom estimate.query; "
                             "or use estimate.selector")
        if self.canary_query and not self.canary_count_query:
            raise ValueError("estimate.canaryCountQuery is required with estimate.canaryQuery (the rollback "
                             "guard needs the canary's window size)")
        if self.canary_query and not custom and self.source is EstimateSource.prometheus:
            raise ValueError("estimate.canaryQuery applies to a custom estimate.query; with a selector the "
                             "canary is read from the same series in role \"canary\"")
        return self


_BARE_SELECTOR = re.compile(r"^\s*daic_estimated_accuracy\s*(\{[^{}]*\})?\s*$")


def selector_of(query: str | None) -> str | None:
    """The label matchers of a query that is only ``daic_estimated_accuracy{...}``: such a query
    is read as ``estimate.selector`` (replicas pooled, champion changes followed); else None."""
    match = _BARE_SELECTOR.match(query or "")
    if not match:
        return None
    return match.group(1) or "{}"


class TriggerSpec(_Model):
    """When a drop of the online estimate starts a cycle (policy: ``daic.oracles.trigger``).

    ``threshold`` is the accuracy to stay above (absolute mode); ``maxDrop`` the allowed drop from
    the reference accuracy (drop mode). ``minWindow`` is the least number of predictions an
    estimate must rest on; ``consecutive`` how many successive fresh estimates must breach; after
    a cycle the trigger stays disarmed until the estimate recovers to the threshold plus
    ``hysteresis`` (so a lasting drop a cycle could not fix does not spend labels again and again).
    """

    mode: TriggerMode = TriggerMode.absolute
    threshold: float | None = Field(default=None, gt=0, lt=1)
    reference_accuracy: float | None = Field(default=None, ge=0, le=1)
    max_drop: float | None = Field(default=None, gt=0, le=1)
    min_window: int = Field(default=200, ge=1)
    consecutive: int = Field(default=1, ge=1, le=100)
    hysteresis: float = Field(default=0.02, ge=0, le=0.5)
    when_untrusted: bool = True   # fire when the sidecar marks its estimate untrusted under a drift alarm
    drift_alarm: bool = False     # fire on any drift alarm, even with a trusted, healthy estimate
    method: TriggerMethod = TriggerMethod.sequential  # also fire on the sidecar's change alarm

    @model_validator(mode="after")
    def _mode_fields(self) -> "TriggerSpec":
        if self.mode is TriggerMode.absolute and self.threshold is None:
            raise ValueError("trigger.threshold is required when trigger.mode is 'absolute'")
        if self.mode is TriggerMode.drop and self.max_drop is None:
            raise ValueError("trigger.maxDrop is required when trigger.mode is 'drop'")
        return self


class LabelingSpec(_Model):
    backend: LabelingBackend = LabelingBackend.web
    budget: int = Field(default=200, ge=1, le=100_000)
    sampler: Sampler = Sampler.stratified
    target_half_width: float = Field(default=0.03, gt=0, le=0.5)
    timeout_seconds: int = Field(default=86_400, ge=1)


class SamplingSpec(_Model):
    """Which logged inputs a cycle samples from: those since the previous cycle started, but never
    more than the last ``windowHours`` hours (default 24: a day of traffic, 8.6M inputs at 100
    requests/s), so no run reads the deployment's whole history."""

    window_hours: float = Field(default=24.0, gt=0, le=8784)


class PipelineSpec(_Model):
    """The compiled pipeline to run and where: a package path (relative paths resolve inside
    ``daic.pipelines/compiled``) or an uploaded pipeline's id, on ``host`` or the in-cluster KFP."""

    package: str = Field(default="assess_and_improve.yaml", min_length=1)
    pipeline_id: str | None = Field(default=None, min_length=1)
    version_id: str | None = Field(default=None, min_length=1)
    host: str | None = Field(default=None, pattern=r"^https?://")
    experiment: str = Field(default="daic", min_length=1, max_length=128)
    parameters: dict[str, Any] = Field(default_factory=dict)
    timeout_seconds: int = Field(default=172_800, ge=60)
    # StartRun / CancelRun: attempts, first retry after ``retryBackoffSeconds``, doubling up to
    # ``maxRetryBackoffSeconds``; then the cycle fails (start) or a condition says so (cancel).
    max_attempts: int = Field(default=6, ge=1, le=100)
    retry_backoff_seconds: int = Field(default=30, ge=1)
    max_retry_backoff_seconds: int = Field(default=900, ge=1)
    # The pipeline service unanswered this long with a cycle in flight: condition Degraded=True.
    unreachable_after_seconds: int = Field(default=300, ge=1)

    @field_validator("parameters")
    @classmethod
    def _no_reserved(cls, value: dict[str, Any]) -> dict[str, Any]:
        clash = sorted(set(value) & RESERVED_PARAMETERS)
        if clash:
            raise ValueError(f"pipeline.parameters may not set {', '.join(clash)}: the operator sets "
                             "these itself from the rest of the spec")
        return value

    @model_validator(mode="after")
    def _version_needs_pipeline(self) -> "PipelineSpec":
        if self.version_id and not self.pipeline_id:
            raise ValueError("pipeline.versionId needs pipeline.pipelineId")
        return self


class ResourcesSpec(_Model):
    """What the retraining step asks of Ray (passed to the pipeline, which sizes the RayJob)."""

    ray_workers: int = Field(default=1, ge=1, le=64)  # one unless the model is large (docs/training.md)
    cpus_per_worker: int = Field(default=2, ge=1, le=128)
    gpus_per_worker: int = Field(default=0, ge=0, le=8)
    # None: by worker kind (8Gi on CPU, 16Gi with a GPU: daic.training.rayjob.worker_memory)
    memory_per_worker: str | None = Field(default=None, pattern=QUANTITY)


class TrainPrecision(str, enum.Enum):
    auto = "auto"  # bf16 where the GPU runs it natively, else fp16 + loss scaling; fp32 on CPU
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


class TolerationSpec(_Model):
    key: str | None = None
    operator: str = Field(default="Equal", pattern=r"^(Exists|Equal)$")
    value: str | None = None
    effect: str | None = Field(default=None, pattern=r"^(NoSchedule|PreferNoSchedule|NoExecute)$")


class TrainingSpec(_Model):
    """How the retraining step trains (docs/training.md): batch size per worker (0: chosen for the
    device, 128 on CPU and up to 2048 on a GPU), precision, the long-lived RayCluster the RayJob is
    submitted to (``""``: a fresh cluster per job), and where the training pods may run (node
    selector and tolerations; none given: the usual GPU taints are tolerated by GPU workers)."""

    batch_size: int = Field(default=0, ge=0, le=65536)
    precision: TrainPrecision = TrainPrecision.auto
    ray_cluster: str = Field(default="daic-ray", pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?)?$", max_length=63)
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[TolerationSpec] = Field(default_factory=list)


class PromotionSpec(_Model):
    """How a better challenger replaces the champion: after a person approves (manual) or at once
    (auto); through a canary that takes ``canaryShare`` percent of traffic for ``canarySeconds``."""

    mode: PromotionMode = PromotionMode.manual
    canary_share: int = Field(default=10, ge=0, le=99)
    canary_seconds: int = Field(default=600, ge=0)
    min_improvement: float = Field(default=0.0, ge=0, le=1)
    approval_timeout_seconds: int = Field(default=604_800, ge=1)
    # From the start of the promotion (canary or full) to the deployment serving the result: past
    # it the champion is restored (the canary rolled back) and the cycle fails, PromotionTimedOut.
    timeout_seconds: int = Field(default=3600, ge=60)

    @model_validator(mode="after")
    def _timeout_covers_canary(self) -> "PromotionSpec":
        if self.timeout_seconds <= self.canary_seconds:
            raise ValueError(f"promotion.timeoutSeconds ({self.timeout_seconds}) must exceed "
                             f"promotion.canarySeconds ({self.canary_seconds})")
        return self


class AbstainSpec(_Model):
    """Abstain where even the filter cannot help (issue 21, item 4; docs/operator.md, "Abstaining"):
    with ``enabled``, an input whose P(correct) -- the served model's, behind the filter when one
    serves -- is below ``bound`` is answered with an abstain tag in the Seldon response's
    ``meta.tags`` and queued for labeling (daic.serving.abstain, daic.sampling.abstain)."""

    enabled: bool = False
    bound: float = Field(default=0.5, gt=0, lt=1)


class CycleSpec(_Model):
    deployment: DeploymentRef
    estimate: EstimateSpec
    trigger: TriggerSpec
    labeling: LabelingSpec = Field(default_factory=LabelingSpec)
    sampling: SamplingSpec = Field(default_factory=SamplingSpec)
    pipeline: PipelineSpec = Field(default_factory=PipelineSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    promotion: PromotionSpec = Field(default_factory=PromotionSpec)
    cooldown_seconds: int = Field(default=3600, ge=0)
    max_history: int = Field(default=20, ge=1, le=200)
    max_consecutive_failures: int = Field(default=3, ge=1, le=100)
    suspend: bool = False
    remedy: Remedy = Remedy.both  # operators.reconcile.decide_remedy
    abstain: AbstainSpec = Field(default_factory=AbstainSpec)


class InvalidSpec(ValueError):
    """A spec the operator refuses; the message names every offending field by its wire path."""


def parse_spec(raw: Any) -> CycleSpec:
    """Validate a spec mapping (camelCase, as stored on the resource) into a ``CycleSpec``."""
    if not isinstance(raw, dict):
        raise InvalidSpec(f"spec must be a mapping, got {type(raw).__name__}")
    try:
        return CycleSpec.model_validate(raw)
    except ValidationError as exc:
        raise InvalidSpec(describe_errors(exc)) from exc


def describe_errors(exc: ValidationError) -> str:
    """One line per problem: ``spec.trigger.threshold: Input should be less than or equal to 1 (got 1.5)``."""
    lines = []
    for err in exc.errors():
        path = ".".join(["spec", *(str(p) for p in err["loc"])])
        msg = re.sub(r"^Value error, ", "", err["msg"])
        got = err.get("input")
        suffix = "" if isinstance(got, dict) or err["type"] == "missing" else f" (got {got!r})"
        lines.append(f"{path}: {msg}{suffix}")
    return "; ".join(lines)
