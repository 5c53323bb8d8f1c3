"""The operator under faults of a real control plane (tests/cluster), as a process under its own
ServiceAccount (see tests/test_cluster_operator.py for the setting):

* kube-apiserver stopped while a cycle is in flight, etcd written to and compacted while it is
  down, kube-apiserver started again: the operator's watch resumes from a revision that no longer
  exists (410 Gone), so it must list again; the cycle in flight finishes with its one run, and a
  resource created after the restart is seen (only a working watch can see it);
* the operator killed with SIGKILL mid-cycle, both right after it recorded the cycle and in the
  window between KFP creating the run and the operator hearing of it: a new operator process
  resumes from the status and the cycle ends with one pipeline run, not two.

Faked at their HTTP boundary, because they cannot run here: Kubeflow Pipelines' REST API
(tests/fakes/kfp.py) and the pseudo-oracle sidecar (tests/fakes/sidecar.py).
"""
from __future__ import annotations

import threading
import time

import pytest

from cluster.client import request_key
from cluster.fixtures import package, world  # noqa: F401 - fixtures
from cluster.world import World
from daic.operators.spec import PLURAL
from fakes.waiting import RESULT, wait_for

TIMEOUT = 90.0


def _finish_run(world: World, run: dict) -> None:
    world.store.put_json(f"cycles/{run['display_name']}/result.json", RESULT)
    world.kfp.set_run(run["run_id"], "SUCCEEDED")


def _one_cycle_done(world: World, run: dict) -> dict:
    status = world.wait_phase("Cooldown")
    assert [r["display_name"] for r in world.kfp.runs.values()] == [run["display_name"]], "one run, not two"
    assert [h["runName"] for h in status["history"]] == [run["display_name"]]
    assert status["cycleCount"] == 1 and status["history"][0]["decision"] == "promoted"
    # kopf posts Events from a queue in the background: one queued when the process is killed (or
    # while the API server is away) is lost. Events are best effort; a second CycleStarted never comes.
    wait_for(lambda: "CyclePromoted" in world.reasons(), TIMEOUT, "the CyclePromoted event")
    assert world.reasons().count("CycleStarted") <= 1, world.reasons()
    return status


def test_a_restarted_apiserver_with_etcd_compacted_makes_the_operator_relist_and_lose_nothing(kube, world):
    plane = kube.control_plane
    if plane is None:
        pytest.skip("restarts the test control plane's kube-apiserver and compacts its etcd")
    world.create_cycle(promotion={"canaryShare": 0})
    with world.running_operator() as op:
        run = wait_for(world.kfp.only_run, TIMEOUT, "one KFP run")
        world.wait_phase("Assessing")
        stopped_at = time.time()
        plane.stop_apiserver()
        _finish_run(world, run)            # the world moves on while the API server is away
        compacted = plane.compact_etcd()    # and the operator's last resourceVersion is compacted away
        plane.start_apiserver()
        kube.reset_clients()
        # Only a watch that works again can see an object created now (timers run on known objects).
        world.create_cycle("after-restart", trigger={"threshold": 0.5, "whenUntrusted": False})
        world.wait_phase("Monitoring", "after-restart")
        _one_cycle_done(world, run)
        assert op.alive(), "the operator survived the outage"
    # The audit log: after the restart, a watch from a revision etcd had compacted away (the server
    # answers it with a 410 Gone event), then a fresh list, then a watch from the list's revision.
    after = [e for e in kube.requests_by(world.user) if _seconds(e["requestReceivedTimestamp"]) > stopped_at
             and request_key(e)[:2] == ("daic.dev", PLURAL) and e["responseStatus"].get("code") == 200]
    calls = [(e["verb"], _query(e["requestURI"]).get("resourceVersion")) for e in after]
    stale = next((i for i, (verb, rv) in enumerate(calls) if verb == "watch" and rv and int(rv) < compacted), None)
    assert stale is not None, f"no watch from a compacted revision (< {compacted}) after the restart: {calls}"
    assert ("list", None) in calls[stale + 1:], f"no list after the 410: {calls}"


def _query(uri: str) -> dict[str, str]:
    from urllib.parse import parse_qsl, urlsplit

    return dict(parse_qsl(urlsplit(uri).query))


def _seconds(timestamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


@pytest.mark.parametrize("when", ["after-recording-the-cycle", "between-run-creation-and-its-response"])
def test_the_operator_killed_mid_cycle_resumes_from_its_status_with_one_run(world, when):
    world.create_cycle(promotion={"canaryShare": 0})
    first = world.operator("operator-1.log")
    with first:
        if when == "between-run-creation-and-its-response":
            world.kfp.hold_run_response = threading.Event()
            run = wait_for(world.kfp.only_run, TIMEOUT, "the run created in KFP")
            first.kill()
            world.kfp.hold_run_response.set()
            world.kfp.hold_run_response = None
        else:
            run = wait_for(world.kfp.only_run, TIMEOUT, "one KFP run")
            world.wait_phase("Assessing")
            first.kill()
    assert first.proc.returncode == -9
    status = world.status()
    assert status["phase"] == "Assessing" and status["current"]["runName"] == run["display_name"], \
        "the cycle was recorded before its run was submitted"
    _finish_run(world, run)
    with world.running_operator(log_name="operator-2.log"):
        _one_cycle_done(world, run)
