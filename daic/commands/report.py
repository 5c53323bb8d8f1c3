"""``daic report``: build report.html from what a run left in the object store."""
from __future__ import annotations

from pathlib import Path

import click

from daic.commands.values import RUN, STORE_URL, SafePath
from daic.storage import KeyNotFound, StorageError, open_store


@click.command("report")
@click.option("--store", "url", default=None, metavar="URL", type=STORE_URL,
              help="file:///path or s3://bucket/prefix (default: $DAIC_STORE or ./.daic/store)")
@click.option("--run", default=None, type=RUN, help="run id (default: the latest run in the store)")
@click.option("--out", "out_dir", default=".daic/report", show_default=True, type=SafePath(file_okay=False))
def command(url: str | None, run: str | None, out_dir: str) -> None:
    """Write report.html (+ PNGs) for a run."""
    from daic.report import build_report

    try:
        path = build_report(open_store(url), Path(out_dir), run)
    except (StorageError, KeyNotFound) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"report: {path.resolve()}")
