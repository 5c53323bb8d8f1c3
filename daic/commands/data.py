"""``daic data``: look at the datasets, the corruptions and the operational scenarios.

Also reachable as ``python -m daic.data``. Library imports happen inside the commands so that
``daic --help`` stays fast.
"""
from __future__ import annotations

import click

from daic.commands.values import SEED, TEXT, SafePath, count

# Kept in sync with daic.data.mnist / daic.data.scenarios by tests/test_data_*.py; listed here so
# building the CLI does not import numpy and scipy.
_DATASETS = ("mnist", "fashion-mnist")
_SPLITS = ("train", "val", "test")


@click.group("data")
def command() -> None:
    """Inspect datasets, corruptions and operational scenarios."""


def _load(split: str, dataset: str):
    from daic.data.mnist import CorruptDatasetFile, DatasetNotAvailable, load_split

    try:
        return load_split(split, dataset)
    except (DatasetNotAvailable, CorruptDatasetFile) as exc:
        raise click.ClickException(str(exc)) from exc


@command.command("show")
@click.option("--out", type=SafePath(dir_okay=False), default=".daic/corruptions.png",
              show_default=True, help="PNG grid: rows = corruptions, columns = clean + severity 1..5")
@click.option("--severity", type=click.IntRange(1, 5), default=3, show_default=True,
              help="severity of the ASCII previews")
@click.option("-n", "--n-images", type=click.IntRange(1, 8), default=3, show_default=True,
              help="example images per corruption")
@click.option("--corruption", "names", multiple=True, metavar="NAME", type=TEXT,
              help="only these corruptions (repeatable; default all)")
@click.option("--dataset", type=click.Choice(_DATASETS), default="mnist", show_default=True)
@click.option("--split", type=click.Choice(_SPLITS), default="test", show_default=True)
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--ascii/--no-ascii", "show_ascii", default=True, show_default=True)
@click.option("--png/--no-png", "write_png", default=True, show_default=True)
def show(out: str, severity: int, n_images: int, names: tuple[str, ...], dataset: str, split: str,
         seed: int, show_ascii: bool, write_png: bool) -> None:
    """Show every corruption on a few images: ASCII art here, a PNG grid in --out."""
    from daic.data.corruptions import CORRUPTIONS, corrupt
    from daic.data.preview import ascii_row, save_corruption_png

    unknown = [n for n in names if n not in CORRUPTIONS]
    if unknown:
        raise click.BadParameter(
            f"unknown corruption(s) {', '.join(unknown)}; valid: {', '.join(CORRUPTIONS)}",
            param_hint="--corruption",
        )
    chosen = tuple(names) or CORRUPTIONS
    images = _load(split, dataset).images[:n_images]
    if show_ascii:
        click.echo(f"clean ({dataset} {split}, first {len(images)})")
        click.echo("\n".join(ascii_row(images)))
        for name in chosen:
            click.echo(f"\n{name} (severity {severity})")
            click.echo("\n".join(ascii_row(corrupt(images, name, severity, seed))))
    if write_png:
        path = save_corruption_png(images, out, names=chosen, seed=seed)
        click.echo(f"wrote {path}", err=True)


@command.command("scenarios")
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--batch-size", type=count(1, 100_000), default=None,
              help="override every scenario's batch size")
@click.option("--n-steps", type=count(1, 100_000), default=None,
              help="override every scenario's number of steps")
def scenarios(seed: int, batch_size: int | None, n_steps: int | None) -> None:
    """Table of the named operational scenarios and their share of corrupted inputs over time."""
    from rich.console import Console
    from rich.table import Table

    from daic.data.scenarios import SCENARIOS, build_scenario

    overrides = {}
    if batch_size is not None:
        overrides["batch_size"] = batch_size
    if n_steps is not None:
        overrides["n_steps"] = n_steps
    data = _load("test", "mnist")
    table = Table(title="operational scenarios (share of corrupted inputs per step: · none, █ all)")
    table.add_column("name", no_wrap=True)
    table.add_column("steps x batch", no_wrap=True, justify="right")
    table.add_column("from", justify="right")
    table.add_column("what drifts")
    table.add_column("mean share", justify="right")
    table.add_column("share over time", no_wrap=True)
    for name in SCENARIOS:
        try:
            row = build_scenario(name, seed=seed, data=data, **overrides).summary()
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from exc
        table.add_row(
            row["name"], f"{row['steps']} x {row['batch']}",
            "-" if row["drift_start"] is None else str(row["drift_start"]),
            row["drift"], f"{row['mean_share']:.2f}", row["share_over_time"],
        )
    console = Console()
    console.width = max(console.width, 120)  # piped output defaults to 80 columns
    console.print(table)
    for name, description in SCENARIOS.items():
        console.print(f"[bold]{name}[/bold]: {description}", highlight=False)
