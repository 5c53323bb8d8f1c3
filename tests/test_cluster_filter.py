"""The filter remedy (issue 21) against a real API server: the kopf operator, as its own process
under its own ServiceAccount and Role, reads the fit-filter record of the run in flight and puts
the filter in front of the champion in the live SeldonDeployment (a TRANSFORMER node the Seldon
CRD accepts): first on the canary predictor, then on the main one; the challenger's canary keeps
it on the main predictor, and the promotion takes it out. Faked at their HTTP boundary only, as in
test_cluster_operator.py: Kubeflow Pipelines' REST API and the sidecar's ``/estimate``."""
from __future__ import annotations

from cluster.client import History
from cluster.fixtures import package, world  # noqa: F401 - fixtures
from cluster.world import SELDON
from fakes.waiting import RESULT, wait_for

TIMEOUT = 60.0
FILTER = {"champion_accuracy": 0.70, "filter_accuracy": 0.86, "filter_version": "v0003", "gate": "gated",
          "filter_holdout_accuracy": 0.90, "decision": "deploy"}


def _layout(sdep: dict) -> list[tuple[str, str | None, str | None, int]]:
    """(predictor, filter version, model version, traffic) per predictor."""
    out = []
    for p in sdep["spec"]["predictors"]:
        graph = p["graph"]
        model = graph["children"][0] if graph["type"] == "TRANSFORMER" else graph
        params = {x["name"]: x["value"] for x in graph.get("parameters") or []}
        filt = params.get("filter_version") if graph["type"] == "TRANSFORMER" else None
        version = next(x["value"] for x in model["parameters"] if x["name"] == "model_version")
        out.append((p["name"], filt, version, p.get("traffic", 0)))
    return out


def test_the_filter_goes_in_as_a_transformer_canary_then_out_at_the_promotion(kube, world):
    cycle = world.create_cycle(cooldownSeconds=0, remedy="both")
    name = f"demo-c1-{cycle['metadata']['uid'].replace('-', '')[:8]}"
    with History(kube, *SELDON[:2], world.namespace, SELDON[2]) as seldon, world.running_operator():
        run = wait_for(world.kfp.only_run, TIMEOUT, "one KFP run")
        assert run["runtime_config"]["parameters"]["remedy"] == "both"
        world.store.put_json(f"cycles/{name}/filter.json", FILTER)  # the fit-filter step, while train runs
        wait_for(lambda: "FilterDeployed" in world.reasons(), TIMEOUT, "the FilterDeployed event")
        assert world.status()["filter"]["version"] == "v0003"
        live = world.seldon()["spec"]["predictors"][0]
        containers = [c["name"] for c in live["componentSpecs"][0]["spec"]["containers"]]
        assert containers == ["filter", "classifier", "oracle-sidecar"]
        world.store.put_json(f"cycles/{name}/result.json", RESULT)
        world.kfp.set_run(run["run_id"], "SUCCEEDED")
        wait_for(lambda: "CyclePromoted" in world.reasons(), TIMEOUT, "the CyclePromoted event")
        layouts = [_layout(v) for v in seldon.versions("mnist")]
    wanted = [
        [("default", None, "v0001", 100)],
        [("default", None, "v0001", 80), ("canary", "v0003", "v0001", 20)],   # the filter's canary
        [("default", "v0003", "v0001", 100)],                                # the filter serves
        [("default", "v0003", "v0001", 80), ("canary", None, "v0002", 20)],   # the challenger's canary
        [("default", None, "v0002", 100)],                                   # promoted: the filter is out
    ]
    positions = [layouts.index(w) for w in wanted]
    assert positions == sorted(positions), layouts
    status = world.status()
    assert status.get("filter") is None
    (entry,) = status["history"]
    assert (entry["decision"], entry["remedy"], entry["filterOutcome"]) == ("promoted", "deploy",
                                                                           "removed-at-promotion")
    reasons = world.reasons()
    for reason in ("RemedyDecided", "FilterCanaryServing", "FilterCanaryPassed", "FilterDeployed", "FilterRemoved"):
        assert reason in reasons, reasons
