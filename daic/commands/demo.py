"""``daic demo``: the whole cycle on one machine (what ``make demo`` runs)."""
from __future__ import annotations

import click

from daic.commands.values import SEED, STORE_URL, TEXT, count, invalid_fields


@click.command("demo")
@click.option("--scenario", default="mixture", show_default=True, type=TEXT,
              help="drift scenario: mixture, sudden, gradual or recurring")
@click.option("--corruption", default="translate", show_default=True, type=TEXT, help="for sudden/gradual/recurring")
@click.option("--severity", default=3, show_default=True, type=click.IntRange(1, 5))
@click.option("--labeler", type=click.Choice(["simulated", "web"]), default="simulated", show_default=True,
              help="simulated: ground truth from the scenario; web: you label in the browser")
@click.option("--quick", is_flag=True, help="fewer epochs and labels; the cycle still runs end to end")
@click.option("--budget", type=count(1, 100_000), default=None, help="labels per cycle (default 200, quick 120)")
@click.option("--epochs", type=count(1, 1000), default=None, help="epochs of the first model (default 3, quick 1)")
@click.option("--retrain-epochs", type=count(1, 1000), default=None, help="epochs of the retraining (default 2, quick 1)")
@click.option("--store", "store_url", default=None, metavar="URL", type=STORE_URL, help="default: $DAIC_STORE or ./.daic/store")
@click.option("--seed", default=7, show_default=True, type=SEED)
def command(scenario: str, corruption: str, severity: int, labeler: str, quick: bool, budget: int | None,
            epochs: int | None, retrain_epochs: int | None, store_url: str | None, seed: int) -> None:
    """Train, serve, drift, detect, label, retrain, promote — then write report.html."""
    from pydantic import ValidationError

    from daic.demo.config import DemoConfig
    from daic.demo.driver import run_demo

    fields = dict(scenario=scenario, corruption=corruption, severity=severity, labeler=labeler, quick=quick,
                  store_url=store_url, seed=seed)
    if quick:
        fields.update(DemoConfig.quick_defaults())
    for name, value in (("budget", budget), ("epochs", epochs), ("retrain_epochs", retrain_epochs)):
        if value is not None:
            fields[name] = value
    try:
        cfg = DemoConfig(**fields)
    except ValidationError as exc:
        raise invalid_fields(exc) from None
    result = run_demo(cfg, echo=click.echo)
    click.echo("")
    click.echo(f"report: {result.report.resolve()}")
    for line in result.summary.lines[:5]:
        click.echo(f"  {line}")
    if not result.completed:
        raise click.ClickException("the cycle did not complete; the report shows how far it got")
