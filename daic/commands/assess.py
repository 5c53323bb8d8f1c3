"""``daic assess``: offline assessment — sample inputs for labeling, estimate accuracy with a CI.

``simulate`` runs the whole sequential assessment on a simulated pool whose truth is known (a
simulated labeler answers), and stores the record under ``cycles/<cycle>/assessment.json``;
``show`` prints a stored record. On real operational data the pipeline's sample / collect-labels /
estimate steps use the same designs (``daic pipeline``).
"""
from __future__ import annotations

import click

from daic.commands.values import CYCLE, SEED, STORE_URL, count, number

# Listed here so building the CLI does not import numpy; checked against daic.sampling by
# tests/test_sampling_cli.py.
DESIGN_NAMES = ("srs", "stratified", "failure-seeking", "active")
SCENARIO_NAMES = ("clean", "drifted", "severe", "label-shift", "uninformative")


@click.group("assess")
def command() -> None:
    """Sample operational inputs for labeling and estimate accuracy."""


def make_design(name: str):
    from daic.sampling.active import ActiveModelAssisted
    from daic.sampling.failure_seeking import FailureSeeking
    from daic.sampling.srs import SRS
    from daic.sampling.stratified import StratifiedNeyman

    return {"srs": SRS, "stratified": StratifiedNeyman, "failure-seeking": FailureSeeking,
            "active": ActiveModelAssisted}[name]()


@command.command("simulate")
@click.option("--scenario", type=click.Choice(SCENARIO_NAMES), default="drifted", show_default=True)
@click.option("--design", "design_name", type=click.Choice(DESIGN_NAMES), default="active", show_default=True)
@click.option("--pool-size", type=count(100, 10_000_000), default=20_000, show_default=True)
@click.option("--budget", type=count(1), default=2000, show_default=True,
              help="most draws (hence labels) to spend")
@click.option("--batch-size", type=count(1), default=50, show_default=True)
@click.option("--target", "target", type=number(0, 0.5, max_open=True), default=0.02, show_default=True,
              help="stop when the CI half-width is at most this (0: spend the budget)")
@click.option("--level", type=number(0, 1, min_open=True, max_open=True), default=0.95, show_default=True)
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--cycle", type=CYCLE, default=None, help="cycle id for the record (default: a fresh one)")
@click.option("--store", "store_url", type=STORE_URL, default=None, help="object store URL (default: $DAIC_STORE or .daic/store)")
@click.option("--save/--no-save", default=True, show_default=True, help="write cycles/<cycle>/assessment.json")
def simulate(scenario: str, design_name: str, pool_size: int, budget: int, batch_size: int, target: float,
             level: float, seed: int, cycle: str | None, store_url: str | None, save: bool) -> None:
    """Assess a simulated pool with known accuracy, batch by batch, and record the result."""
    import time

    import numpy as np

    from daic.sampling.record import build_record, check_cycle, save_assessment
    from daic.sampling.sequential import SequentialConfig, run_assessment
    from daic.sampling.simulate import simulate_pool

    cycle = cycle or time.strftime("assess-%Y%m%dT%H%M%SZ", time.gmtime())
    try:
        check_cycle(cycle)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--cycle") from exc
    sim = simulate_pool(scenario, n=pool_size, seed=seed)
    design = make_design(design_name)
    try:
        config = SequentialConfig(budget=budget, batch_size=batch_size, level=level,
                                  target_half_width=target or None)
        run = run_assessment(design, sim.pool, sim.labeler, config, np.random.default_rng(seed))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    rec = build_record(cycle, design, sim.pool, run, config)
    for t in rec.trace:
        click.echo(f"  {t['n_draws']:5d} draws  {t['n_labels']:5d} labels  accuracy {t['accuracy']:.4f} "
                   f"[{t['lower']:.4f}, {t['upper']:.4f}]")
    click.echo(f"{scenario}/{design_name}: accuracy {rec.accuracy:.4f} [{rec.lower:.4f}, {rec.upper:.4f}] "
               f"({rec.level:.0%}), true {sim.accuracy:.4f}, oracle claims {rec.oracle_accuracy:.4f}")
    click.echo(f"labels {rec.n_labels} (SRS would need {rec.srs_labels_needed} for the same half-width), "
               f"mispredictions found {rec.n_failures_found}, stopped on {rec.stop_reason}")
    if save:
        from daic.storage import open_store

        key = save_assessment(open_store(store_url), rec)
        click.echo(f"record: {key}")


@command.command("show")
@click.argument("cycle", type=CYCLE)
@click.option("--store", "store_url", type=STORE_URL, default=None, help="object store URL (default: $DAIC_STORE or .daic/store)")
def show(cycle: str, store_url: str | None) -> None:
    """Print the assessment record of CYCLE."""
    from daic.sampling.record import load_assessment
    from daic.storage import KeyNotFound, open_store

    try:
        rec = load_assessment(open_store(store_url), cycle)
    except (KeyNotFound, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"cycle {rec.cycle}: {rec.design['name']} ({rec.method})")
    click.echo(f"accuracy {rec.accuracy:.4f} [{rec.lower:.4f}, {rec.upper:.4f}] at {rec.level:.0%}; "
               f"oracle claimed {rec.oracle_accuracy:.4f}")
    click.echo(f"labels {rec.n_labels} of {rec.n_draws} draws (budget {rec.budget}); SRS would need "
               f"{rec.srs_labels_needed}; mispredictions found {rec.n_failures_found}; stop: {rec.stop_reason}")
