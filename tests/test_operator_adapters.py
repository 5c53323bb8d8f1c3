"""The operator's adapters with their real clients: the sidecar and Prometheus estimate readers
(requests, over HTTP), the local runner (real worker processes), the kfp.Client runner and the
SeldonDeployment switch (the kubernetes client against a real kube-apiserver, tests/cluster), the kfp
client against tests/fakes/kfp.py (a fake of KFP's REST API: no KFP backend can run here), the local
champion switch.
"""
from __future__ import annotations

import json
import os
import signal
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from daic.deploy.operator_rules import check_seldon_deployment
from daic.operators.actions import PatchDeployment
from daic.operators.estimates import PrometheusEstimate, SidecarEstimate, parse_estimate
from daic.operators.kube import status_patch
from daic.operators.local_deployment import LocalDeployment
from daic.operators.observations import (
    EstimateError,
    EstimateReading,
    RunPhase,
    approval_from_annotations,
)
from daic.operators.runners import PipelineRunner
from daic.operators.runners.kfp_runner import KfpRunner, resolve_package
from daic.operators.runners.local import LocalRunner
from daic.operators.seldon import SeldonLayoutError, SeldonTarget, desired_predictors, read_split
from daic.operators.status import CycleStatus, CurrentCycle, Phase
from daic.serving.manifest import DeploymentParams, render_seldon_deployment
from daic.storage import open_store
from fakes.kfp import FakeKfp
from daic.components.testing.fake_kube import merge_patch
from fakes.sidecar import FakeSidecar
from fakes.waiting import wait_for

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)
FAKE_PIPELINE = str(Path(__file__).parent / "fakes" / "pipeline.py")


# -- estimates -------------------------------------------------------------------------------------


def test_parse_estimate_reads_the_contract_and_ignores_extra_fields():
    r = parse_estimate({"accuracy": 0.91, "lower": 0.89, "upper": 0.93, "n": 400, "drift_alarm": True,
                        "trusted": False, "model_version": "v3", "reference_accuracy": 0.99,
                        "timestamp": 1_700_000_000, "drift_p_value": 0.001, "far_fraction": 0.2,
                        "error_sd": 0.012}, NOW)
    assert r == EstimateReading(accuracy=0.91, n=400, observed_at=datetime.fromtimestamp(1_700_000_000, timezone.utc),
                                lower=0.89, upper=0.93, drift_alarm=True, trusted=False, model_version="v3",
                                reference_accuracy=0.99, error_sd=0.012)
    iso = parse_estimate({"accuracy": 0.9, "n": 1, "timestamp": "2025-03-01T11:00:00Z"}, NOW)
    assert iso.observed_at == datetime(2025, 3, 1, 11, tzinfo=timezone.utc)
    assert parse_estimate({"accuracy": 0.9, "n": 1}, NOW).observed_at == NOW
    long = parse_estimate({"accuracy": 0.9, "n": 1, "unscored_reason": "x" * 10_000}, NOW).unscored_reason
    assert len(long) == 500 and long.endswith("...")  # shown in the status, so bounded


@pytest.mark.parametrize("payload,needle", [
    ({"n": 10}, "accuracy: Field required"),
    ({"accuracy": 1.3, "n": 10}, "accuracy: Input should be less than or equal to 1"),
    ({"accuracy": 0.9, "n": -1}, "n: Input should be greater than or equal to 0"),
    ({"accuracy": 0.9, "n": 5, "drift_alarm": "maybe"}, "drift_alarm"),
    ([1, 2], "malformed estimate"),
    ({"accuracy": None, "n": 0}, "no estimate yet"),
    ({"accuracy": float("nan"), "n": 0}, "no estimate yet"),
    ({"accuracy": None, "n": 0, "unscored_reason": "no reference"}, "recorded unscored: no reference"),
    ({"accuracy": 0.9, "n": 5, "unscored_reason": 7}, "unscored_reason"),
])
def test_parse_estimate_reports_what_is_wrong(payload, needle):
    err = parse_estimate(payload, NOW)
    assert isinstance(err, EstimateError) and needle in err.error, err


def test_sidecar_reader_over_http_and_its_failures():
    with FakeSidecar([{"accuracy": 0.93, "n": 250, "model_version": "v1", "timestamp": 100.0}]) as sc:
        r = SidecarEstimate(sc.url).read(NOW)
        assert isinstance(r, EstimateReading) and (r.accuracy, r.n, r.model_version) == (0.93, 250, "v1")
        missing = SidecarEstimate(sc.url.replace("/estimate", "/nope")).read(NOW)
        assert isinstance(missing, EstimateError) and "HTTP 404" in missing.error
        port = sc.server.server_address[1]
    refused = SidecarEstimate(f"http://127.0.0.1:{port}/estimate", timeout=1).read(NOW)
    assert isinstance(refused, EstimateError) and f"GET http://127.0.0.1:{port}/estimate" in refused.error


class _Prometheus:
    """Answers /api/v1/query with a canned vector per query (Prometheus' HTTP API shape)."""

    def __init__(self, answers: dict[str, list]):
        answers_ = answers

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                from urllib.parse import parse_qs, urlparse

                q = parse_qs(urlparse(self.path).query)["query"][0]
                result = answers_.get(q, [])
                body = json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_prometheus_reader_queries_accuracy_window_and_alarm():
    series = lambda v: [{"metric": {"deployment": "mnist"}, "value": [1_700_000_000.5, str(v)]}]  # noqa: E731
    prom = _Prometheus({"acc": series(0.88), "n": series(640), "alarm": series(1), "two": series(1) * 2})
    try:
        r = PrometheusEstimate(prom.url, "acc", "n", "alarm").read(NOW)
        assert isinstance(r, EstimateReading) and (r.accuracy, r.n, r.drift_alarm) == (0.88, 640, True)
        assert r.observed_at == datetime.fromtimestamp(1_700_000_000.5, timezone.utc)
        empty = PrometheusEstimate(prom.url, "absent", "n").read(NOW)
        assert isinstance(empty, EstimateError) and "returned no sample" in empty.error
        many = PrometheusEstimate(prom.url, "two", "n").read(NOW)
        assert isinstance(many, EstimateError) and "returned 2 series" in many.error
        uncounted = PrometheusEstimate(prom.url, "acc").read(NOW)  # issue 23: no window size, no reading
        assert isinstance(uncounted, EstimateError) and "needs estimate.countQuery" in uncounted.error
        wrong = PrometheusEstimate(prom.url, "n", "n").read(NOW)
        assert isinstance(wrong, EstimateError) and "not an accuracy" in wrong.error
    finally:
        prom.close()


# -- the local runner: real worker processes ---------------------------------------------------------


def _params(tmp_path: Path, **extra) -> dict:
    return {"release_file": str(tmp_path / "release"), "started_file": str(tmp_path / "started"),
            "fake_result": {"drop_confirmed": True, "offline_accuracy": 0.8}, **extra}


def test_local_runner_runs_a_callable_to_success_and_is_idempotent(tmp_path):
    runner = LocalRunner(tmp_path / "state", f"{FAKE_PIPELINE}:run", env={"DAIC_STORE": "file:///elsewhere"})
    assert isinstance(runner, PipelineRunner)
    assert runner.get("r1").phase is RunPhase.not_found
    runner.submit("r1", _params(tmp_path))
    state = wait_for(lambda: (s := runner.get("r1")).stage == "collect-labels" and s, what="labeling stage")
    assert state.phase is RunPhase.running
    runner.submit("r1", _params(tmp_path))             # again, as after a restart: no second run
    assert sorted(p.name for p in (tmp_path / "state" / "runs").iterdir() if p.is_dir()) == ["r1"]
    (tmp_path / "release").write_text("go")
    done = wait_for(lambda: (s := runner.get("r1")).phase.terminal and s, what="run end")
    assert done.phase is RunPhase.succeeded
    assert done.result == {"drop_confirmed": True, "offline_accuracy": 0.8, "store_seen": "file:///elsewhere"}


def test_two_runners_racing_for_one_name_start_one_worker(tmp_path):
    a = LocalRunner(tmp_path / "state", f"{FAKE_PIPELINE}:run")
    b = LocalRunner(tmp_path / "state", f"{FAKE_PIPELINE}:run")
    results = []
    threads = [threading.Thread(target=lambda r=r: results.append(r.submit("race", _params(tmp_path))))
               for r in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wait_for(lambda: (tmp_path / "started").exists(), what="the worker to start")
    pid = int((tmp_path / "started").read_text())
    state = json.loads((tmp_path / "state" / "runs" / "race" / "state.json").read_text())
    assert state["pid"] == pid
    # the losing worker found the name taken, removed its prepared directory and left
    wait_for(lambda: not [p for p in (tmp_path / "state" / "runs").iterdir() if p.name.startswith(".claim-")],
             what="the losing worker to clean up")
    (tmp_path / "release").write_text("go")
    assert wait_for(lambda: a.get("race").phase.terminal) and a.get("race").phase is RunPhase.succeeded


@pytest.mark.parametrize("ref,needle", [
    (f"{FAKE_PIPELINE}:fail", "RuntimeError: labeling backend unreachable"),
    (f"{FAKE_PIPELINE}:not_a_dict", "TypeError"),
    (f"{FAKE_PIPELINE}:missing", "has no callable 'missing'"),
    ("no_such_module_xyz:run", "No module named 'no_such_module_xyz'"),
])
def test_local_runner_records_failures_with_the_reason(tmp_path, ref, needle):
    runner = LocalRunner(tmp_path / "state", ref)
    runner.submit("bad", {})
    state = wait_for(lambda: (s := runner.get("bad")).phase.terminal and s, what="failure")
    assert state.phase is RunPhase.failed and needle in (state.error or ""), state.error


def test_local_runner_cancel_kills_the_worker_and_a_dead_worker_fails(tmp_path):
    runner = LocalRunner(tmp_path / "state", f"{FAKE_PIPELINE}:run")
    runner.submit("c1", _params(tmp_path))
    wait_for(lambda: (tmp_path / "started").exists())
    pid = int((tmp_path / "started").read_text())
    runner.cancel("c1")
    assert runner.get("c1").phase is RunPhase.canceled
    wait_for(lambda: not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2],
             what="the worker to exit")
    runner.cancel("c1")                                   # cancelling a finished run is a no-op
    (tmp_path / "started").unlink()
    runner.submit("k1", _params(tmp_path))
    wait_for(lambda: (tmp_path / "started").exists())
    os.kill(int((tmp_path / "started").read_text()), signal.SIGKILL)
    state = wait_for(lambda: (s := runner.get("k1")).phase.terminal and s, what="dead worker noticed")
    assert state.phase is RunPhase.failed and "exited without recording an outcome" in state.error


def test_local_runner_rejects_bad_names_and_callables(tmp_path):
    with pytest.raises(ValueError, match="module:function"):
        LocalRunner(tmp_path, "no-colon")
    with pytest.raises(ValueError, match="invalid run name"):
        LocalRunner(tmp_path, f"{FAKE_PIPELINE}:run").get("../escape")


# -- kfp.Client against the fake KFP API ---------------------------------------------------------------


@pytest.fixture(scope="module")
def pipeline_package(tmp_path_factory):
    """A real compiled pipeline (kfp's compiler), as `make compile-pipelines` would leave one."""
    from fakes.compiled_pipeline import compile_to

    return compile_to(tmp_path_factory.mktemp("pkg") / "assess-and-improve.yaml")


def test_kfp_runner_submits_once_maps_states_and_reads_the_result(tmp_path, pipeline_package):
    store = open_store(f"file://{tmp_path / 'store'}")
    with FakeKfp() as kfp:
        runner = KfpRunner(store, host=kfp.url, experiment="daic-test", package=pipeline_package)
        assert isinstance(runner, PipelineRunner)
        assert runner.get("demo-c1-abc").phase is RunPhase.not_found
        runner.submit("demo-c1-abc", {"cycle_id": "demo-c1-abc"})
        runner.submit("demo-c1-abc", {"cycle_id": "demo-c1-abc"})
        (run,) = kfp.runs.values()
        assert run["display_name"] == "demo-c1-abc"
        assert run["runtime_config"]["parameters"] == {"cycle_id": "demo-c1-abc"}
        assert runner.get("demo-c1-abc").phase is RunPhase.pending
        kfp.set_run(run["run_id"], "RUNNING", tasks=[
            {"display_name": "root", "state": "RUNNING", "create_time": "2025-01-01T00:00:00Z"},
            {"display_name": "sample-operational", "state": "SUCCEEDED", "create_time": "2025-01-01T00:00:01Z"},
            {"display_name": "train", "state": "RUNNING", "create_time": "2025-01-01T00:00:05Z"}])
        state = runner.get("demo-c1-abc")
        assert (state.phase, state.stage) == (RunPhase.running, "train")
        kfp.set_run(run["run_id"], "SUCCEEDED")
        missing = runner.get("demo-c1-abc")
        assert missing.phase is RunPhase.failed and "wrote no result at" in missing.error
        store.put_json("cycles/demo-c1-abc/result.json", {"drop_confirmed": False})
        done = runner.get("demo-c1-abc")
        assert done.phase is RunPhase.succeeded and done.result == {"drop_confirmed": False}
        runner.submit("demo-c2-abc", {})
        runner.cancel("demo-c2-abc")
        assert runner.get("demo-c2-abc").phase is RunPhase.canceled
        runner.cancel("demo-c1-abc")   # finished: nothing to do
        assert runner.get("demo-c1-abc").phase is RunPhase.succeeded
        kfp.set_run(run["run_id"], "FAILED", error="pod OOMKilled")
        failed = runner.get("demo-c1-abc")
        assert failed.phase is RunPhase.failed and failed.error == "pod OOMKilled"


def test_kfp_runner_finds_the_default_package_and_names_a_missing_one():
    from daic.operators.spec import PipelineSpec

    default = resolve_package(PipelineSpec().package)   # shipped as daic.pipelines package data
    assert Path(default).read_text().startswith("# PIPELINE DEFINITION")
    with pytest.raises(FileNotFoundError, match="compile-pipelines"):
        resolve_package("no-such-pipeline.yaml")


# -- the SeldonDeployment switch, with the kubernetes client against a real API server -------------


def test_seldon_target_canary_promotion_and_rollback_produce_valid_deployments(kube):
    ns = kube.namespace("seldon")
    api = kube.custom()
    sdep = render_seldon_deployment(DeploymentParams(name="mnist", namespace=ns, model_version="v1"))
    api.create_namespaced_custom_object("machinelearning.seldon.io", "v1", ns, "seldondeployments", sdep)

    def live() -> dict:
        return api.get_namespaced_custom_object("machinelearning.seldon.io", "v1", ns, "seldondeployments", "mnist")

    target = SeldonTarget(api, ns, "mnist", "default")
    assert target.observe(NOW).champion_version == "v1"
    target.apply(PatchDeployment("mnist", ns, "default", "v1", "v2", 20))
    assert read_split(live(), "default") == ("v1", "v2", 20)
    assert not check_seldon_deployment(live()), check_seldon_deployment(live())
    canary = next(p for p in live()["spec"]["predictors"] if p["name"] == "canary")
    sidecar = next(c for c in canary["componentSpecs"][0]["spec"]["containers"] if c["name"] == "oracle-sidecar")
    assert sidecar["command"][sidecar["command"].index("--deployment") + 1] == "mnist-canary"
    assert canary["labels"]["daic.dev/model-version"] == "v2"
    target.apply(PatchDeployment("mnist", ns, "default", "v2", None, 0))
    assert [p["name"] for p in live()["spec"]["predictors"]] == ["default"]
    assert read_split(live(), "default") == ("v2", None, 0) and live()["spec"]["predictors"][0]["traffic"] == 100
    assert not check_seldon_deployment(live())
    obs = target.observe(NOW)
    assert (obs.champion_version, obs.canary_version, obs.canary_share) == ("v2", None, 0)


def test_seldon_layout_errors_name_the_predictor():
    sdep = render_seldon_deployment(DeploymentParams(name="mnist"))
    with pytest.raises(SeldonLayoutError, match="no predictor named 'main'.*has: default"):
        read_split(sdep, "main")
    with pytest.raises(SeldonLayoutError, match="cannot be named 'canary'"):
        desired_predictors(sdep, PatchDeployment("mnist", None, "canary", "v1"))


def test_patch_deployment_rejects_an_impossible_split():
    with pytest.raises(ValueError, match="canary_share must be within 0..100"):
        PatchDeployment("m", None, "default", "v1", "v2", 120)
    with pytest.raises(ValueError, match="without a canary_version"):
        PatchDeployment("m", None, "default", "v1", None, 10)


def test_local_deployment_switch_and_champion_hook(tmp_path):
    moved = []
    dep = LocalDeployment(tmp_path / "deployment.json", "mnist", lambda m, v: moved.append((m, v)), "v1")
    assert (dep.observe(NOW).champion_version, dep.observe(NOW).canary_version) == ("v1", None)
    dep.apply(PatchDeployment("mnist", None, "default", "v1", "v2", 10))
    assert (dep.observe(NOW).canary_version, dep.observe(NOW).canary_share) == ("v2", 10) and moved == []
    dep.apply(PatchDeployment("mnist", None, "default", "v2", None, 0))
    assert dep.observe(NOW).champion_version == "v2" and moved == [("mnist", "v2")]


def test_registry_champion_switch_moves_the_pointer_once_and_refuses_unknown_versions(tmp_path):
    from daic.models.card import DataLineage, ModelCard
    from daic.models.registry import ModelRegistry, VersionNotFound, champion
    from daic.operators.local_deployment import registry_champion_hook

    url = f"file://{tmp_path / 'store'}"
    store = open_store(url)
    for version in ("v0001", "v0002"):   # two registered versions (cards only: no weights needed here)
        card = ModelCard(name="mnist", version=version, code_version="test",
                         data=DataLineage(dataset="mnist", base_count=55_000))
        store.put_json(f"models/mnist/{version}/card.json", card.model_dump(mode="json"))
    move = registry_champion_hook(url)
    move("mnist", "v0002")
    move("mnist", "v0002")   # repeated after a restart: no second promotion
    assert champion(store, "mnist") == "v0002"
    assert [p.version for p in ModelRegistry(store, "mnist").champion_history()] == ["v0002"]
    with pytest.raises(VersionNotFound, match="no version 'v0009'"):
        move("mnist", "v0009")


# -- small pieces -------------------------------------------------------------------------------------


def test_approval_annotations():
    assert approval_from_annotations({"daic.dev/approve": "3"}, 3, NOW).approved is True
    assert approval_from_annotations({"daic.dev/approve": "2"}, 3, NOW) is None
    both = approval_from_annotations({"daic.dev/approve": "3", "daic.dev/reject": "3"}, 3, NOW)
    assert both.approved is False, "a rejection wins"
    assert approval_from_annotations({}, 3, NOW) is None and approval_from_annotations({"x": "1"}, None, NOW) is None
    with pytest.raises(ValueError, match=r"daic.dev/approve='yes' must be a cycle number"):
        approval_from_annotations({"daic.dev/approve": "yes"}, 3, NOW)


def test_status_patch_clears_removed_fields_and_keeps_lists_free_of_nulls():
    old = CycleStatus(phase=Phase.assessing, current=CurrentCycle(
        cycle=1, run_name="r", started_at=NOW, trigger_reason="x", trigger_estimate=0.8)).to_wire()
    new = CycleStatus(phase=Phase.cooldown)
    patch = status_patch(new, "42")
    assert patch["metadata"] == {"resourceVersion": "42"} and patch["status"]["current"] is None
    merged = merge_patch({"status": {**old, "kopf": {"progress": {}}}}, patch)
    assert "current" not in merged["status"] and merged["status"]["kopf"] == {"progress": {}}
    assert merged["status"]["phase"] == "Cooldown"
