"""The input filter on a SeldonDeployment (issue 21): the operator's patch puts a TRANSFORMER node
pinned to a filter version in front of a predictor's MODEL node (its own container, the logger on
the root, the sidecar told the new graph), per predictor, and takes it out again; the result is
the graph daic.serving.manifest renders with a transformer and passes the manifest checks."""
from __future__ import annotations

import json

import pytest

from daic.operators.actions import PatchDeployment
from daic.operators.seldon import desired_predictors, read_filters, read_split
from daic.serving.manifest import (
    FILTER_MODEL_CLASS,
    DeploymentParams,
    TransformerNode,
    filter_of,
    graph_shape,
    render_seldon_deployment,
    set_filter,
)


def live() -> dict:
    doc = render_seldon_deployment(DeploymentParams(model_version="v1"))
    doc["metadata"]["resourceVersion"] = "7"
    return doc


def sidecar_graph(predictor: dict) -> dict:
    (sidecar,) = [c for c in predictor["componentSpecs"][0]["spec"]["containers"] if c["name"] == "oracle-sidecar"]
    argv = sidecar["command"]
    return json.loads(argv[argv.index("--graph") + 1])


def test_the_filter_class_is_the_serving_one():
    pytest.importorskip("torch")
    from daic.serving.filter import FILTER_CLASS

    assert FILTER_MODEL_CLASS == FILTER_CLASS


def test_a_filter_canary_then_the_whole_predictor_then_out_again():
    sdep = live()
    canary = desired_predictors(sdep, PatchDeployment("mnist", None, "default", "v1", "v1", 10,
                                                      canary_filter_version="v0003", canary_filter_gate="always"))
    main, can = canary
    assert filter_of(main) == (None, None) and filter_of(can) == ("v0003", "always")
    assert read_split({"spec": {"predictors": canary}}, "default") == ("v1", "v1", 10)
    assert read_filters({"spec": {"predictors": canary}}, "default") == (None, "v0003")
    graph = can["graph"]
    assert (graph["type"], graph["children"][0]["type"]) == ("TRANSFORMER", "MODEL")
    assert "logger" in graph and "logger" not in graph["children"][0]
    names = [c["name"] for c in can["componentSpecs"][0]["spec"]["containers"]]
    assert names == ["filter", "classifier", "oracle-sidecar"]
    assert sidecar_graph(can) == graph_shape(graph)
    assert "mnist-canary" in " ".join(c for c in can["componentSpecs"][0]["spec"]["containers"][2]["command"])

    sdep["spec"]["predictors"] = canary
    (whole,) = desired_predictors(sdep, PatchDeployment("mnist", None, "default", "v1", filter_version="v0003",
                                                        filter_gate="always"))
    assert filter_of(whole) == ("v0003", "always") and whole["traffic"] == 100
    params = {p["name"]: p["value"] for p in whole["graph"]["parameters"]}
    assert params["filter_version"] == "v0003" and params["model_name"] == "mnist"
    (filt,) = [c for c in whole["componentSpecs"][0]["spec"]["containers"] if c["name"] == "filter"]
    assert filt["command"][:4] == ["seldon-core-microservice", FILTER_MODEL_CLASS, "--service-type", "TRANSFORMER"]
    # The same layout as a deployment rendered with a transformer from the start.
    rendered = render_seldon_deployment(DeploymentParams(model_version="v1", transformer=TransformerNode(
        model_class=FILTER_MODEL_CLASS, parameters=params)))["spec"]["predictors"][0]
    assert whole["graph"] == rendered["graph"]
    assert [c["name"] for c in whole["componentSpecs"][0]["spec"]["containers"]] == \
        [c["name"] for c in rendered["componentSpecs"][0]["spec"]["containers"]]
    assert filt["ports"] == rendered["componentSpecs"][0]["spec"]["containers"][0]["ports"]

    # A challenger promoted: its version on the MODEL node, the filter out, the plain graph back.
    sdep["spec"]["predictors"] = [whole]
    (plain,) = desired_predictors(sdep, PatchDeployment("mnist", None, "default", "v2"))
    original = live()["spec"]["predictors"][0]
    assert read_split({"spec": {"predictors": [plain]}}, "default") == ("v2", None, 0)
    assert plain["graph"] == {**original["graph"], "parameters": plain["graph"]["parameters"]}
    assert [c["name"] for c in plain["componentSpecs"][0]["spec"]["containers"]] == ["classifier", "oracle-sidecar"]
    assert sidecar_graph(plain) == graph_shape(original["graph"])


def test_an_unchanged_filter_leaves_the_predictor_alone_and_bad_layouts_are_named():
    pred = set_filter(live()["spec"]["predictors"][0], "v0003", "gated")
    sdep = {"metadata": {"name": "mnist"}, "spec": {"predictors": [pred]}}
    (same,) = desired_predictors(sdep, PatchDeployment("mnist", None, "default", "v1", filter_version="v0003"))
    assert same["componentSpecs"] == pred["componentSpecs"]
    with pytest.raises(ValueError, match="model version"):
        set_filter(pred, "../x")
    odd = {**pred, "graph": {"name": "c", "type": "COMBINER", "children": []}}
    with pytest.raises(ValueError, match="expected a MODEL node"):
        set_filter(odd, "v0003")
