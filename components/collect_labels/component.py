"""The KFP component: a thin wrapper; the work is in :mod:`.logic` (testable without kfp)."""
from typing import NamedTuple

from kfp import dsl

from daic.components.images import image_for


@dsl.component(base_image=image_for("collect-labels"), packages_to_install=[],
               install_kfp_package=False)
def collect_labels(
    store_url: str,
    cycle: str,
    labeler: str,
    timeout_s: int,
    poll_s: float,
    min_answered_share: float,
    deployment: str,
    simulated_scenario: str,
    label_studio_url: str,
    show_model_answer: bool = False,
    train_weighting: str = "uniform",
) -> NamedTuple("Outputs", [("n_labeled", int), ("n_train", int), ("n_holdout", int)]):
    """Hand the sample to a labeling backend (web, label-studio, feedback, simulated) and wait; a
    sample drawn in rounds is labeled round by round here. ``train_weighting``: how the trainer
    weighs each labeled input (uniform, inclusion, mispredicted)."""
    from collections import namedtuple

    from daic.components.collect_labels.logic import CollectConfig, run

    config = CollectConfig(backend=labeler, timeout_s=timeout_s, poll_s=poll_s,
                           min_answered_share=min_answered_share, deployment=deployment,
                           simulated_scenario=simulated_scenario, label_studio_url=label_studio_url,
                           show_model_answer=show_model_answer, train_weighting=train_weighting)
    result = run(store_url, cycle, config)
    outputs = namedtuple("Outputs", ["n_labeled", "n_train", "n_holdout"])
    return outputs(result.n_labeled, result.n_train, result.n_holdout)
