"""The KFP component: a thin wrapper; the work is in :mod:`.logic` (testable without kfp)."""
from typing import NamedTuple

from kfp import dsl

from daic.components.images import image_for


@dsl.component(base_image=image_for("deploy"), packages_to_install=[], install_kfp_package=False)
def deploy(
    store_url: str,
    cycle: str,
    model_name: str,
    challenger_version: str,
    target: str,
    deployment: str,
    namespace: str,
    predictor: str,
    canary_share: int,
    canary_seconds: int,
    reload_urls: str,
) -> NamedTuple("Outputs", [("champion_version", str)]):
    """Promote the challenger: SeldonDeployment canary then full (cluster), or the local switch."""
    from collections import namedtuple

    from daic.components.deploy.logic import DeployConfig, run

    config = DeployConfig(target=target, model_name=model_name, deployment=deployment, namespace=namespace,
                          predictor=predictor, canary_share=canary_share, canary_seconds=canary_seconds,
                          reload_urls=reload_urls)
    result = run(store_url, cycle, challenger_version, config)
    return namedtuple("Outputs", ["champion_version"])(result.champion_version)
