"""The KFP component: a thin wrapper; the work is in :mod:`.logic` (testable without kfp).

Its one output parameter is the drop decision (``Output``, a bool) that the pipeline's first
``dsl.If`` tests; the estimate and interval go to the ``metrics`` artifact and the store. One
output and not a NamedTuple because kfp.local (2.17) cannot resolve a condition on a NamedTuple
field: it reads ``pipelinechannel--estimate-accuracy-drop_confirmed`` as a pipeline parameter, finds
none, and skips the branch; ``...-Output`` it resolves.
"""
from kfp import dsl

from daic.components.images import image_for


@dsl.component(base_image=image_for("estimate-accuracy"), packages_to_install=[],
               install_kfp_package=False)
def estimate_accuracy(
    store_url: str,
    cycle: str,
    level: float,
    threshold: float,
    max_drop: float,
    reference_accuracy: float,
    model_name: str,
    champion_version: str,
    metrics: dsl.Output[dsl.Metrics],
) -> bool:
    """Offline accuracy estimate with its interval for the sample's design; is the drop confirmed?"""
    from daic.components.estimate_accuracy.decision import DropRule
    from daic.components.estimate_accuracy.logic import EstimateConfig, run

    config = EstimateConfig(level=level, rule=DropRule(threshold=threshold, max_drop=max_drop),
                            reference_accuracy=reference_accuracy, model_name=model_name,
                            champion_version=champion_version)
    result = run(store_url, cycle, config)
    est = result.estimate
    for name, value in (("offline_accuracy", est.accuracy), ("offline_lower", est.lower),
                        ("offline_upper", est.upper), ("labels", est.n_labels),
                        ("failures_found", est.n_failures_found), ("oracle_accuracy", result.oracle_accuracy),
                        ("threshold", result.decision.threshold),
                        ("srs_labels_needed", result.srs_labels_needed)):
        metrics.log_metric(name, float(value))
    return result.decision.confirmed
