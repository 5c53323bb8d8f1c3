"""The compiled assess-and-improve spec: up to date, and what a cluster will run.

Compiles the Python definition to a temporary file and compares it with the checked-in YAML, then
reads the spec: parameters and defaults, the DAG edges, the conditions, resource requests,
accelerator settings and the kfp-kubernetes platform config (node selector, tolerations, Secrets).
"""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from daic.components.images import COMPONENT_IMAGES, IMAGES, image_for
from daic.pipelines.compile import COMPILED, compile_pipeline
from daic.pipelines.local_run import pipeline_parameters

CHECKED_IN = COMPILED / "assess_and_improve.yaml"


@pytest.fixture(scope="module")
def spec(tmp_path_factory) -> dict:
    fresh = compile_pipeline(tmp_path_factory.mktemp("compiled") / "assess_and_improve.yaml")
    if fresh.read_text() != CHECKED_IN.read_text():
        pytest.fail(f"{CHECKED_IN} is stale: the pipeline definition changed; run `make compile-pipelines`")
    docs = list(yaml.safe_load_all(fresh.read_text()))
    return {"pipeline": docs[0], "platform": docs[1] if len(docs) > 1 else {}}


def test_compiled_yaml_is_up_to_date(spec):
    assert spec["pipeline"]["pipelineInfo"]["name"] == "assess-and-improve"


def test_parameters_and_defaults(spec):
    params = spec["pipeline"]["root"]["inputDefinitions"]["parameters"]
    defaults = pipeline_parameters()
    assert set(params) == set(defaults)
    for name, default in defaults.items():
        assert params[name].get("defaultValue") == default or (default in ("", 0, 0.0, False, {}, [])
                                                               and params[name].get("isOptional")), name
    kinds = {n: p["parameterType"] for n, p in params.items()}
    assert kinds["budget"] == "NUMBER_INTEGER" and kinds["level"] == "NUMBER_DOUBLE"
    assert kinds["train_node_selector"] == "STRUCT" and kinds["train_tolerations"] == "LIST"
    assert params["labeling_backend"]["defaultValue"] == "simulated"
    assert params["train_backend"]["defaultValue"] == "local"
    assert params["deploy_target"]["defaultValue"] == "local"


def test_operator_parameters_are_all_accepted(spec):
    """The operator passes these to every run (daic.operators.spec.RESERVED_PARAMETERS); KFP refuses
    a run with a parameter the pipeline does not declare."""
    from daic.operators.spec import RESERVED_PARAMETERS

    params = spec["pipeline"]["root"]["inputDefinitions"]["parameters"]
    assert RESERVED_PARAMETERS <= set(params)


def _tasks(spec, component=None):
    comps = spec["pipeline"]["components"]
    dag = component and comps[component]["dag"] or spec["pipeline"]["root"]["dag"]
    return dag["tasks"]


def test_dag_edges_and_conditions(spec):
    root = _tasks(spec)
    assert set(root) == {"sample-operational", "collect-labels", "estimate-accuracy", "condition-1"}
    assert root["collect-labels"]["dependentTasks"] == ["sample-operational"]
    assert set(root["estimate-accuracy"]["dependentTasks"]) == {"collect-labels", "sample-operational"}
    drop = root["condition-1"]
    assert drop["taskInfo"]["name"] == "drop-confirmed"
    assert drop["triggerPolicy"]["condition"] == \
        "inputs.parameter_values['pipelinechannel--estimate-accuracy-Output'] == true"
    remedies = _tasks(spec, "comp-condition-1")
    assert set(remedies) == {"fit-filter", "condition-2"}  # fit-filter always: evaluate reads its record
    assert remedies["condition-2"]["taskInfo"]["name"] == "retrain-remedy"
    assert remedies["condition-2"]["triggerPolicy"]["condition"] == \
        "inputs.parameter_values['pipelinechannel--remedy'] != 'filter'"
    assert remedies["condition-2"]["dependentTasks"] == ["fit-filter"]
    inside = _tasks(spec, "comp-condition-2")
    assert set(inside) == {"train", "evaluate", "condition-3"}
    assert inside["evaluate"]["dependentTasks"] == ["train"]
    better = inside["condition-3"]
    assert better["taskInfo"]["name"] == "challenger-better"
    assert better["triggerPolicy"]["condition"] == "inputs.parameter_values['pipelinechannel--evaluate-Output'] == true"
    promotes = _tasks(spec, "comp-condition-3")["condition-4"]
    assert promotes["triggerPolicy"]["condition"] == "inputs.parameter_values['pipelinechannel--promote_by'] == 'pipeline'"
    assert set(_tasks(spec, "comp-condition-4")) == {"deploy"}


def test_caching_is_off_everywhere(spec):
    def walk(tasks):
        for name, task in tasks.items():
            if name.startswith("condition-"):
                walk(_tasks(spec, task["componentRef"]["name"]))
            else:
                assert task["cachingOptions"] == {}, name  # enableCache false is the default: omitted
    walk(_tasks(spec))


def _executor(spec, name):
    return spec["pipeline"]["deploymentSpec"]["executors"][f"exec-{name}"]["container"]


def test_images_and_resource_requests(spec):
    for component, image in COMPONENT_IMAGES.items():
        container = _executor(spec, component)
        assert container["image"] == image_for(component) == IMAGES[image].ref
        assert "pip install" not in " ".join(container["command"]), component
    assert _executor(spec, "sample-operational")["resources"]["resourceCpuRequest"] == "500m"
    assert _executor(spec, "evaluate")["resources"]["resourceMemoryRequest"] == "2Gi"
    train = _executor(spec, "train")["resources"]
    assert train["resourceCpuRequest"] == "{{$.inputs.parameters['pipelinechannel--train_cpu_request']}}"
    assert train["resourceMemoryRequest"] == "{{$.inputs.parameters['pipelinechannel--train_memory_request']}}"


def test_train_gpu_settings(spec):
    accel = _executor(spec, "train")["resources"]["accelerator"]
    assert accel["resourceType"] == "nvidia.com/gpu"
    assert accel["resourceCount"] == "{{$.inputs.parameters['pipelinechannel--train_gpus']}}"
    k8s = spec["platform"]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-train"]
    assert k8s["nodeSelector"]["nodeSelectorJson"] == {"componentInputParameter": "pipelinechannel--train_node_selector"}
    assert k8s["tolerations"] == [{"tolerationJson": {"componentInputParameter": "pipelinechannel--train_tolerations"}}]
    for name in ("sample-operational", "estimate-accuracy", "evaluate", "deploy"):
        assert "accelerator" not in _executor(spec, name).get("resources", {}), name


def test_store_and_label_studio_secrets(spec):
    executors = spec["platform"]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for name in COMPONENT_IMAGES:
        store = executors[f"exec-{name}"]["secretAsEnv"][0]
        assert store["optional"] is True
        assert {m["envVar"] for m in store["keyToEnv"]} == {"DAIC_STORE", "MINIO_ENDPOINT", "MINIO_ACCESS_KEY",
                                                            "MINIO_SECRET_KEY"}
    studio = executors["exec-collect-labels"]["secretAsEnv"][1]
    assert studio["secretName"] == "label-studio"
    assert {m["envVar"] for m in studio["keyToEnv"]} == {"LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY",
                                                         "LABEL_STUDIO_AUTH_SCHEME"}
    assert studio["optional"] is True
    # blind labeling unless a cycle asks for the model's answer
    assert spec["pipeline"]["root"]["inputDefinitions"]["parameters"]["show_model_answer"]["defaultValue"] is False


def test_metrics_and_model_artifacts(spec):
    comps = spec["pipeline"]["components"]
    assert comps["comp-evaluate"]["outputDefinitions"]["artifacts"]["metrics"]["artifactType"]["schemaTitle"] == \
        "system.Metrics"
    assert comps["comp-estimate-accuracy"]["outputDefinitions"]["artifacts"]["metrics"]["artifactType"][
        "schemaTitle"] == "system.Metrics"
    assert comps["comp-train"]["outputDefinitions"]["artifacts"]["model"]["artifactType"]["schemaTitle"] == \
        "system.Model"
    assert comps["comp-sample-operational"]["outputDefinitions"]["artifacts"]["sample"]["artifactType"][
        "schemaTitle"] == "system.Dataset"


def test_every_parameter_a_task_reads_is_declared_by_its_dag(spec):
    """Inside a dsl.If, a task reads parameters through its sub-DAG's inputs; the KFP compiler
    forgets to declare those that a task uses only in its settings (resource requests from
    parameters; kubeflow/pipelines#12617), which neither a cluster nor kfp.local can resolve.
    The train step takes them as inputs too, so they are declared; this keeps it that way."""
    comps = spec["pipeline"]["components"]
    dags = {"root": spec["pipeline"]["root"], **{n: c for n, c in comps.items() if "dag" in c}}
    checked = 0
    for dag_name, dag in dags.items():
        declared = set((dag.get("inputDefinitions") or {}).get("parameters") or {})
        for task_name, task in dag["dag"]["tasks"].items():
            for name, value in ((task.get("inputs") or {}).get("parameters") or {}).items():
                if "componentInputParameter" in value:
                    checked += 1
                    assert value["componentInputParameter"] in declared, \
                        f"{dag_name}/{task_name}.{name} reads {value['componentInputParameter']}, not declared"
    assert checked > 50


def test_retraining_defaults_are_the_training_sides():
    """The pipeline's retraining defaults are daic.training's (measured in docs/benchmarks/pipeline.md)."""
    from daic.components.train.logic import TrainConfig
    from daic.training.workflow import RETRAIN_DEFAULTS

    params, step = pipeline_parameters(), TrainConfig()
    assert params["epochs"] == step.epochs == RETRAIN_DEFAULTS["epochs"]
    assert params["learning_rate"] == step.learning_rate == RETRAIN_DEFAULTS["lr"]
    assert params["operational_oversample"] == step.operational_oversample == RETRAIN_DEFAULTS["operational_oversample"]
    assert params["train_base_limit"] == step.base_limit == 0  # the whole base split
    assert params["reference_shift_per_condition"] == step.reference_shift_per_condition == 100
