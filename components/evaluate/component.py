"""The KFP component: a thin wrapper; the work is in :mod:`.logic` (testable without kfp).

Its one output parameter is the promotion decision (``Output``, a bool) that the pipeline's
``challenger-better`` condition tests; the accuracies go to the ``metrics`` artifact and the store
(one output, not a NamedTuple, for kfp.local's sake: see estimate_accuracy/component.py).
"""
from kfp import dsl

from daic.components.images import image_for


@dsl.component(base_image=image_for("evaluate"), packages_to_install=[], install_kfp_package=False)
def evaluate(
    store_url: str,
    cycle: str,
    model_name: str,
    champion_version: str,
    challenger_version: str,
    level: float,
    clean_tolerance: float,
    clean_limit: int,
    metrics: dsl.Output[dsl.Metrics],
) -> bool:
    """Challenger vs champion on held-out operational inputs and on clean test data; promote?"""
    from daic.components.evaluate.logic import EvaluateConfig, run

    config = EvaluateConfig(model_name=model_name, champion_version=champion_version, level=level,
                            clean_tolerance=clean_tolerance, clean_limit=clean_limit)
    result = run(store_url, cycle, challenger_version, config)
    for name, value in result.metrics().items():
        metrics.log_metric(name, float(value))
    return result.decision.promote
