"""The KFP component: a thin wrapper; the work is in :mod:`.logic` (testable without kfp)."""
from typing import NamedTuple

from kfp import dsl

from daic.components.images import image_for


@dsl.component(base_image=image_for("sample-operational"), packages_to_install=[],
               install_kfp_package=False)
def sample_operational(
    store_url: str,
    deployment: str,
    sampler: str,
    sampler_params: dict,
    budget: int,
    holdout_share: float,
    seed: int,
    since: str,
    until: str,
    cycle: str,
    sample: dsl.Output[dsl.Dataset],
    ray_address: str = "",
    round_size: int = 0,
    target_half_width: float = 0.0,
    level: float = 0.95,
    abstained_cap: int = 100,
) -> NamedTuple("Outputs", [("cycle", str), ("n_labels", int), ("pool_size", int)]):
    """Draw operational inputs to label (ids + the design's probabilities) for a new cycle.

    ``ray_address`` (the cluster training uses): read the window on Ray Data there; empty: here.
    ``round_size`` > 0: draw only the first round; collect-labels draws the rest, stopping at
    ``target_half_width`` (> 0) at ``level`` or the budget (docs/pipeline.md, "Rounds").
    ``abstained_cap``: at most this many inputs the model server abstained on are queued for
    labeling beside the sample (with the first round in rounds mode), outside the estimate; 0: none."""
    from collections import namedtuple

    from daic.components.sample_operational.logic import SampleConfig, run

    config = SampleConfig(deployment=deployment, sampler=sampler, sampler_params=sampler_params,
                          budget=budget, holdout_share=holdout_share, seed=seed, since=since,
                          until=until, cycle=cycle, ray_address=ray_address, round_size=round_size,
                          target_half_width=target_half_width, level=level, abstained_cap=abstained_cap)
    result = run(store_url, config, dataset_path=sample.path)
    sample.metadata.update({"cycle": result.cycle, "pool_size": result.pool_size,
                            "n_draws": result.n_draws, "n_labels": result.n_labels,
                            "n_holdout": result.n_holdout, "sampler": sampler})
    outputs = namedtuple("Outputs", ["cycle", "n_labels", "pool_size"])
    return outputs(result.cycle, result.n_labels, result.pool_size)
