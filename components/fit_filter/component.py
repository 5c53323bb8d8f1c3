"""The KFP component: a thin wrapper; the work is in :mod:`.logic` (testable without kfp).

Its one output parameter is the filter decision (``Output``: ``deploy``, ``keep``, ``remove`` or
``none``); the figures go to the ``metrics`` artifact and the store (one output, not a NamedTuple,
for kfp.local's sake: see estimate_accuracy/component.py).
"""
from kfp import dsl

from daic.components.images import image_for


@dsl.component(base_image=image_for("fit-filter"), packages_to_install=[], install_kfp_package=False)
def fit_filter(
    store_url: str,
    cycle: str,
    model_name: str,
    champion_version: str,
    generic_version: str,
    remedy: str,
    pool_limit: int,
    epochs: int,
    base_limit: int,
    min_improvement: float,
    max_clean_loss: float,
    seed: int,
    promote_by: str,
    metrics: dsl.Output[dsl.Metrics],
    wrapped_assessor: bool = True,
) -> str:
    """Adapt the input filter to the cycle's unlabeled pool; champion vs champion+filter on the labeled sample."""
    from daic.components.fit_filter.logic import FitFilterConfig, run

    config = FitFilterConfig(model_name=model_name, champion_version=champion_version,
                             generic_version=generic_version, remedy=remedy, pool_limit=pool_limit, epochs=epochs,
                             base_limit=base_limit, min_improvement=min_improvement, max_clean_loss=max_clean_loss,
                             seed=seed, serve=promote_by == "pipeline", wrapped_assessor=wrapped_assessor)
    record = run(store_url, cycle, config)
    for name in ("champion_accuracy", "filter_accuracy", "champion_holdout_accuracy", "filter_holdout_accuracy",
                 "pool_count", "seconds", "wrapped_assessor_s"):
        if isinstance(record.get(name), (int, float)):
            metrics.log_metric(name, float(record[name]))
    return str(record["decision"])
