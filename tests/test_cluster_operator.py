"""The kopf operator as its own process, under its own ServiceAccount, against a real API server.

kube-apiserver and etcd are real (tests/cluster); the operator runs as ``kopf run -m
daic.operators.main`` with a TokenRequest token of the ``daic-operator`` ServiceAccount and only
the Role in manifests/operator, so RBAC answers every request it makes. The SeldonDeployment it
switches is a real object in the server; the test follows it (and the AssessmentCycle) through a
watch, so each write is seen, however quickly the next one follows.

Faked at their HTTP boundary, because they cannot run here: Kubeflow Pipelines' REST API
(tests/fakes/kfp.py, the test plays KFP: it moves runs through their states and writes the run's
result to the store) and the pseudo-oracle sidecar's ``/estimate`` (tests/fakes/sidecar.py).
"""
from __future__ import annotations

import pytest
import yaml

from cluster.client import History, request_key
from cluster.fixtures import package, world  # noqa: F401 - fixtures
from cluster.world import REPO, SELDON, World
from daic.operators.reconcile import record_key
from daic.operators.spec import GROUP, PLURAL, VERSION
from fakes.waiting import RESULT, wait_for

TIMEOUT = 60.0


def _phases(versions: list[dict]) -> list[str]:
    """The phases an object went through, consecutive repeats folded."""
    out: list[str] = []
    for obj in versions:
        phase = (obj.get("status") or {}).get("phase")
        if phase and (not out or out[-1] != phase):
            out.append(phase)
    return out


def _in_order(seen: list[str], wanted: list[str]) -> bool:
    it = iter(seen)
    return all(any(s == w for s in it) for w in wanted)


def _split(sdep: dict) -> list[tuple[str, str, int]]:
    out = []
    for p in sdep["spec"]["predictors"]:
        version = {q["name"]: q["value"] for q in p["graph"].get("parameters", [])}.get("model_version")
        out.append((p["name"], version, p.get("traffic")))
    return out


def _pruned(written, stored, path: str) -> list[str]:
    """Paths of values a merge patch wrote (nulls delete) that the stored object lacks."""
    if isinstance(written, dict):
        if not isinstance(stored, dict):
            return [path]
        return [p for k, v in written.items() if v is not None
                for p in ([f"{path}.{k}"] if k not in stored else _pruned(v, stored[k], f"{path}.{k}"))]
    if isinstance(written, list):
        if not isinstance(stored, list) or len(stored) != len(written):
            return [path]
        return [p for i, (w, s) in enumerate(zip(written, stored)) for p in _pruned(w, s, f"{path}[{i}]")]
    return []


def _role_rules() -> set[tuple[str, str, str]]:
    role = yaml.safe_load((REPO / "manifests" / "operator" / "role.yaml").read_text())
    return {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
            for v in rule["verbs"]}


def test_a_drop_runs_one_cycle_to_promotion_under_the_operators_own_rbac(kube, world):
    cycle = world.create_cycle(cooldownSeconds=0)
    name = f"demo-c1-{cycle['metadata']['uid'].replace('-', '')[:8]}"
    with History(kube, GROUP, VERSION, world.namespace, PLURAL) as cycles, \
            History(kube, *SELDON[:2], world.namespace, SELDON[2]) as seldon, \
            world.running_operator() as op:
        run = wait_for(world.kfp.only_run, TIMEOUT, "one KFP run")
        assert run["display_name"] == name
        params = run["runtime_config"]["parameters"]
        assert params["cycle_id"] == name and params["champion_version"] == "v0001"
        assert params["namespace"] == world.namespace
        wait_for(world.phase_is("Assessing"), TIMEOUT, "Assessing")
        finalizers = world.get_cycle()["metadata"].get("finalizers", [])
        assert "daic.dev/cancel-run" in finalizers
        world.store.put_json(f"cycles/{name}/result.json", RESULT)
        world.kfp.set_run(run["run_id"], "SUCCEEDED")
        wait_for(lambda: "CyclePromoted" in world.reasons(), TIMEOUT, "the CyclePromoted event")
        status = wait_for(lambda: (s := world.status()).get("phase") == "Monitoring" and not s.get("outbox") and s,
                          TIMEOUT, "Monitoring again, the record written")
        assert "reconcile" in op.healthz(), "kopf serves the reconcile probe on the liveness endpoint"
        phases = _phases(cycles.versions("demo"))
        splits = [_split(v) for v in seldon.versions("mnist")]
    assert _in_order(phases, ["Monitoring", "Assessing", "Promoting", "Monitoring"]), phases  # cooldown 0 s
    # The SeldonDeployment in the API server went v0001 -> canary 80/20 -> v0002, in that order.
    assert splits[0] == [("default", "v0001", 100)], splits
    assert [("default", "v0001", 80), ("canary", "v0002", 20)] in splits, splits
    assert splits[-1] == [("default", "v0002", 100)], splits
    assert splits.index([("default", "v0001", 80), ("canary", "v0002", 20)]) < len(splits) - 1
    live = world.seldon()
    assert live["spec"]["predictors"][0]["labels"]["daic.dev/model-version"] == "v0002"
    assert len(world.kfp.runs) == 1
    (entry,) = status["history"]
    assert (entry["runName"], entry["decision"], entry["challengerVersion"]) == (name, "promoted", "v0002")
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    expected = {"Ready": "True", "SpecValid": "True", "EstimateAvailable": "True", "CycleInFlight": "False"}
    assert {k: conditions.get(k) for k in expected} == expected, conditions
    assert conditions.get("Degraded", "False") == "False", conditions
    # the status subresource: the operator's writes bumped no generation (spec unchanged)
    assert world.get_cycle()["metadata"]["generation"] == 1
    reasons = world.reasons()
    for reason in ("CycleStarted", "PromotionStarted", "CanaryServing", "CanaryPassed", "CyclePromoted"):
        assert reason in reasons, reasons
    assert reasons.count("CycleStarted") == 1
    event = next(e for e in world.events() if e.reason == "CyclePromoted")
    assert event.involved_object.kind == "AssessmentCycle" and event.involved_object.uid == cycle["metadata"]["uid"]
    record = world.store.get_json(record_key(name))
    assert record["state"] == "finished" and record["summary"]["decision"] == "promoted"
    if kube.control_plane is not None:  # the audit log: every request it made, as the server saw it
        made = kube.requests_by(world.user)
        refused = [(request_key(e), e["responseStatus"].get("code")) for e in made
                   if e.get("responseStatus", {}).get("code") == 403]
        assert not refused, f"requests RBAC refused the operator: {refused}"
        status_patches = [e for e in made if request_key(e) == (GROUP, f"{PLURAL}/status", "patch")]
        # A pass that raced another write fails with 409 by design (operators/kube.py: optimistic
        # concurrency; the next pass starts over); its response is a Status object, not the cycle.
        invalid = [e["responseStatus"] for e in status_patches if e.get("responseStatus", {}).get("code") == 422]
        assert not invalid, f"the server refused status the operator wrote: {invalid}"
        pruned = [p for e in status_patches if 200 <= e.get("responseStatus", {}).get("code", 0) < 300
                  for p in _pruned(e["requestObject"].get("status"), e["responseObject"].get("status"), "status")]
        assert any(200 <= e.get("responseStatus", {}).get("code", 0) < 300 for e in status_patches), status_patches
        assert not pruned, f"the server dropped status fields the operator wrote (not in the CRD): {sorted(set(pruned))}"
        used = {request_key(e) for e in made if e.get("objectRef")}  # not discovery (/api, /apis, /version)
        assert used == _role_rules(), ("the Role must grant exactly what is used: unused grants "
                                       f"{sorted(_role_rules() - used)}, used but not granted {sorted(used - _role_rules())}")


def test_deleting_a_cycle_in_flight_cancels_its_run_through_the_finalizer(world):
    world.create_cycle()
    with world.running_operator():
        run = wait_for(world.kfp.only_run, TIMEOUT, "one KFP run")
        wait_for(world.phase_is("Assessing"), TIMEOUT, "Assessing")
        assert "daic.dev/cancel-run" in world.get_cycle()["metadata"]["finalizers"]
        world.kube.custom().delete_namespaced_custom_object(GROUP, VERSION, world.namespace, PLURAL, "demo")
        wait_for(lambda: world.get_cycle() is None, TIMEOUT, "the deletion to finish")
    assert world.kfp.runs[run["run_id"]]["state"] == "CANCELED"
    assert "RunCancelled" in world.reasons()


def test_manual_promotion_waits_for_the_approval_annotation(world):
    world.create_cycle(promotion={"mode": "manual", "canaryShare": 0})
    with world.running_operator():
        run = wait_for(world.kfp.only_run, TIMEOUT, "one KFP run")
        world.store.put_json(f"cycles/{run['display_name']}/result.json", RESULT)
        world.kfp.set_run(run["run_id"], "SUCCEEDED")
        waiting = wait_for(world.phase_is("AwaitingApproval"), TIMEOUT, "AwaitingApproval")
        assert "daic.dev/approve=1" in waiting["message"]
        assert _split(world.seldon()) == [("default", "v0001", 100)], "nothing is promoted before the approval"
        world.kube.custom().patch_namespaced_custom_object(
            GROUP, VERSION, world.namespace, PLURAL, "demo", {"metadata": {"annotations": {"daic.dev/approve": "1"}}})
        status = wait_for(world.phase_is("Cooldown"), TIMEOUT, "Cooldown after the approval")
    assert status["history"][0]["decision"] == "promoted"
    assert _split(world.seldon()) == [("default", "v0002", 100)]


def test_a_spec_the_crd_accepts_but_the_models_refuse_is_reported(world):
    world.create_cycle(pipeline={"parameters": {"budget": 5}})
    with world.running_operator():
        status = wait_for(world.phase_is("Degraded"), TIMEOUT, "Degraded")
        wait_for(lambda: "InvalidSpec" in world.reasons(), TIMEOUT, "the Warning event")
    assert status["reason"] == "InvalidSpec" and "may not set budget" in status["message"]
    event = next(e for e in world.events() if e.reason == "InvalidSpec")
    assert event.type == "Warning"
    assert not world.kfp.runs
