"""The kopf operator end to end, in-process (``kopf.testing.KopfRunner``), against a faked API.

No Kubernetes API server or Kubeflow Pipelines backend can run on the test machines. kopf, the
``kubernetes`` client and ``kfp.Client`` are real; what they talk to is tests/fakes/kube.py, a
small aiohttp server that speaks the needed part of the Kubernetes API (discovery, list/watch
streams, merge and JSON patches, the status subresource, Events, finalizers, SeldonDeployments)
and of KFP's v2beta1 REST API (experiments, runs, terminate). Writes to AssessmentCycles are
validated against the real CRD schema, stricter than Kubernetes (unknown fields are refused,
not pruned). The sidecar is tests/fakes/sidecar.py serving the estimate contract over HTTP. The
test plays KFP's part: it moves runs through their states and writes the run result to the store.
"""
from __future__ import annotations

import contextlib
import socket

import pytest
import requests
import yaml
from kopf.testing import KopfRunner

from daic.operators.handlers import OperatorConfig, build_registry
from daic.operators.reconcile import record_key
from daic.serving.manifest import DeploymentParams, render_seldon_deployment
from daic.storage import open_store
from fakes.compiled_pipeline import compile_to
from fakes.crd_schema import REPO, crd_schema
from fakes.kube import FakeKube
from fakes.sidecar import FakeSidecar, drifted_stream
from fakes.waiting import RESULT, wait_for




class Cluster:
    def __init__(self, kube: FakeKube, sidecar: FakeSidecar, store_url: str, package: str):
        self.kube, self.sidecar, self.store_url, self.package = kube, sidecar, store_url, package
        self.store = open_store(store_url)

    def cycle(self, name: str = "demo", **spec_patch) -> dict:
        spec = {"deployment": {"name": "mnist"}, "estimate": {"url": self.sidecar.url},
                "trigger": {"threshold": 0.9, "minWindow": 100},
                "pipeline": {"host": self.kube.url, "package": self.package, "experiment": "daic-test"},
                "promotion": {"mode": "auto", "canaryShare": 20, "canarySeconds": 0}}
        for key, value in spec_patch.items():
            spec[key] = {**spec.get(key, {}), **value} if isinstance(value, dict) else value
        return self.kube.create({"apiVersion": "daic.dev/v1alpha1", "kind": "AssessmentCycle",
                                 "metadata": {"name": name, "namespace": "default"}, "spec": spec})

    def status(self, name: str = "demo") -> dict:
        obj = self.kube.get("assessmentcycles", name)
        return (obj or {}).get("status") or {}

    def phase_is(self, phase: str, name: str = "demo"):
        return lambda: self.status(name).get("phase") == phase and self.status(name)

    @contextlib.contextmanager
    def operator(self, liveness_port: int | None = None):
        registry, _ = build_registry(OperatorConfig(interval=0.2, store_url=self.store_url))
        args = ["run", "--standalone", "--namespace", "default"]
        if liveness_port:
            args.append(f"--liveness=http://127.0.0.1:{liveness_port}/healthz")
        with KopfRunner(args, registry=registry, timeout=30) as runner:
            yield runner
        assert runner.exit_code == 0, runner.output[-3000:]

    def only_run(self) -> dict:
        runs = list(self.kube.runs.values())
        return runs[0] if len(runs) == 1 else None


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    return compile_to(tmp_path_factory.mktemp("pkg") / "assess-and-improve.yaml")


@pytest.fixture
def cluster(tmp_path, monkeypatch, package):
    with FakeKube(crd_schema()) as kube, FakeSidecar(drifted_stream(2, 10_000, model_version="v0001")) as sidecar:
        monkeypatch.setenv("KUBECONFIG", str(kube.write_kubeconfig(tmp_path / "kubeconfig")))
        kube.create(render_seldon_deployment(DeploymentParams(name="mnist", namespace="default",
                                                              model_version="v0001")))
        yield Cluster(kube, sidecar, f"file://{tmp_path / 'store'}", package)
        assert kube.rejected == [], "the operator or kopf wrote something the CRD schema refuses"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rbac_rules() -> set[tuple[str, str, str]]:
    role = yaml.safe_load((REPO / "manifests" / "operator" / "role.yaml").read_text())
    return {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
            for v in rule["verbs"]}


def _used(requests_seen) -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) of every Kubernetes API request (discovery and KFP excluded)."""
    used = set()
    for method, path, query in requests_seen:
        parts = path.strip("/").split("/")
        if path.startswith("/apis/v2beta1/") or path in ("/api", "/apis", "/version"):
            continue
        group, rest = ("", parts[2:]) if parts[:2] == ["api", "v1"] else (parts[1], parts[3:])
        if not rest:
            continue  # a group/version discovery document
        if rest[0] == "namespaces" and len(rest) > 2:
            rest = rest[2:]
        resource = rest[0] + (f"/{rest[2]}" if len(rest) > 2 else "")
        if method == "GET":
            verb = "watch" if "watch=true" in query else ("get" if len(rest) > 1 else "list")
        else:
            verb = {"PATCH": "patch", "POST": "create", "DELETE": "delete", "PUT": "update"}[method]
        used.add((group, resource, verb))
    return used


def test_a_drop_runs_one_cycle_to_promotion_with_events_conditions_and_least_privilege(cluster):
    port = _free_port()
    cycle = cluster.cycle()
    name = f"demo-c1-{cycle['metadata']['uid'].replace('-', '')[:8]}"
    with cluster.operator(liveness_port=port):
        run = wait_for(cluster.only_run, what="one KFP run")
        assert run["display_name"] == name
        params = run["runtime_config"]["parameters"]
        assert params["cycle_id"] == name and params["champion_version"] == "v0001" and params["threshold"] == 0.9
        wait_for(cluster.phase_is("Assessing"), what="Assessing")
        cluster.kube.set_run(run["run_id"], "RUNNING", tasks=[
            {"display_name": "train", "state": "RUNNING", "create_time": "2025-01-01T00:00:05Z"}])
        wait_for(cluster.phase_is("Improving"), what="Improving")
        cluster.store.put_json(f"cycles/{name}/result.json", RESULT)
        cluster.kube.set_run(run["run_id"], "SUCCEEDED")
        status = wait_for(cluster.phase_is("Cooldown"), what="Cooldown")
        wait_for(lambda: not cluster.status().get("outbox"), what="the record written")
        probe = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).json()
        assert probe["reconcile"]["passes"] > 0
    assert len(cluster.kube.runs) == 1
    (entry,) = status["history"]
    assert (entry["runName"], entry["decision"], entry["challengerVersion"]) == (name, "promoted", "v0002")
    assert entry["offlineLower"] == 0.76 and entry["labelsUsed"] == 150
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions == {"Ready": "True", "SpecValid": "True", "EstimateAvailable": "True", "CycleInFlight": "False",
                          "Degraded": "False"}
    sdep = cluster.kube.get("seldondeployments", "mnist")
    (predictor,) = sdep["spec"]["predictors"]
    assert {p["name"]: p["value"] for p in predictor["graph"]["parameters"]}["model_version"] == "v0002"
    seldon_patches = [r for r in cluster.kube.requests if r[0] == "PATCH" and "seldondeployments" in r[1]]
    assert len(seldon_patches) >= 2, "a canary patch, then the promotion"
    reasons = [e["reason"] for e in cluster.kube.events()]
    for reason in ("CycleStarted", "StageChanged", "PromotionStarted", "CanaryServing", "CanaryPassed",
                   "CyclePromoted"):
        assert reason in reasons, reasons
    assert reasons.count("CycleStarted") == 1
    record = cluster.store.get_json(record_key(name))
    assert record["state"] == "finished" and record["summary"]["decision"] == "promoted"
    assert _used(cluster.kube.requests) == _rbac_rules(), "the Role must grant exactly what is used"


def test_a_restarted_operator_resumes_the_same_cycle_without_a_second_run(cluster):
    cycle = cluster.cycle(promotion={"canaryShare": 0})
    with cluster.operator():
        run = wait_for(cluster.only_run, what="one KFP run")
        wait_for(cluster.phase_is("Assessing"), what="Assessing")
    # The operator is gone; the run finishes meanwhile.
    name = run["display_name"]
    cluster.store.put_json(f"cycles/{name}/result.json", RESULT)
    cluster.kube.set_run(run["run_id"], "SUCCEEDED")
    with cluster.operator():
        status = wait_for(cluster.phase_is("Cooldown"), what="Cooldown after the restart")
    assert list(cluster.kube.runs) == [run["run_id"]]
    assert [h["runName"] for h in status["history"]] == [name] and status["cycleCount"] == 1
    assert cycle["metadata"]["uid"].replace("-", "")[:8] in name


def test_deleting_a_cycle_in_flight_cancels_its_run_through_the_finalizer(cluster):
    cluster.cycle()
    with cluster.operator():
        run = wait_for(cluster.only_run, what="one KFP run")
        wait_for(cluster.phase_is("Assessing"))
        assert "daic.dev/cancel-run" in cluster.kube.get("assessmentcycles", "demo")["metadata"]["finalizers"]
        cluster.kube.delete("assessmentcycles", "demo")
        wait_for(lambda: cluster.kube.get("assessmentcycles", "demo") is None, what="deletion to finish")
    assert cluster.kube.runs[run["run_id"]]["state"] == "CANCELED"


def test_manual_promotion_waits_for_the_approval_annotation(cluster):
    cluster.cycle(promotion={"mode": "manual", "canaryShare": 0})
    with cluster.operator():
        run = wait_for(cluster.only_run)
        cluster.store.put_json(f"cycles/{run['display_name']}/result.json", RESULT)
        cluster.kube.set_run(run["run_id"], "SUCCEEDED")
        waiting = wait_for(cluster.phase_is("AwaitingApproval"), what="AwaitingApproval")
        assert "daic.dev/approve=1" in waiting["message"]
        assert cluster.kube.get("seldondeployments", "mnist")["spec"]["predictors"][0]["graph"]["parameters"][1][
            "value"] == "v0001", "nothing is promoted before the approval"
        cluster.kube.patch("assessmentcycles", "demo", {"metadata": {"annotations": {"daic.dev/approve": "1"}}})
        status = wait_for(cluster.phase_is("Cooldown"), what="Cooldown after approval")
    assert status["history"][0]["decision"] == "promoted"


def test_a_spec_the_crd_accepts_but_the_models_refuse_is_reported(cluster):
    cluster.cycle(pipeline={"parameters": {"budget": 5}})
    with cluster.operator():
        status = wait_for(cluster.phase_is("Degraded"), what="Degraded")
        wait_for(lambda: "InvalidSpec" in [e["reason"] for e in cluster.kube.events()], what="the Warning event")
    assert status["reason"] == "InvalidSpec"
    assert "spec.pipeline.parameters:" in status["message"] and "may not set budget" in status["message"]
    assert {c["type"]: c["status"] for c in status["conditions"]}["SpecValid"] == "False"
    event = next(e for e in cluster.kube.events() if e["reason"] == "InvalidSpec")
    assert event["type"] == "Warning" and event["involvedObject"]["name"] == "demo"
    assert not cluster.kube.runs


def test_operator_config_from_environment(monkeypatch):
    monkeypatch.setenv("DAIC_OPERATOR_INTERVAL", "7.5")
    monkeypatch.setenv("DAIC_OPERATOR_CANCEL_ON_DELETE", "false")
    cfg = OperatorConfig.from_env()
    assert (cfg.interval, cfg.cancel_on_delete, cfg.peering) == (7.5, False, False)
    monkeypatch.setenv("DAIC_OPERATOR_INTERVAL", "often")
    with pytest.raises(ValueError, match="DAIC_OPERATOR_INTERVAL='often'"):
        OperatorConfig.from_env()
    monkeypatch.setenv("DAIC_OPERATOR_INTERVAL", "5")
    monkeypatch.setenv("DAIC_OPERATOR_PEERING", "sometimes")
    with pytest.raises(ValueError, match="DAIC_OPERATOR_PEERING='sometimes'"):
        OperatorConfig.from_env()
