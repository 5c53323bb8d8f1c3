"""deploy: make the challenger the champion.

``seldon`` (a cluster): patch the SeldonDeployment through the Kubernetes API, first a canary (a
second predictor, pinned to the challenger, taking ``canary_share`` percent of the traffic), then
after ``canary_seconds`` the full switch (one predictor on the challenger), each behind the input
filter evaluate chose for it, if any (:func:`serving_filter`, issue 21). The predictor lists
are built by :mod:`daic.operators.seldon`, the same code the operator promotes with, so both
produce one layout. Then the registry's champion pointer moves, so the next retraining starts from
the new champion.

``local`` (one machine): move the registry's champion pointer; the local model server follows that
pointer (it polls it) and the sidecar follows the version in the responses; ``reload_urls``
(comma-separated) are POSTed to as well, for servers that reload on request.

The champion switch is a compare-and-set against the champion evaluate judged the challenger
against (``cycles/<c>/evaluation.json``): if another cycle promoted in between, the step fails
with ``ChampionConflict`` instead of replacing a model nobody compared with the challenger. A retry
of a deploy that already moved the pointer (the challenger is the champion) leaves it alone
instead of recording a second promotion.

Writes ``cycles/<c>/deploy.json``.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import requests
from pydantic import BaseModel, ConfigDict, StrictBool

from daic.components import cycle_store
from daic.components.deploy.kube import API_TIMEOUT, RETRY_FOR_S, custom_objects_api, through_faults
from daic.components.train import registry_access
from daic.storage import ObjectStore, open_store
from daic.storage.parsed import read_object

log = logging.getLogger(__name__)

TARGETS = ("local", "seldon")
_SA_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


@dataclass(frozen=True)
class DeployConfig:
    target: str = "local"
    model_name: str = "mnist"
    deployment: str = "mnist"
    namespace: str = ""
    predictor: str = "default"
    canary_share: int = 10
    canary_seconds: int = 0
    reload_urls: str = ""

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise ValueError(f"deploy target must be one of {', '.join(TARGETS)}, got {self.target!r}")
        if not 0 <= self.canary_share <= 99:
            raise ValueError(f"canary_share must be in [0, 99] percent, got {self.canary_share!r}")
        if self.canary_seconds < 0:
            raise ValueError(f"canary_seconds must be >= 0, got {self.canary_seconds!r}")
        for url in self.urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"reload_urls must be http(s) URLs, got {url!r}")

    @property
    def urls(self) -> list[str]:
        return [u.strip() for u in self.reload_urls.split(",") if u.strip()]


@dataclass(frozen=True)
class DeployResult:
    champion_version: str
    previous_version: str | None
    steps: list[dict[str, Any]] = field(default_factory=list)


def promote_local(store: ObjectStore, version: str, config: DeployConfig,
                  expected_current: str | None = None) -> list[dict[str, Any]]:
    """Move the champion pointer (compare-and-set when ``expected_current`` is given), then ask
    the ``reload_urls`` to reload."""
    steps: list[dict[str, Any]] = [{"step": "champion", "version": version}]
    if registry_access.current_champion(store, config.model_name) == version:
        # A retry of a deploy that already moved the pointer: promoting again would record a
        # second promotion (version over itself), or fail the compare-and-set.
        steps[0]["unchanged"] = True
    else:
        registry_access.set_champion(store, config.model_name, version, expected_current)
    for url in config.urls:
        try:
            # Only the status matters: stream=True and close, so an endless or dripped body cannot hold the step.
            response = requests.post(url, json={"model": config.model_name, "version": version}, timeout=10,
                                     stream=True)
            response.close()
            steps.append({"step": "reload", "url": url, "status": response.status_code})
            if response.status_code >= 400:
                log.warning("reload request to %s answered %d (the server still follows the champion pointer)",
                            url, response.status_code)
        except requests.RequestException as exc:
            steps.append({"step": "reload", "url": url, "error": str(exc)})
            log.warning("reload request to %s failed: %s (the server still follows the champion pointer)", url, exc)
    return steps


class _Decision(BaseModel):
    model_config = ConfigDict(extra="ignore")
    promote: StrictBool  # "no", "false" or 1 is not a decision (a lax bool read 1 as a promotion)
    reason: str = "no reason given"


class Evaluation(BaseModel):
    """``cycles/<c>/evaluation.json``, the part deploy acts on: a record missing the decision or the
    versions, or with a string for ``promote`` (which was truthy), is a CorruptObject naming the
    key, never a promotion."""

    model_config = ConfigDict(extra="ignore")
    challenger_version: str
    champion_version: str
    decision: _Decision


def evaluated_champion(store: ObjectStore, cycle: str, version: str) -> str | None:
    """The champion evaluate compared ``version`` with in this cycle; None when the cycle has no
    evaluation (deploy run on its own: the pointer then moves unconditionally)."""
    key = cycle_store.key(cycle, "evaluation.json")
    if not store.exists(key):
        log.warning("cycle %s has no evaluation.json: promoting %s without checking the champion", cycle, version)
        return None
    evaluation = read_object(store, key, Evaluation)
    if evaluation.challenger_version != version:
        raise ValueError(f"cycle {cycle!r} evaluated {evaluation.challenger_version!r}, not {version!r}: "
                         "refusing to deploy a version that was not evaluated")
    if not evaluation.decision.promote:
        raise ValueError(f"cycle {cycle!r}: evaluate did not find {version!r} better ({evaluation.decision.reason})")
    return evaluation.champion_version


def cluster_namespace(namespace: str) -> str:
    if namespace:
        return namespace
    return _SA_NAMESPACE.read_text().strip() if _SA_NAMESPACE.exists() else "default"


@dataclass(frozen=True)
class ServingFilter:
    """The input filter (issue 21) that goes in front of the promoted model: ``version`` None for none.

    evaluate chooses what serves (``serve`` in ``evaluation.json``, operators.reconcile.choose_serving):
    the challenger alone, or the challenger behind a filter version registered for it
    (``challenger_filter_version``). The champion's own filter was adapted to the old champion, so a
    promotion never keeps it; this is what the operator does too (docs/operator.md)."""

    version: str | None = None
    gate: str = "gated"


def serving_filter(store: ObjectStore, cycle: str) -> ServingFilter:
    """What ``cycles/<c>/evaluation.json`` says goes in front of the promoted challenger: its
    ``serving`` object, as evaluate writes it (``serve``, ``challenger_filter_version``, ``gate``)."""
    key = cycle_store.key(cycle, "evaluation.json")
    if not store.exists(key):
        return ServingFilter()
    serving = read_object(store, key, _Evaluation).serving
    if serving is not None and serving.serve == "challenger+filter" and serving.challenger_filter_version:
        return ServingFilter(serving.challenger_filter_version, serving.gate or "gated")
    return ServingFilter()


class _Serving(BaseModel):
    """The part of evaluate's ``serving`` object that :func:`serving_filter` reads."""

    model_config = ConfigDict(extra="ignore")
    serve: str | None = None
    challenger_filter_version: str | None = None
    gate: str | None = None


class _Evaluation(BaseModel):
    """``evaluation.json`` as far as the filter goes: ``serving`` is None without a filter record
    (a cycle that fitted none, or one from before issue 21)."""

    model_config = ConfigDict(extra="ignore")
    serving: _Serving | None = None


def promote_seldon(api, version: str, config: DeployConfig,
                   sleep: Callable[[float], None] = time.sleep,
                   with_filter: ServingFilter = ServingFilter(),
                   retry_for_s: float = RETRY_FOR_S,
                   clock: Callable[[], float] | None = None) -> tuple[str | None, list[dict[str, Any]]]:
    """Canary (when canary_share > 0), wait, then full; returns (previous version, steps).

    Every API call is bounded (``kube.API_TIMEOUT``); a read or patch that meets a transient fault
    (5xx, 429, a connection refused, reset or timed out; for a patch also a 409, another writer
    between its read and its write) is tried again for up to ``retry_for_s``, so one bad moment of
    the API server after a long canary does not fail the step. 401/403/404 fail at once.

    During the canary the main predictor keeps the filter it has (its TRANSFORMER node), and the
    canary serves the challenger behind ``with_filter``; the full switch serves the challenger
    behind ``with_filter`` alone (no filter when its version is None)."""
    from daic.operators.actions import PatchDeployment
    from daic.operators.seldon import GROUP, PLURAL, VERSION, SeldonTarget, main_filter, read_split

    namespace = cluster_namespace(config.namespace)
    target = SeldonTarget(api, namespace, config.deployment, config.predictor, timeout=API_TIMEOUT)
    where = f"SeldonDeployment {namespace}/{config.deployment}"

    def patient(call, what, also=()):  # transient API faults cost a retry, not the step (a canary waited)
        return through_faults(call, f"{what} {where}", retry_for_s, also, clock=clock, sleep=sleep)

    sdep = patient(lambda: api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, config.deployment,
                                                            _request_timeout=API_TIMEOUT), "reading")
    previous, _canary, _share = read_split(sdep, config.predictor)
    kept_version, kept_gate = main_filter(sdep, config.predictor)
    steps: list[dict[str, Any]] = []
    if config.canary_share > 0 and previous and previous != version:
        canary = PatchDeployment(name=config.deployment, namespace=namespace, predictor=config.predictor,
                                 champion_version=previous, canary_version=version,
                                 canary_share=config.canary_share,
                                 filter_version=kept_version, filter_gate=kept_gate or "gated",
                                 canary_filter_version=with_filter.version,
                                 canary_filter_gate=with_filter.gate)
        patient(lambda: target.apply(canary), "patching (canary)", (409,))
        steps.append({"step": "canary", "champion": previous, "canary": version, "share": config.canary_share,
                      "canary_filter": with_filter.version})
        if config.canary_seconds:
            sleep(config.canary_seconds)
    full = PatchDeployment(name=config.deployment, namespace=namespace, predictor=config.predictor,
                           champion_version=version, filter_version=with_filter.version, filter_gate=with_filter.gate)
    patient(lambda: target.apply(full), "patching (promote)", (409,))
    steps.append({"step": "promote", "champion": version, "filter": with_filter.version})
    return previous, steps


def switch_local_filter(store: ObjectStore, config: DeployConfig, cycle: str, with_filter: ServingFilter) -> dict:
    """On one machine the local gateway's TRANSFORMER follows the filter service record: point it at
    ``with_filter`` (or at none), as the operator's local deployment does when it promotes."""
    from daic.filters.service import switch_service

    reason = (f"cycle {cycle}: the promoted challenger is served behind its own filter" if with_filter.version
              else f"cycle {cycle}: promoted without a filter (the old one was adapted to the old champion)")
    if not switch_service(store, config.model_name, with_filter.version, with_filter.gate, reason, cycle):
        return {"step": "filter", "version": with_filter.version, "unchanged": True}
    return {"step": "filter", "version": with_filter.version}


def calibration_labels(store: ObjectStore, cycle: str, version: str, config: DeployConfig) -> int:
    """The cycle's labelled held-out inputs, run through the new champion, stored for the sidecar to
    calibrate its first window with (:mod:`daic.models.first_window`); 0 when the cycle has none."""
    from daic.models import first_window
    from daic.models.registry import ModelRegistry

    if not store.exists(cycle_store.key(cycle, "holdout.npz")):
        return 0
    held = cycle_store.read_holdout(store, cycle)
    if not len(held["labels"]):
        return 0
    model, shadow = ModelRegistry(store, config.model_name).load_networks(version)
    return first_window.write(store, config.model_name, version, model, shadow, held["images"], held["labels"],
                              held["ids"])


def run(store: ObjectStore | str, cycle: str, version: str, config: DeployConfig, api=None,
        sleep: Callable[[float], None] = time.sleep) -> DeployResult:
    store = open_store(store or None) if isinstance(store, str) else store
    if not version:
        raise ValueError("challenger_version is empty: nothing to deploy")
    judged_against = evaluated_champion(store, cycle, version)
    # Before the champion moves, so the sidecar finds them when it fits the new version's assessor.
    n_first_window = calibration_labels(store, cycle, version, config)
    with_filter = serving_filter(store, cycle)
    done = registry_access.current_champion(store, config.model_name) == version  # a retry after promoting
    if config.target == "seldon":
        # Check before touching the cluster; the pointer's own compare-and-set closes the race after.
        if not done:
            registry_access.check_champion(store, config.model_name, judged_against)
        previous, steps = promote_seldon(api or custom_objects_api(), version, config, sleep, with_filter)
        if done or previous == version:  # a retry: the deployment already serves it; name what it replaced
            previous = judged_against or registry_access.previous_champion(store, config.model_name)
        if not done:
            registry_access.set_champion(store, config.model_name, version, judged_against)
        steps.append({"step": "champion", "version": version, **({"unchanged": True} if done else {})})
    else:
        previous = judged_against or (registry_access.previous_champion(store, config.model_name) if done
                                      else registry_access.current_champion(store, config.model_name))
        steps = promote_local(store, version, config, judged_against)
        steps.append(switch_local_filter(store, config, cycle, with_filter))
    steps.insert(0, {"step": "first-window labels", "count": n_first_window})
    result = DeployResult(champion_version=version, previous_version=previous, steps=steps)
    store.put_json(cycle_store.key(cycle, "deploy.json"),
                   {"cycle": cycle, "config": asdict(config), **asdict(result), "created": time.time()})
    log.info("cycle %s: %s is the champion of %s (was %s)", cycle, version, config.model_name, previous)
    return result
