"""``daic models``: list versions, show lineage and cards, promote, evaluate."""
from __future__ import annotations

import json
from typing import Optional

import click

from daic.commands.values import EXPECTED_VERSION, MODEL_NAME, SEED, STORE_URL, TEXT, VERSION, VERSION_REF, count

_store_option = click.option("--store", "store_url", default=None, metavar="URL", type=STORE_URL,
                             help="file:///path or s3://bucket/prefix (default: $DAIC_STORE or ./.daic/store)")


def _registry(store_url: Optional[str], name: str):
    from daic.models.registry import ModelRegistry
    from daic.storage import StorageError, open_store

    try:
        return ModelRegistry(open_store(store_url), name)
    except (StorageError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc


@click.group("models")
def command() -> None:
    """List model versions, their lineage and cards; promote; evaluate."""


@command.command("list")
@click.option("--name", default=None, type=MODEL_NAME, help="only this model (default: every model in the store)")
@_store_option
def list_cmd(name: Optional[str], store_url: Optional[str]) -> None:
    """One row per version: parent, data, accuracy, created, champion."""
    from rich.console import Console
    from rich.table import Table

    from daic.models.registry import list_models
    from daic.storage import StorageError, open_store

    try:
        store = open_store(store_url)
        names = [name] if name else list_models(store)
    except (StorageError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    table = Table()
    for col in ("model", "version", "parent", "labeled", "val acc", "test acc", "created (UTC)", "champion"):
        table.add_column(col)
    rows = 0
    for model_name in names:
        registry = _registry(store_url, model_name)
        pointer = registry.champion_pointer()
        for card in registry.cards():
            m = card.metrics
            table.add_row(model_name, card.version, card.parent or "-", str(card.data.operational_count),
                          f"{100 * m['val_accuracy']:.2f}%" if "val_accuracy" in m else "-",
                          f"{100 * m['test_accuracy']:.2f}%" if "test_accuracy" in m else "-",
                          card.created.strftime("%Y-%m-%d %H:%M:%S"),
                          "*" if pointer and pointer.version == card.version else "")
            rows += 1
    if rows == 0:
        click.echo(f"no model versions in {store.url}", err=True)
        return
    Console().print(table)


@command.command("lineage")
@click.argument("name", type=MODEL_NAME)
@_store_option
def lineage(name: str, store_url: Optional[str]) -> None:
    """The lineage tree of model NAME (parents above children)."""
    registry = _registry(store_url, name)
    lines = registry.lineage_lines()
    if not lines:
        raise click.ClickException(f"model {name!r} has no versions in {registry.store.url}")
    for line in lines:
        click.echo(line)


@command.command("show")
@click.argument("name", type=MODEL_NAME)
@click.argument("version", default="champion", type=VERSION_REF)
@_store_option
def show(name: str, version: str, store_url: Optional[str]) -> None:
    """The model card of VERSION (champion, latest or an id) as JSON."""
    from daic.storage import KeyNotFound

    registry = _registry(store_url, name)
    try:
        card = registry.card(registry.resolve(version))
    except (KeyNotFound, ValueError) as exc:
        raise click.BadParameter(str(exc), param_hint="VERSION") from exc
    click.echo(json.dumps(card.model_dump(mode="json"), indent=2))


@command.command("promote")
@click.argument("name", type=MODEL_NAME)
@click.argument("version", type=VERSION)
@click.option("--expected", default=None, metavar="VERSION", type=EXPECTED_VERSION,
              help="refuse unless the current champion is this one ('none': there is no champion)")
@_store_option
def promote(name: str, version: str, expected: Optional[str], store_url: Optional[str]) -> None:
    """Make VERSION the champion of NAME (compare-and-set with --expected)."""
    from daic.models.registry import ChampionConflict
    from daic.storage import KeyNotFound

    registry = _registry(store_url, name)
    kwargs = {} if expected is None else {"expected_current": None if expected == "none" else expected}
    try:
        pointer = registry.promote(version, **kwargs)
    except ChampionConflict as exc:
        raise click.ClickException(str(exc)) from exc
    except (KeyNotFound, ValueError) as exc:
        raise click.BadParameter(str(exc), param_hint="VERSION") from exc
    click.echo(f"{name}: champion {pointer.previous or '-'} -> {pointer.version} (generation {pointer.generation})")


@command.command("evaluate")
@click.argument("name", type=MODEL_NAME)
@click.option("--version", "versions", multiple=True, default=("champion",), show_default=True, type=VERSION_REF,
              help="repeat to compare versions")
@click.option("--split", type=click.Choice(["train", "val", "test"]), default="test", show_default=True)
@click.option("--corruption", default="identity", show_default=True, type=TEXT, help="a daic.data corruption name")
@click.option("--severity", type=click.IntRange(1, 5), default=3, show_default=True)
@click.option("--skip", type=count(0), default=0, show_default=True,
              help="leave out the first N images (e.g. those drawn for labeling)")
@click.option("--limit", type=count(1), default=None, help="evaluate at most N images")
@click.option("--seed", type=SEED, default=0, show_default=True, help="corruption noise seed")
@_store_option
def evaluate(name: str, versions: tuple[str, ...], split: str, corruption: str, severity: int, skip: int,
             limit: Optional[int], seed: int, store_url: Optional[str]) -> None:
    """Accuracy of versions on a (corrupted) split."""
    from daic.data.corruptions import corrupt
    from daic.data.mnist import load_split
    from daic.models.inference import accuracy
    from daic.storage import KeyNotFound

    registry = _registry(store_url, name)
    data = load_split(split)
    end = len(data) if limit is None else min(len(data), skip + limit)
    if skip >= end:
        raise click.BadParameter(f"--skip {skip} leaves no images of the {len(data)} in {split}", param_hint="--skip")
    try:
        images = corrupt(data.images[skip:end], corruption, severity, seed=seed)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--corruption") from exc
    labels = data.labels[skip:end]
    for ref in versions:
        try:
            version = registry.resolve(ref)
        except (KeyNotFound, ValueError) as exc:
            raise click.BadParameter(str(exc), param_hint="--version") from exc
        model, shadow = registry.load_networks(version)
        click.echo(f"{name} {version}: accuracy {100 * accuracy(model, images, labels):.2f}%  "
                   f"shadow {100 * accuracy(shadow, images, labels):.2f}%  "
                   f"({split}[{skip}:{end}], {corruption}" + ("" if corruption == "identity" else f"/{severity}") + ")")
