"""The kopf operator under API faults, in-process against the faked API at its HTTP boundary
(tests/fakes/kube.py; see test_operator_handlers.py for what is real and what is faked): a watch
that ends with 410 Gone (etcd compacted the revision it would resume from), and 409 Conflict on
the status write and on the SeldonDeployment patch (someone else wrote in between). Each fault is
injected once; the operator must carry on without a crash, a lost resource or a second run.
(The same faults against a real kube-apiserver + etcd: tests/test_cluster_faults.py.)
"""
from __future__ import annotations

from fakes.waiting import RESULT, wait_for
from test_operator_handlers import Cluster, cluster, package  # noqa: F401 - the fixtures

__all__ = ["Cluster"]


def _lists(kube, plural: str) -> int:
    return sum(1 for method, path, query in kube.requests
               if method == "GET" and path.endswith(f"/{plural}") and "watch=true" not in query)


def test_a_410_gone_on_the_watch_makes_the_operator_list_again_and_miss_nothing(cluster):
    kube = cluster.kube
    with cluster.operator():
        cluster.cycle("first")
        wait_for(lambda: len(kube.runs) == 1 or None, what="the first cycle's run")
        listed = _lists(kube, "assessmentcycles")
        kube.expire_watches("assessmentcycles")
        cluster.cycle("second")  # created while the watch is broken
        wait_for(lambda: len(kube.runs) == 2 or None, what="the second cycle's run")
        wait_for(lambda: [h for h in kube.faults_hit if h[2] == 410] or None, what="the 410 delivered")
        assert _lists(kube, "assessmentcycles") > listed, "after 410 Gone a client must list again"
    names = sorted(r["display_name"].split("-c1-")[0] for r in kube.runs.values())
    assert names == ["first", "second"]


def test_a_409_on_the_status_write_loses_the_pass_not_the_cycle(cluster):
    kube = cluster.kube
    kube.fail_next(409, "PATCH", "/assessmentcycles/demo/status", '"phase"')
    kube.fail_next(409, "PATCH", "/assessmentcycles/demo/status", '"phase"')
    with cluster.operator():
        cluster.cycle()
        run = wait_for(cluster.only_run, what="one KFP run")
        wait_for(cluster.phase_is("Assessing"), what="Assessing")
        assert len([h for h in kube.faults_hit if h[2] == 409]) == 2
        name = run["display_name"]
        cluster.store.put_json(f"cycles/{name}/result.json", RESULT)
        kube.fail_next(409, "PATCH", "/seldondeployments/mnist")  # the canary patch, once
        kube.set_run(run["run_id"], "SUCCEEDED")
        status = wait_for(cluster.phase_is("Cooldown"), what="Cooldown")
    assert len(kube.runs) == 1, "a lost status write must not start a second run"
    assert len([h for h in kube.faults_hit if "seldondeployments" in h[1]]) == 1
    assert status["history"][0]["decision"] == "promoted"
    assert kube.rejected == []
