"""``daic label``: serve the labeling page, show progress, export answers as a training batch."""
from __future__ import annotations

import click

from daic.storage import KeyNotFound, StorageError, open_store

_url_option = click.option("--store", "url", default=None, metavar="URL",
                           help="file:///path or s3://bucket/prefix (default: $DAIC_STORE or ./.daic/store)")


@click.group("label")
def command() -> None:
    """Human labeling of a cycle's sampled inputs."""


@command.command("serve")
@_url_option
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8090, show_default=True, type=click.IntRange(1, 65535))
def serve(url: str | None, host: str, port: int) -> None:
    """Serve the labeling page (open http://HOST:PORT/)."""
    from aiohttp import web

    from daic.labeling.app import make_app

    try:
        store = open_store(url)
    except StorageError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"labeling page on http://{host}:{port}/ (answers go to {store.url})")
    web.run_app(make_app(store), host=host, port=port, print=None)


@command.command("progress")
@click.argument("cycle")
@_url_option
def progress(cycle: str, url: str | None) -> None:
    """How many of CYCLE's sampled inputs are labeled."""
    from daic.labeling import LabelBook

    try:
        answered, total = LabelBook(open_store(url), cycle).progress()
    except (StorageError, KeyNotFound) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{cycle}: {answered} of {total} labeled")


@command.command("export")
@click.argument("cycle")
@_url_option
def export(cycle: str, url: str | None) -> None:
    """Write CYCLE's answers as a training batch under labels/CYCLE/."""
    from daic.labeling import LabelBook

    try:
        key = LabelBook(open_store(url), cycle).export_batch()
    except (StorageError, KeyNotFound, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(key)
