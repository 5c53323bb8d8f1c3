"""deploy alone. The cluster path runs the real ``kubernetes`` client against the test control plane
(a real kube-apiserver and etcd, the session fixture ``kube``; Seldon's CRD is its stand-in there,
see tests/cluster), with the SeldonDeployment that ``daic.serving.manifest`` renders, one namespace
per test; the local path moves the real registry's champion pointer, as a compare-and-set against the
champion evaluate judged the challenger against."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from daic.components.deploy.logic import DeployConfig, promote_seldon
from daic.operators.seldon import GROUP, PLURAL, VERSION, read_split
from daic.serving.manifest import DeploymentParams, render_seldon_deployment


class Cluster:
    """A namespace on the real API server holding the rendered SeldonDeployment ``mnist`` at v0001."""

    def __init__(self, kube):
        self.namespace = kube.namespace("deploy")
        self._custom = kube.custom()
        sdep = render_seldon_deployment(DeploymentParams(name="mnist", namespace=self.namespace,
                                                         model_version="v0001"))
        self._custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, sdep)
        self.created = self.sdep()["metadata"]

    def api(self):
        return self._custom

    def sdep(self, name: str = "mnist") -> dict:
        return self._custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)

    def changes(self) -> int:
        """How many times the object's spec changed since it was created (the server's generation)."""
        return self.sdep()["metadata"]["generation"] - self.created["generation"]


@pytest.fixture
def cluster(kube):
    return Cluster(kube)


def _split(cluster):
    return read_split(cluster.sdep(), "default")


def test_canary_then_full_promotion(cluster):
    seen_during_wait = []
    config = DeployConfig(target="seldon", namespace=cluster.namespace, canary_share=20, canary_seconds=300)
    previous, steps = promote_seldon(cluster.api(), "v0002", config,
                                     sleep=lambda s: seen_during_wait.append((s, _split(cluster))))
    assert previous == "v0001"
    assert seen_during_wait == [(300, ("v0001", "v0002", 20))]  # the canary served while we waited
    assert _split(cluster) == ("v0002", None, 0)
    assert [s["step"] for s in steps] == ["canary", "promote"]
    assert cluster.changes() == 2
    predictors = cluster.sdep()["spec"]["predictors"]
    assert [p["name"] for p in predictors] == ["default"] and predictors[0]["traffic"] == 100


def test_no_canary_when_share_is_zero(cluster):
    previous, steps = promote_seldon(cluster.api(), "v0002", DeployConfig(target="seldon", namespace=cluster.namespace,
                                                                          canary_share=0), sleep=pytest.fail)
    assert [s["step"] for s in steps] == ["promote"] and _split(cluster) == ("v0002", None, 0)


def test_missing_deployment_is_an_api_error(cluster):
    from kubernetes.client.exceptions import ApiException

    with pytest.raises(ApiException) as info:
        promote_seldon(cluster.api(), "v0002", DeployConfig(target="seldon", namespace=cluster.namespace, deployment="other"))
    assert info.value.status == 404


@pytest.mark.parametrize("field,value,match", [
    ("target", "aws", "deploy target must be one of local, seldon"),
    ("canary_share", 100, r"canary_share must be in \[0, 99\]"),
    ("canary_seconds", -1, "canary_seconds must be >= 0"),
    ("reload_urls", "localhost:9000/reload", "reload_urls must be http"),
])
def test_config_rejects_bad_values(field, value, match):
    with pytest.raises(ValueError, match=match):
        DeployConfig(**{field: value})


class _Reloads(BaseHTTPRequestHandler):
    got: list = []

    def do_POST(self):  # noqa: N802
        _Reloads.got.append((self.path, json.loads(self.rfile.read(int(self.headers["Content-Length"])))))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def registry_store(tmp_path):
    """A registry with v0001 (the champion) and two children of it."""
    from daic.components.testing.registry import register_untrained
    from daic.storage import open_store

    store = open_store(f"file://{tmp_path / 'store'}")
    register_untrained(store, [None, "v0001", "v0001"])
    return store


def _evaluated(store, cycle, challenger, champion, promote=True):
    store.put_json(f"cycles/{cycle}/evaluation.json", {
        "challenger_version": challenger, "champion_version": champion,
        "decision": {"promote": promote, "reason": "test"}})


def test_local_promotion_moves_the_pointer_and_asks_servers_to_reload(registry_store):
    from daic.components.deploy.logic import run
    from daic.models.registry import ModelRegistry

    store = registry_store
    _evaluated(store, "c1", "v0002", "v0001")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Reloads)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        _Reloads.got = []
        url = f"http://127.0.0.1:{server.server_port}/reload"
        result = run(store, "c1", "v0002", DeployConfig(reload_urls=url))
    finally:
        server.shutdown()
        server.server_close()
    pointer = ModelRegistry(store, "mnist").champion_pointer()
    assert (pointer.version, pointer.previous, pointer.generation) == ("v0002", "v0001", 2)
    assert _Reloads.got == [("/reload", {"model": "mnist", "version": "v0002"})]
    (reload,) = [step for step in result.steps if step["step"] == "reload"]
    assert result.previous_version == "v0001" and reload["status"] == 204
    assert store.get_json("cycles/c1/deploy.json")["champion_version"] == "v0002"


def test_promotion_refuses_when_the_champion_changed_since_evaluation(registry_store):
    """Another cycle promoted v0003 after this cycle judged v0002 against v0001: deploying v0002
    now would replace a model it was never compared with."""
    from daic.components.deploy.logic import run
    from daic.models.registry import ChampionConflict, champion, set_champion

    store = registry_store
    _evaluated(store, "c1", "v0002", "v0001")
    set_champion(store, "mnist", "v0003")
    with pytest.raises(ChampionConflict, match="expected champion 'v0001' but it is 'v0003'"):
        run(store, "c1", "v0002", DeployConfig())
    assert champion(store, "mnist") == "v0003"
    assert not store.exists("cycles/c1/deploy.json")


def test_seldon_promotion_checks_the_champion_before_touching_the_cluster(registry_store, cluster):
    from daic.components.deploy.logic import run
    from daic.models.registry import ChampionConflict, set_champion

    store = registry_store
    _evaluated(store, "c1", "v0002", "v0001")
    set_champion(store, "mnist", "v0003")
    with pytest.raises(ChampionConflict, match="evaluated against"):
        run(store, "c1", "v0002", DeployConfig(target="seldon", namespace=cluster.namespace), api=cluster.api())
    assert cluster.sdep()["metadata"]["resourceVersion"] == cluster.created["resourceVersion"]


def test_seldon_promotion_moves_the_registry_pointer_too(registry_store, cluster):
    from daic.components.deploy.logic import run
    from daic.models.registry import champion

    store = registry_store
    _evaluated(store, "c1", "v0002", "v0001")
    result = run(store, "c1", "v0002", DeployConfig(target="seldon", namespace=cluster.namespace, canary_share=0),
                 api=cluster.api())
    assert _split(cluster) == ("v0002", None, 0) and champion(store, "mnist") == "v0002"
    assert result.previous_version == "v0001"
    # a retry of the step after it promoted (KFP retries): no second change, and it still names the
    # version it replaced, not the challenger itself
    changes = cluster.changes()
    again = run(store, "c1", "v0002", DeployConfig(target="seldon", namespace=cluster.namespace, canary_share=0),
                api=cluster.api())
    assert again.previous_version == "v0001" and cluster.changes() == changes


@pytest.mark.parametrize("evaluated,promote,match", [
    ("v0003", True, "evaluated 'v0003', not 'v0002'"),
    ("v0002", False, "evaluate did not find 'v0002' better"),
])
def test_deploy_refuses_what_evaluate_did_not_approve(registry_store, evaluated, promote, match):
    from daic.components.deploy.logic import run
    from daic.models.registry import champion

    _evaluated(registry_store, "c1", evaluated, "v0001", promote)
    with pytest.raises(ValueError, match=match):
        run(registry_store, "c1", "v0002", DeployConfig())
    assert champion(registry_store, "mnist") == "v0001"


# --- the input filter evaluate chose (issue 21) when the pipeline promotes ------------------------

def _filters(cluster):
    from daic.operators.seldon import read_filters

    return read_filters(cluster.sdep(), "default")


def _with_champion_filter(cluster, version="f-old"):
    """The SeldonDeployment as the operator leaves it with a filter in front of the champion."""
    from daic.serving.manifest import set_filter

    sdep = cluster.sdep()
    sdep["spec"]["predictors"][0] = set_filter(sdep["spec"]["predictors"][0], version, "gated")
    cluster.api().replace_namespaced_custom_object(GROUP, VERSION, cluster.namespace, PLURAL, "mnist", sdep)
    assert _filters(cluster) == (version, None)


def test_the_canary_keeps_the_champions_filter_and_the_challenger_goes_in_behind_its_own(cluster):
    from daic.components.deploy.logic import ServingFilter

    _with_champion_filter(cluster)
    during = []
    config = DeployConfig(target="seldon", namespace=cluster.namespace, canary_share=20, canary_seconds=60)
    promote_seldon(cluster.api(), "v0002", config, sleep=lambda s: during.append((_split(cluster), _filters(cluster))),
                   with_filter=ServingFilter("f-new", "always"))
    assert during == [(("v0001", "v0002", 20), ("f-old", "f-new"))]
    assert _split(cluster) == ("v0002", None, 0) and _filters(cluster) == ("f-new", None)


def test_a_challenger_chosen_alone_is_promoted_without_the_old_filter(cluster):
    _with_champion_filter(cluster)
    promote_seldon(cluster.api(), "v0002", DeployConfig(target="seldon", namespace=cluster.namespace, canary_share=0),
                   sleep=pytest.fail)
    assert _split(cluster) == ("v0002", None, 0) and _filters(cluster) == (None, None)


@pytest.mark.parametrize("serving,expected", [
    ({"serve": "challenger+filter", "challenger_filter_version": "v0007", "gate": "always"}, ("v0007", "always")),
    ({"serve": "challenger+filter", "challenger_filter_version": "v0007", "gate": None}, ("v0007", "gated")),
    ({"serve": "challenger", "filter_version": "v0005", "gate": "gated"}, (None, "gated")),
    ({"serve": "champion+filter", "filter_version": "v0005", "gate": "gated"}, (None, "gated")),
    ({"serve": "challenger+filter", "gate": "gated"}, (None, "gated")),  # no version registered: nothing to put in
    (None, (None, "gated")),  # evaluate without a filter record (serving: null)
    ("absent", (None, "gated")),  # an evaluation from before issue 21
])
def test_serving_filter_reads_evaluates_choice(registry_store, serving, expected):
    """``serving`` in evaluation.json as components/evaluate/logic.py writes it (nested, not at the
    top level: the top-level shape is result.json's)."""
    from daic.components.deploy.logic import serving_filter

    record = {"cycle": "c1", "challenger_version": "v0002", "decision": {"promote": True}}
    if serving != "absent":
        record["serving"] = serving
    registry_store.put_json("cycles/c1/evaluation.json", record)
    got = serving_filter(registry_store, "c1")
    assert (got.version, got.gate) == expected


def test_serving_filter_ignores_result_json_shape_at_the_top_level(registry_store):
    """Top-level ``serve`` fields are result.json's; evaluation.json's choice is under ``serving``."""
    from daic.components.deploy.logic import serving_filter

    registry_store.put_json("cycles/c1/evaluation.json", {
        "serve": "challenger+filter", "challenger_filter_version": "v0007",
        "serving": {"serve": "challenger", "challenger_filter_version": None, "gate": "gated"}})
    assert serving_filter(registry_store, "c1").version is None


def test_local_promotion_points_the_gateways_filter_at_the_chosen_one_and_takes_it_out_after(registry_store):
    """On one machine the local gateway's TRANSFORMER follows the filter service record."""
    from daic.components.deploy.logic import run
    from daic.filters.network import FilterNet
    from daic.filters.registry import FilterRegistry, read_service
    from daic.models.card import DataLineage

    store = registry_store
    card = FilterRegistry(store, "mnist").register_filter(net=FilterNet(), data=DataLineage(dataset="mnist", base_count=0),
                                                          wraps_version="v0002")
    store.put_json("cycles/c1/evaluation.json", {
        "challenger_version": "v0002", "champion_version": "v0001", "decision": {"promote": True, "reason": "test"},
        "serving": {"serve": "challenger+filter", "challenger_filter_version": card.version, "gate": "gated"}})
    run(store, "c1", "v0002", DeployConfig())
    service = read_service(store, "mnist")
    assert (service.version, service.gate, service.cycle) == (card.version, "gated", "c1")
    # the next cycle promotes v0003 alone: the filter (adapted to v0002) comes out
    _evaluated(store, "c2", "v0003", "v0002")
    run(store, "c2", "v0003", DeployConfig())
    assert read_service(store, "mnist").version is None
    assert store.get_json("cycles/c2/deploy.json")["steps"][-1] == {"step": "filter", "version": None}
