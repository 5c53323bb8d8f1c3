"""The "assess-and-improve" pipeline: one DAIC cycle, from a doubt to a better model.

    sample-operational ─► collect-labels ─► estimate-accuracy
        └─ if the drop is confirmed:
             fit-filter (remedy filter|both: adapt the input filter without labels, judge it on the
             │  labels; remedy retrain: only the decision to take a serving filter out)
             └─ remedy retrain|both: train ─► evaluate (the challenger alone and behind the cycle's
                    │  filter, and the champion behind it: what serves)
                    └─ if the challenger is better (and the pipeline promotes): deploy

The retraining branch waits for fit-filter (evaluate reads its record; KFP hoists the dependency
to the branch): the filter, bounded to about a minute, gets the machine first and serves while the
challenger trains.

It runs unchanged on Kubeflow Pipelines (compiled YAML in ``compiled/``) and locally with
``kfp.local`` (``daic pipeline run``). Every parameter has a default that works locally (the
embedded store, the simulated labeler needs only ``simulated_scenario``, Ray in process, the local
champion switch). The operator starts it with the parameters of
``daic.operators.reconcile.pipeline_params`` (run name, champion version, threshold, Ray sizes,
...): they are all declared here, some only recorded. Caching is off for every step: a step's
inputs are names in the object store, whose contents change between runs.

On a cluster: every step reads the store settings from the Secret ``store_secret`` (keys ``url``,
``endpoint``, ``accesskey``, ``secretkey``; optional) and collect-labels the Label Studio settings
from the Secret ``label-studio`` (keys ``url``, ``api-key``, ``auth-scheme``: ``personal``, the
default for Label Studio's personal access tokens, or ``legacy``; optional); the train step gets its CPU,
memory and GPU requests, node selector and tolerations from parameters (kfp-kubernetes). kfp.local
ignores all of these.
"""

from kfp import dsl, kubernetes

from daic.components.collect_labels.component import collect_labels
from daic.components.deploy.component import deploy
from daic.components.estimate_accuracy.component import estimate_accuracy
from daic.components.evaluate.component import evaluate
from daic.components.fit_filter.component import fit_filter
from daic.components.sample_operational.component import sample_operational
from daic.components.train.component import train

PIPELINE_NAME = "assess-and-improve"
GPU_RESOURCE = "nvidia.com/gpu"
STORE_SECRET_KEYS = {"url": "DAIC_STORE", "endpoint": "MINIO_ENDPOINT", "accesskey": "MINIO_ACCESS_KEY",
                     "secretkey": "MINIO_SECRET_KEY"}
LABEL_STUDIO_SECRET = "label-studio"
LABEL_STUDIO_KEYS = {"url": "LABEL_STUDIO_URL", "api-key": "LABEL_STUDIO_API_KEY",
                     "auth-scheme": "LABEL_STUDIO_AUTH_SCHEME"}
#: (cpu request, memory request) of the steps whose size does not depend on parameters.
STEP_RESOURCES = {
    "sample-operational": ("500m", "1Gi"),
    "collect-labels": ("250m", "512Mi"),
    "estimate-accuracy": ("250m", "512Mi"),
    "evaluate": ("1", "2Gi"),
    "fit-filter": ("1", "2Gi"),
    "deploy": ("100m", "256Mi"),
}


def _prepare(task: dsl.PipelineTask, step: str, store_secret) -> dsl.PipelineTask:
    task.set_caching_options(False)
    if step in STEP_RESOURCES:
        cpu, memory = STEP_RESOURCES[step]
        task.set_cpu_request(cpu).set_memory_request(memory)
    kubernetes.use_secret_as_env(task, secret_name=store_secret, secret_key_to_env=STORE_SECRET_KEYS,
                                 optional=True)
    return task


@dsl.pipeline(name=PIPELINE_NAME,
              description="DAIC: sample operational inputs, label them, estimate accuracy; if the drop "
                          "is confirmed retrain on Ray, evaluate, and promote a better model.")
def assess_and_improve(
    # where
    store_url: str = "",
    store_secret: str = "daic-store",
    deployment: str = "mnist",
    namespace: str = "",
    predictor: str = "default",
    model_name: str = "mnist",
    champion_version: str = "",
    # the cycle (the operator names it; empty: a fresh id)
    cycle_id: str = "",
    run_name: str = "",
    labels_prefix: str = "",
    record_prefix: str = "",
    threshold: float = 0.0,
    trigger_estimate: float = -1.0,
    # sampling
    since: str = "",
    until: str = "",
    sampler: str = "stratified",
    sampler_params: dict = {},
    budget: int = 200,
    target_half_width: float = 0.0,
    holdout_share: float = 0.3,
    seed: int = 0,
    label_round_size: int = 0,  # > 0: labels in rounds of this many draws (docs/pipeline.md, "Rounds")
    # at most this many inputs the model server abstained on (spec.abstain, issue 21) queued for
    # labeling beside the sample, outside the estimate; 0: none (daic.sampling.abstain)
    abstained_cap: int = 100,
    # labeling
    labeling_backend: str = "simulated",
    labeling_timeout_s: int = 3600,
    labeling_poll_s: float = 5.0,
    min_answered_share: float = 1.0,
    simulated_scenario: str = "",
    label_studio_url: str = "",
    show_model_answer: bool = False,  # blind labeling unless a cycle asks to show the model's answer
    train_weighting: str = "uniform",  # uniform, inclusion or mispredicted (collect-labels' WEIGHTINGS)
    # estimation and the drop rule
    level: float = 0.95,
    max_drop: float = 0.02,
    reference_accuracy: float = -1.0,
    # training
    train_backend: str = "local",
    ray_address: str = "",
    ray_workers: int = 1,
    cpus_per_worker: int = 1,
    gpus_per_worker: int = 0,
    memory_per_worker: str = "",
    epochs: int = 2,
    learning_rate: float = 1e-3,
    operational_oversample: int = 10,
    train_base_limit: int = 0,
    reference_shift_per_condition: int = 100,
    train_timeout_s: int = 7200,
    train_cpu_request: str = "1",
    train_memory_request: str = "4Gi",
    train_gpus: int = 0,
    train_node_selector: dict = {},
    train_tolerations: list = [],
    train_batch_size: int = 0,
    train_precision: str = "auto",
    ray_cluster: str = "daic-ray",
    # evaluation and promotion
    clean_tolerance: float = 0.01,
    clean_limit: int = 0,
    promote_by: str = "pipeline",
    deploy_target: str = "local",
    canary_share: int = 10,
    canary_seconds: int = 0,
    reload_urls: str = "",
    # the second remedy (issue 21): the operator passes spec.remedy; a run started by hand retrains only
    remedy: str = "retrain",
    filter_generic_version: str = "",
    filter_pool_limit: int = 2000,
    filter_epochs: int = 1,
    filter_base_limit: int = 4000,
    filter_max_clean_loss: float = 0.003,
    # the sidecar's assessor behind the adopted filter (its estimate covers the wrapped model); about
    # 3 minutes on 2 busy cores at the end of fit-filter, which the retraining branch waits for
    filter_wrapped_assessor: bool = True,
) -> None:
    sampled = _prepare(sample_operational(
        store_url=store_url, deployment=deployment, sampler=sampler, sampler_params=sampler_params,
        budget=budget, holdout_share=holdout_share, seed=seed, since=since, until=until, cycle=cycle_id,
        ray_address=ray_address, round_size=label_round_size, target_half_width=target_half_width, level=level,
        abstained_cap=abstained_cap,
    ), "sample-operational", store_secret)
    cycle = sampled.outputs["cycle"]

    labels = _prepare(collect_labels(
        store_url=store_url, cycle=cycle, labeler=labeling_backend, timeout_s=labeling_timeout_s,
        poll_s=labeling_poll_s, min_answered_share=min_answered_share, deployment=deployment,
        simulated_scenario=simulated_scenario, label_studio_url=label_studio_url,
        show_model_answer=show_model_answer, train_weighting=train_weighting,
    ), "collect-labels", store_secret)
    kubernetes.use_secret_as_env(labels, secret_name=LABEL_STUDIO_SECRET, secret_key_to_env=LABEL_STUDIO_KEYS,
                                 optional=True)

    estimate = _prepare(estimate_accuracy(
        store_url=store_url, cycle=cycle, level=level, threshold=threshold, max_drop=max_drop,
        reference_accuracy=reference_accuracy, model_name=model_name, champion_version=champion_version,
    ), "estimate-accuracy", store_secret).after(labels)

    with dsl.If(estimate.outputs["Output"] == True, name="drop-confirmed"):  # noqa: E712
        # Always (cheap with remedy retrain): evaluate reads its record to judge the challenger
        # behind the filter.
        fitted = _prepare(fit_filter(
            store_url=store_url, cycle=cycle, model_name=model_name, champion_version=champion_version,
            generic_version=filter_generic_version, remedy=remedy, pool_limit=filter_pool_limit,
            epochs=filter_epochs, base_limit=filter_base_limit, min_improvement=0.0,
            max_clean_loss=filter_max_clean_loss, seed=seed, promote_by=promote_by,
            wrapped_assessor=filter_wrapped_assessor,
        ), "fit-filter", store_secret)
        with dsl.If(remedy != "filter", name="retrain-remedy"):
            trained = _prepare(train(
                store_url=store_url, cycle=cycle, model_name=model_name, champion_version=champion_version,
                train_backend=train_backend, ray_address=ray_address, ray_workers=ray_workers,
                cpus_per_worker=cpus_per_worker, gpus_per_worker=gpus_per_worker,
                memory_per_worker=memory_per_worker, epochs=epochs, learning_rate=learning_rate,
                operational_oversample=operational_oversample, base_limit=train_base_limit,
                reference_shift_per_condition=reference_shift_per_condition, seed=seed,
                namespace=namespace, node_selector=train_node_selector, tolerations=train_tolerations,
                timeout_s=train_timeout_s, pod_cpu_request=train_cpu_request,
                pod_memory_request=train_memory_request, pod_gpus=train_gpus, batch_size=train_batch_size,
                precision=train_precision, ray_cluster=ray_cluster,
            ), "train", store_secret)
            trained.set_cpu_request(train_cpu_request).set_memory_request(train_memory_request)
            trained.set_accelerator_type(GPU_RESOURCE).set_accelerator_limit(train_gpus)
            kubernetes.add_node_selector_json(trained, train_node_selector)
            kubernetes.add_toleration_json(trained, train_tolerations)

            judged = _prepare(evaluate(
                store_url=store_url, cycle=cycle, model_name=model_name, champion_version=champion_version,
                challenger_version=trained.outputs["challenger_version"], level=level,
                clean_tolerance=clean_tolerance, clean_limit=clean_limit,
            ), "evaluate", store_secret).after(fitted)

            with dsl.If(judged.outputs["Output"] == True, name="challenger-better"):  # noqa: E712
                with dsl.If(promote_by == "pipeline", name="pipeline-promotes"):
                    _prepare(deploy(
                        store_url=store_url, cycle=cycle, model_name=model_name,
                        challenger_version=trained.outputs["challenger_version"], target=deploy_target,
                        deployment=deployment, namespace=namespace, predictor=predictor,
                        canary_share=canary_share, canary_seconds=canary_seconds, reload_urls=reload_urls,
                    ), "deploy", store_secret)
